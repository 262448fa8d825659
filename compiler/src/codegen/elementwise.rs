//! Elementwise kernels with numpy broadcasting. A kernel evaluates an
//! expression tree over its inputs, so fused chains (from the optimizer) and
//! single ops share one emitter.

use super::kb::{InsExt, Kb, LANES, VF};
use super::math;
use super::parallel;
use crate::ir::{BinaryOp, UnaryOp};
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// An elementwise expression over the kernel's inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Input(usize),
    Const(f32),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
}

impl Expr {
    pub fn unary(op: UnaryOp, a: Expr) -> Expr {
        Expr::Unary(op, Box::new(a))
    }
    pub fn binary(op: BinaryOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }

    /// Emits the expression given the loaded input values (all of type `ty`).
    pub fn emit(&self, k: &mut Kb, ins: &[Value], ty: Type) -> Value {
        match self {
            Expr::Input(i) => ins[*i],
            Expr::Const(c) => k.cst(ty, *c),
            Expr::Unary(op, a) => {
                let a = a.emit(k, ins, ty);
                math::unary(k, *op, a)
            }
            Expr::Binary(op, a, b) => {
                // Cheap special cases of pow with a constant exponent.
                if let (BinaryOp::Pow, Expr::Const(e)) = (op, b.as_ref()) {
                    let x = a.emit(k, ins, ty);
                    match *e {
                        1.0 => return x,
                        2.0 => return k.mul(x, x),
                        3.0 => {
                            let x2 = k.mul(x, x);
                            return k.mul(x2, x);
                        }
                        0.5 => return k.b.ins().sqrt(x),
                        -1.0 => {
                            let one = k.cst(ty, 1.0);
                            return k.div(one, x);
                        }
                        _ => {
                            let ev = k.cst(ty, *e);
                            return math::pow(k, x, ev);
                        }
                    }
                }
                let a = a.emit(k, ins, ty);
                let b = b.emit(k, ins, ty);
                math::binary(k, *op, a, b)
            }
        }
    }
}

/// Broadcast layout of one elementwise kernel after merging dims: `dims`
/// of the output, and per input the element strides (0 where broadcast).
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub dims: Vec<usize>,
    pub strides: Vec<Vec<usize>>,
}

impl Layout {
    /// Computes broadcast strides of each input against `out` and merges
    /// adjacent dims that are contiguous for every operand.
    pub fn new(out: &[usize], inputs: &[Vec<usize>]) -> Layout {
        let r = out.len();
        let mut strides: Vec<Vec<usize>> = inputs
            .iter()
            .map(|s| {
                let mut st = vec![0; r];
                let mut acc = 1;
                for d in (0..s.len()).rev() {
                    let od = d + r - s.len();
                    st[od] = if s[d] == 1 && out[od] != 1 { 0 } else { acc };
                    acc *= s[d];
                }
                st
            })
            .collect();
        // Size-1 dims carry nothing; then merge an outer dim into the next
        // one whenever every operand is contiguous across the pair (0 == 0·n
        // covers operands broadcast along both).
        let keep: Vec<usize> = (0..r).filter(|&d| out[d] != 1).collect();
        let mut dims: Vec<usize> = keep.iter().map(|&d| out[d]).collect();
        strides = strides
            .iter()
            .map(|st| keep.iter().map(|&d| st[d]).collect())
            .collect();
        let mut d = 0;
        while d + 1 < dims.len() {
            if strides.iter().all(|st| st[d] == st[d + 1] * dims[d + 1]) {
                dims[d + 1] *= dims[d];
                dims.remove(d);
                for st in strides.iter_mut() {
                    st.remove(d);
                }
            } else {
                d += 1;
            }
        }
        if dims.is_empty() {
            dims.push(1);
            for st in strides.iter_mut() {
                st.push(0);
            }
        }
        Layout { dims, strides }
    }
}

/// Below this many elements a kernel runs on one thread.
const SPLIT_ELEMS: usize = 1 << 16;
/// Elements per task at least (a task is then ≥ ~5 µs of streaming).
const TASK_ELEMS: usize = 1 << 14;

