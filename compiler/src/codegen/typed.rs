//! Elementwise kernels on int64 and bool data (masks, indices, shape math
//! that survives to run time): comparisons, logic, integer arithmetic,
//! `where` and casts. Scalar loops with broadcast strides — these tensors
//! are small next to the f32 activations the vector kernels handle.

use super::elementwise::Layout;
use super::kb::Kb;
use crate::ir::{BinaryOp, DType, Op, ReduceOp, UnaryOp};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, I64, I8};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

fn cl_ty(d: DType) -> Type {
    match d {
        DType::F32 => F32,
        DType::I64 => I64,
        DType::Bool => I8,
    }
}

/// Whether this op (on these dtypes) is one the typed kernel computes.
pub fn supports(op: &Op, ins: &[DType], out: DType) -> bool {
    match op {
        Op::Binary(b) => {
            let d = ins[0];
            match b {
                BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Max
                | BinaryOp::Min
                | BinaryOp::Mod => d == DType::I64,
                BinaryOp::Fmod => d == DType::I64 || d == DType::F32,
                BinaryOp::Pow => false,
                _ if b.is_comparison() => d != DType::Bool || matches!(b, BinaryOp::Equal),
                _ => b.is_logical(),
            }
        }
        Op::Where => true,
        Op::Cast { .. } => true,
        Op::Unary(UnaryOp::Not) => true,
        Op::Unary(UnaryOp::Neg | UnaryOp::Abs) => out == DType::I64,
        Op::Reduce { op, axes, .. } => {
            ins[0] == DType::I64
                && matches!(
                    op,
                    ReduceOp::Sum | ReduceOp::Max | ReduceOp::Min | ReduceOp::Prod
                )
                && (axes.is_empty() || axes[axes.len() - 1] - axes[0] + 1 == axes.len())
        }
        _ => false,
    }
}

/// Emits `out = op(ins…)` elementwise with broadcasting.
#[allow(clippy::too_many_arguments)]
pub fn emit(
    k: &mut Kb,
    op: &Op,
    in_shapes: &[Vec<usize>],
    in_types: &[DType],
    out_shape: &[usize],
    out_type: DType,
    ins: &[Value],
    out: Value,
) {
    if let Op::Reduce { op, axes, .. } = op {
        return reduce_i64(k, *op, &in_shapes[0], axes, ins[0], out);
    }
    let l = Layout::new(out_shape, in_shapes);
    level(k, op, &l, 0, in_types, out_type, ins, out);
}

#[allow(clippy::too_many_arguments)]
fn level(
    k: &mut Kb,
    op: &Op,
    l: &Layout,
    d: usize,
    it: &[DType],
    ot: DType,
    bases: &[Value],
    out: Value,
) {
    let inner: usize = l.dims[d + 1..].iter().product();
    let osz = ot.size() as i64;
    k.for_range(0, l.dims[d] as i64, 1, |k, i| {
        let nb: Vec<Value> = bases
            .iter()
            .zip(&l.strides)
            .zip(it)
            .map(|((&b, st), t)| {
                if st[d] == 0 {
                    b
                } else {
                    k.index(b, i, st[d] as i64 * t.size() as i64)
                }
            })
            .collect();
        let o = k.index(out, i, inner as i64 * osz);
        if d + 1 == l.dims.len() {
            let vals: Vec<Value> = nb
                .iter()
                .zip(it)
                .map(|(&p, t)| k.load(cl_ty(*t), p, 0))
                .collect();
            let y = apply(k, op, &vals, it, ot);
            k.store(y, o, 0);
        } else {
            level(k, op, l, d + 1, it, ot, &nb, o);
        }
    });
}

fn apply(k: &mut Kb, op: &Op, x: &[Value], it: &[DType], ot: DType) -> Value {
    match op {
        Op::Unary(UnaryOp::Not) => k.b.ins().bxor_imm_u(x[0], 1),
        Op::Unary(UnaryOp::Neg) => k.b.ins().ineg(x[0]),
        Op::Unary(UnaryOp::Abs) => k.b.ins().iabs(x[0]),
        Op::Where => k.b.ins().select(x[0], x[1], x[2]),
        Op::Cast { to } => cast(k, x[0], it[0], *to),
        Op::Binary(b) => {
            let (a, c) = (x[0], x[1]);
            let d = it[0];
            if b.is_comparison() {
                let r = if d == DType::F32 {
                    let cc = match b {
                        BinaryOp::Equal => FloatCC::Equal,
                        BinaryOp::Less => FloatCC::LessThan,
                        BinaryOp::Greater => FloatCC::GreaterThan,
                        BinaryOp::LessOrEqual => FloatCC::LessThanOrEqual,
                        _ => FloatCC::GreaterThanOrEqual,
                    };
                    k.b.ins().fcmp(cc, a, c)
                } else {
                    let cc = match b {
                        BinaryOp::Equal => IntCC::Equal,
                        BinaryOp::Less => IntCC::SignedLessThan,
                        BinaryOp::Greater => IntCC::SignedGreaterThan,
                        BinaryOp::LessOrEqual => IntCC::SignedLessThanOrEqual,
                        _ => IntCC::SignedGreaterThanOrEqual,
                    };
                    k.b.ins().icmp(cc, a, c)
                };
                return r; // icmp/fcmp give an i8 0/1: ONNX's bool layout
            }
            match b {
                BinaryOp::And => k.b.ins().band(a, c),
                BinaryOp::Or => k.b.ins().bor(a, c),
                BinaryOp::Xor => k.b.ins().bxor(a, c),
                BinaryOp::Add => k.b.ins().iadd(a, c),
                BinaryOp::Sub => k.b.ins().isub(a, c),
                BinaryOp::Mul => k.b.ins().imul(a, c),
                BinaryOp::Max => k.b.ins().smax(a, c),
                BinaryOp::Min => k.b.ins().smin(a, c),
                BinaryOp::Div => int_div(k, a, c, false),
                BinaryOp::Mod => {
                    // Python-style: the result takes the divisor's sign.
                    let r = int_div(k, a, c, true);
                    let zero = k.b.ins().iconst(I64, 0);
                    let rnz = k.b.ins().icmp(IntCC::NotEqual, r, zero);
                    let rneg = k.b.ins().icmp(IntCC::SignedLessThan, r, zero);
                    let cneg = k.b.ins().icmp(IntCC::SignedLessThan, c, zero);
                    let differ = k.b.ins().bxor(rneg, cneg);
                    let fix = k.b.ins().band(rnz, differ);
                    let adj = k.b.ins().iadd(r, c);
                    k.b.ins().select(fix, adj, r)
                }
                BinaryOp::Fmod if d == DType::I64 => int_div(k, a, c, true),
                BinaryOp::Fmod => {
                    // a − trunc(a/b)·b (C fmod for the magnitudes models use)
                    let q = k.b.ins().fdiv(a, c);
                    let t = k.b.ins().trunc(q);
                    let p = k.b.ins().fmul(t, c);
                    k.b.ins().fsub(a, p)
                }
                _ => unreachable!("refused by supports()"),
            }
        }
        _ => unreachable!("refused by supports() for output {ot}"),
    }
}