/// Emits `out[i] = expr(in_0[i], …)` over the broadcast layout; large
/// kernels split over threads (contiguous chunks, or blocks of outer rows).
pub fn emit(k: &mut Kb, expr: &Expr, layout: &Layout, ins: &[Value], out: Value) {
    let n: usize = layout.dims.iter().product();
    let r = layout.dims.len();
    let mut caps: Vec<Value> = ins.to_vec();
    caps.push(out);
    if k.threads.is_some() && n >= SPLIT_ELEMS {
        if r == 1 {
            let tasks = parallel::tasks_for(n, n, SPLIT_ELEMS, TASK_ELEMS, parallel::MAX_TASKS);
            // Chunks of whole cache lines; the last task takes the rest.
            let chunk = n.div_ceil(tasks).div_ceil(16) * 16;
            let tasks = n.div_ceil(chunk);
            let tail = n - (tasks - 1) * chunk;
            if tasks > 1 {
                let one = |k: &mut Kb, p: &[Value], len: usize, at: Value| {
                    let (ins, out) = p.split_at(p.len() - 1);
                    let bases: Vec<Value> = ins
                        .iter()
                        .zip(&layout.strides)
                        .map(|(&b, st)| k.index(b, at, 4 * st[0] as i64))
                        .collect();
                    let o = k.index(out[0], at, 4);
                    let l = Layout {
                        dims: vec![len],
                        strides: layout.strides.clone(),
                    };
                    emit_inner(k, expr, &l, &bases, o);
                };
                parallel::parallel(
                    k,
                    tasks,
                    &caps,
                    &mut |k, p, t, _| {
                        parallel::last_or_rest(
                            k,
                            t,
                            tasks,
                            &mut |k, last| {
                                let at = if last {
                                    k.iconst(((tasks - 1) * chunk) as i64)
                                } else {
                                    k.b.ins().imul_imm_s(t, chunk as i64)
                                };
                                one(k, p, if last { tail } else { chunk }, at)
                            },
                            tail != chunk,
                        )
                    },
                    None,
                );
                return;
            }
        } else {
            // Items: the outermost dims whose product gives enough of them;
            // the dims inside stay static loops.
            let mut s = 1;
            while s < r - 1 && layout.dims[..s].iter().product::<usize>() < 4 * parallel::MAX_TASKS
            {
                s += 1;
            }
            let items: usize = layout.dims[..s].iter().product();
            let tasks = parallel::tasks_for(items, n, SPLIT_ELEMS, TASK_ELEMS, parallel::MAX_TASKS);
            if tasks > 1 {
                let inner: usize = layout.dims[s..].iter().product();
                parallel::parallel_items(k, items, tasks, &caps, &mut |k, p, i, _| {
                    let (ins, out) = p.split_at(p.len() - 1);
                    let mut bases: Vec<Value> = ins.to_vec();
                    let mut below = items;
                    for d in 0..s {
                        below /= layout.dims[d];
                        let q = if below == 1 {
                            i
                        } else {
                            k.b.ins().udiv_imm_u(i, below as i64)
                        };
                        let idx = if d == 0 {
                            q
                        } else {
                            k.b.ins_urem(q, layout.dims[d] as i64)
                        };
                        for (b, st) in bases.iter_mut().zip(&layout.strides) {
                            *b = k.index(*b, idx, 4 * st[d] as i64);
                        }
                    }
                    let o = k.index(out[0], i, 4 * inner as i64);
                    emit_level(k, expr, layout, s, &bases, o);
                });
                return;
            }
        }
    }
    let bases: Vec<Value> = ins.to_vec();
    emit_level(k, expr, layout, 0, &bases, out);
}

fn emit_level(k: &mut Kb, expr: &Expr, l: &Layout, d: usize, bases: &[Value], out: Value) {
    let r = l.dims.len();
    if d + 1 == r {
        return emit_inner(k, expr, l, bases, out);
    }
    let out_stride: usize = l.dims[d + 1..].iter().product();
    k.for_range(0, l.dims[d] as i64, 1, |k, i| {
        let nb: Vec<Value> = bases
            .iter()
            .zip(&l.strides)
            .map(|(&b, st)| {
                if st[d] == 0 {
                    b
                } else {
                    k.index(b, i, 4 * st[d] as i64)
                }
            })
            .collect();
        let o = k.index(out, i, 4 * out_stride as i64);
        emit_level(k, expr, l, d + 1, &nb, o);
    });
}

fn emit_inner(k: &mut Kb, expr: &Expr, l: &Layout, bases: &[Value], out: Value) {
    let r = l.dims.len();
    let n = l.dims[r - 1];
    // Broadcast (stride-0) inputs are loaded once, outside the loop.
    let mut hoisted: Vec<Option<(Value, Value)>> = Vec::new();
    for (&b, st) in bases.iter().zip(&l.strides) {
        if st[r - 1] == 0 {
            let s = k.load(F32, b, 0);
            let v = if n >= LANES { Some(k.splat(s)) } else { None };
            hoisted.push(Some((s, v.unwrap_or(s))));
        } else {
            hoisted.push(None);
        }
    }
    let strided = l.strides.iter().any(|st| st[r - 1] > 1);
    if strided {
        // Only reachable for degenerate layouts; scalar path with explicit strides.
        k.for_range(0, n as i64, 1, |k, i| {
            let vals: Vec<Value> = bases
                .iter()
                .zip(&l.strides)
                .zip(&hoisted)
                .map(|((&b, st), h)| match h {
                    Some((s, _)) => *s,
                    None => {
                        let p = k.index(b, i, 4 * st[r - 1] as i64);
                        k.load(F32, p, 0)
                    }
                })
                .collect();
            let y = expr.emit(k, &vals, F32);
            k.store_at(y, out, i);
        });
        return;
    }
    k.for_lanes(n, |k, i, ty| {
        let vals: Vec<Value> = bases
            .iter()
            .zip(&hoisted)
            .map(|(&b, h)| match h {
                Some((s, v)) => {
                    if ty == VF {
                        *v
                    } else {
                        *s
                    }
                }
                None => k.load_at(ty, b, i),
            })
            .collect();
        let y = expr.emit(k, &vals, ty);
        k.store_at(y, out, i);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_merges_contiguous_dims() {
        let l = Layout::new(&[2, 3, 4], &[vec![2, 3, 4], vec![2, 3, 4]]);
        assert_eq!(l.dims, vec![24]);
        assert_eq!(l.strides, vec![vec![1], vec![1]]);
    }

    #[test]
    fn layout_channel_broadcast() {
        // x[N,C,H,W] * s[C,1,1]
        let l = Layout::new(&[2, 3, 4, 5], &[vec![2, 3, 4, 5], vec![3, 1, 1]]);
        assert_eq!(l.dims, vec![2, 3, 20]);
        assert_eq!(l.strides, vec![vec![60, 20, 1], vec![0, 1, 0]]);
    }

    #[test]
    fn layout_row_broadcast() {
        // x[M,N] + b[N]
        let l = Layout::new(&[4, 8], &[vec![4, 8], vec![8]]);
        assert_eq!(l.dims, vec![4, 8]);
        assert_eq!(l.strides, vec![vec![8, 1], vec![0, 1]]);
    }
}