/// Signed division or remainder that never traps: x/0 gives 0 (x%0 gives
/// x) and MIN/−1 wraps, where hardware would raise SIGFPE.
fn int_div(k: &mut Kb, a: Value, c: Value, rem: bool) -> Value {
    let zero = k.b.ins().iconst(I64, 0);
    let one = k.b.ins().iconst(I64, 1);
    let m1 = k.b.ins().iconst(I64, -1);
    let is0 = k.b.ins().icmp(IntCC::Equal, c, zero);
    let ism1 = k.b.ins().icmp(IntCC::Equal, c, m1);
    // Divide by 1 instead of 0 or −1 (handled below), so the hardware never traps.
    let bad = k.b.ins().bor(is0, ism1);
    let safe = k.b.ins().select(bad, one, c);
    let r = if rem {
        k.b.ins().srem(a, safe)
    } else {
        k.b.ins().sdiv(a, safe)
    };
    if rem {
        let r = k.b.ins().select(ism1, zero, r);
        k.b.ins().select(is0, a, r)
    } else {
        let neg = k.b.ins().ineg(a);
        let r = k.b.ins().select(ism1, neg, r);
        k.b.ins().select(is0, zero, r)
    }
}

fn cast(k: &mut Kb, x: Value, from: DType, to: DType) -> Value {
    match (from, to) {
        _ if from == to => x,
        (DType::F32, DType::I64) => k.b.ins().fcvt_to_sint_sat(I64, x),
        (DType::I64, DType::F32) => k.b.ins().fcvt_from_sint(F32, x),
        (DType::Bool, DType::I64) => k.b.ins().uextend(I64, x),
        (DType::Bool, DType::F32) => {
            let w = k.b.ins().uextend(I64, x);
            k.b.ins().fcvt_from_sint(F32, w)
        }
        (DType::F32, DType::Bool) => {
            let z = k.b.ins().f32const(0.0);
            k.b.ins().fcmp(FloatCC::NotEqual, x, z)
        }
        (DType::I64, DType::Bool) => k.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0),
        _ => unreachable!(),
    }
}

/// int64 Sum/Prod/Max/Min over the contiguous axes `axes` (sorted; empty
/// copies), viewed as [outer, r, inner]; wrapping arithmetic like the
/// evaluator.
fn reduce_i64(k: &mut Kb, op: ReduceOp, shape: &[usize], axes: &[usize], x: Value, y: Value) {
    let (lo, hi) = match axes {
        [] => (0, 0),
        [first, .., last] => (*first, *last + 1),
        [a] => (*a, *a + 1),
    };
    let outer: usize = shape[..lo].iter().product();
    let r: usize = shape[lo..hi].iter().product();
    let inner: usize = shape[hi..].iter().product();
    let init = match op {
        ReduceOp::Prod => 1,
        ReduceOp::Max => i64::MIN,
        ReduceOp::Min => i64::MAX,
        _ => 0,
    };
    k.for_range(0, outer as i64, 1, |k, o| {
        let xo = k.index(x, o, (8 * r * inner) as i64);
        let yo = k.index(y, o, (8 * inner) as i64);
        k.for_range(0, inner as i64, 1, |k, i| {
            let xi = k.index(xo, i, 8);
            let z = k.b.ins().iconst(I64, init);
            let acc = k.var(I64, z);
            k.for_range(0, r as i64, 1, |k, j| {
                let p = k.index(xi, j, (8 * inner) as i64);
                let v = k.load(I64, p, 0);
                let a = k.get(acc);
                let a = match op {
                    ReduceOp::Prod => k.b.ins().imul(a, v),
                    ReduceOp::Max => k.b.ins().smax(a, v),
                    ReduceOp::Min => k.b.ins().smin(a, v),
                    _ => k.b.ins().iadd(a, v),
                };
                k.set(acc, a);
            });
            let a = k.get(acc);
            let p = k.index(yo, i, 8);
            k.store(a, p, 0);
        });
    });
}
