//! Reductions over a contiguous block of axes, softmax, and the
//! normalizations. Every kernel views its tensor as [outer, r, inner]: with
//! inner = 1 a row is contiguous and is reduced with vector accumulators and
//! a final horizontal step; otherwise vectors run along `inner` and the
//! reduction walks `r` with stride `inner`.

use super::kb::{Kb, LANES, VF};
use super::math;
use super::parallel;
use crate::ir::ReduceOp;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Orc {
    pub outer: usize,
    pub r: usize,
    pub inner: usize,
}

impl Orc {
    /// View of `shape` reducing the contiguous axes `lo..hi`.
    pub fn new(shape: &[usize], lo: usize, hi: usize) -> Orc {
        Orc {
            outer: shape[..lo].iter().product(),
            r: shape[lo..hi].iter().product(),
            inner: shape[hi..].iter().product(),
        }
    }
}

type Step = fn(&mut Kb, Value, Value) -> Value;

/// Folds `count` lines: the accumulator starts at `init` and absorbs each
/// loaded element (of type `ty`) at `base + i·stride` through `step` after
/// applying `pre`.
#[allow(clippy::too_many_arguments)]
fn fold_strided(
    k: &mut Kb,
    base: Value,
    count: usize,
    stride: usize,
    ty: Type,
    init: f32,
    pre: &dyn Fn(&mut Kb, Value) -> Value,
    step: Step,
) -> Value {
    let z = k.cst(ty, init);
    let acc = k.var(ty, z);
    k.for_range(0, count as i64, 1, |k, i| {
        let p = k.index(base, i, 4 * stride as i64);
        let x = k.load(ty, p, 0);
        let x = pre(k, x);
        let a = k.get(acc);
        let a = step(k, a, x);
        k.set(acc, a);
    });
    k.get(acc)
}

/// Folds a contiguous row of `n` f32 to a scalar.
fn fold_row(
    k: &mut Kb,
    base: Value,
    n: usize,
    init: f32,
    pre: &dyn Fn(&mut Kb, Value) -> Value,
    step: Step,
) -> Value {
    let n4 = n / LANES * LANES;
    let mut acc = k.cst(F32, init);
    if n4 > 0 {
        let z = k.cst(VF, init);
        let va = k.var(VF, z);
        k.for_range(0, n4 as i64, LANES as i64, |k, i| {
            let x = k.load_at(VF, base, i);
            let x = pre(k, x);
            let a = k.get(va);
            let a = step(k, a, x);
            k.set(va, a);
        });
        let v = k.get(va);
        acc = k.hreduce(v, step);
    }
    if n > n4 {
        let tail = k.offset(base, 4 * n4 as i64);
        let t = fold_strided(k, tail, n - n4, 1, F32, init, pre, step);
        acc = step(k, acc, t);
    }
    acc
}

fn id(_: &mut Kb, x: Value) -> Value {
    x
}
fn sq(k: &mut Kb, x: Value) -> Value {
    k.mul(x, x)
}
fn abs(k: &mut Kb, x: Value) -> Value {
    k.b.ins().fabs(x)
}
fn add(k: &mut Kb, a: Value, b: Value) -> Value {
    k.add(a, b)
}
fn mul(k: &mut Kb, a: Value, b: Value) -> Value {
    k.mul(a, b)
}
fn max(k: &mut Kb, a: Value, b: Value) -> Value {
    k.max(a, b)
}
fn min(k: &mut Kb, a: Value, b: Value) -> Value {
    k.min(a, b)
}

/// Below this many input elements a kernel runs on one thread.
const SPLIT_ELEMS: usize = 1 << 16;
/// Input elements per task at least.
const TASK_ELEMS: usize = 1 << 14;

/// Tasks for a kernel over `v`, split by outer index (each task owns whole
/// reduction lines, so sums are never split).
fn outer_tasks(v: Orc) -> usize {
    let n = v.outer * v.r * v.inner;
    parallel::tasks_for(v.outer, n, SPLIT_ELEMS, TASK_ELEMS, parallel::MAX_TASKS)
}

/// Calls `f(k, line_base, out_index, ty, row, y)` for every reduction line:
/// with inner = 1 one line per outer index (ty = F32 marks a contiguous
/// row); otherwise one per inner lane chunk (ty = F32X4 or F32 tail). Outer
/// indices may run as parallel tasks: `f` must use `y` as given, and no
/// other value of the kernel.
fn for_lines(
    k: &mut Kb,
    v: Orc,
    x: Value,
    y: Value,
    mut f: impl FnMut(&mut Kb, Value, Value, Type, bool, Value),
) {
    let tasks = outer_tasks(v);
    parallel::parallel_items(k, v.outer, tasks, &[x, y], &mut |k, p, o, _| {
        let (x, y) = (p[0], p[1]);
        let xo = k.index(x, o, (4 * v.r * v.inner) as i64);
        if v.inner == 1 {
            f(k, xo, o, F32, true, y);
        } else {
            let oi = k.b.ins().imul_imm_s(o, v.inner as i64);
            k.for_lanes(v.inner, |k, j, ty| {
                let base = k.index(xo, j, 4);
                let out = k.b.ins().iadd(oi, j);
                f(k, base, out, ty, false, y);
            });
        }
    });
}

/// Reduces one line to a value of type `ty` (scalar for rows).
#[allow(clippy::too_many_arguments)]
fn reduce_line(
    k: &mut Kb,
    v: Orc,
    base: Value,
    ty: Type,
    row: bool,
    init: f32,
    pre: &dyn Fn(&mut Kb, Value) -> Value,
    step: Step,
) -> Value {
    if row {
        fold_row(k, base, v.r, init, pre, step)
    } else {
        fold_strided(k, base, v.r, v.inner, ty, init, pre, step)
    }
}

pub fn reduce(k: &mut Kb, op: ReduceOp, v: Orc, x: Value, y: Value) {
    for_lines(k, v, x, y, |k, base, out, ty, row, y| {
        let r = match op {
            ReduceOp::Sum | ReduceOp::Mean => reduce_line(k, v, base, ty, row, 0.0, &id, add),
            ReduceOp::Max => reduce_line(k, v, base, ty, row, f32::NEG_INFINITY, &id, max),
            ReduceOp::Min => reduce_line(k, v, base, ty, row, f32::INFINITY, &id, min),
            ReduceOp::Prod => reduce_line(k, v, base, ty, row, 1.0, &id, mul),
            ReduceOp::L1 => reduce_line(k, v, base, ty, row, 0.0, &abs, add),
            ReduceOp::L2 | ReduceOp::SumSquare => reduce_line(k, v, base, ty, row, 0.0, &sq, add),
            ReduceOp::LogSumExp => {
                let m = reduce_line(k, v, base, ty, row, f32::NEG_INFINITY, &id, max);
                let (mv, ms) = lanes_of(k, m, row);
                let pre = move |k: &mut Kb, x: Value| {
                    let mm = if k.ty(x) == F32 { ms } else { mv };
                    let d = k.sub(x, mm);
                    math::unary(k, crate::ir::UnaryOp::Exp, d)
                };
                let s = reduce_line(k, v, base, ty, row, 0.0, &pre, add);
                let l = math::unary(k, crate::ir::UnaryOp::Log, s);
                k.add(l, m)
            }
        };
        let r = match op {
            ReduceOp::Mean => {
                let c = k.cst(k.ty(r), 1.0 / v.r as f32);
                k.mul(r, c)
            }
            ReduceOp::L2 => k.b.ins().sqrt(r),
            _ => r,
        };
        k.store_at(r, y, out);
    });
}

/// For a row reduction result (scalar), also its splat; for a lane result, itself.
fn lanes_of(k: &mut Kb, s: Value, row: bool) -> (Value, Value) {
    if row {
        let v = k.splat(s);
        (v, s)
    } else {
        (s, s)
    }
}

/// Softmax or log-softmax along the middle axis of `v`.
pub fn softmax(k: &mut Kb, v: Orc, log: bool, x: Value, y: Value) {
    let tasks = outer_tasks(v);
    parallel::parallel_items(k, v.outer, tasks, &[x, y], &mut |k, p, o, _| {
        let (x, y) = (p[0], p[1]);
        let xo = k.index(x, o, (4 * v.r * v.inner) as i64);
        let yo = k.index(y, o, (4 * v.r * v.inner) as i64);
        // Rows of the last axis: the assembled (zmm/ymm) row kernel where
        // the target has one.
        let kern = super::x86::softmax::SoftmaxKernel::Rows { rows: 1, n: v.r };
        let asm = if v.inner == 1 && !log && v.r > 0 {
            k.asm().and_then(|be| be.softmax(&kern))
        } else {
            None
        };
        if let Some((fid, sig)) = asm {
            let fref = super::x86::backend::import_function(k.b.func, fid, sig);
            let z = k.iconst(0);
            k.b.ins().call(fref, &[xo, yo, z, z]);
        } else if v.inner == 1 {
            let m = fold_row(k, xo, v.r, f32::NEG_INFINITY, &id, max);
            let mv = k.splat(m);
            // y = exp(x − m), s = Σ y
            let zs = k.cst(F32, 0.0);
            let zv = k.cst(VF, 0.0);
            let sv = k.var(VF, zv);
            let ss = k.var(F32, zs);
            k.for_lanes(v.r, |k, i, ty| {
                let xv = k.load_at(ty, xo, i);
                let mm = if ty == VF { mv } else { m };
                let d = k.sub(xv, mm);
                let e = math::unary(k, crate::ir::UnaryOp::Exp, d);
                if !log {
                    k.store_at(e, yo, i);
                }
                let acc = if ty == VF { sv } else { ss };
                let a = k.get(acc);
                let a = k.add(a, e);
                k.set(acc, a);
            });
            let svv = k.get(sv);
            let s4 = k.hreduce(svv, add);
            let sst = k.get(ss);
            let s = k.add(s4, sst);
            finish(k, v.r, 1, log, xo, yo, m, s, F32, true);
        } else {
            k.for_lanes(v.inner, |k, j, ty| {
                let xb = k.index(xo, j, 4);
                let yb = k.index(yo, j, 4);
                let m = fold_strided(k, xb, v.r, v.inner, ty, f32::NEG_INFINITY, &id, max);
                let z = k.cst(ty, 0.0);
                let acc = k.var(ty, z);
                k.for_range(0, v.r as i64, 1, |k, i| {
                    let px = k.index(xb, i, (4 * v.inner) as i64);
                    let xv = k.load(ty, px, 0);
                    let d = k.sub(xv, m);
                    let e = math::unary(k, crate::ir::UnaryOp::Exp, d);
                    if !log {
                        let py = k.index(yb, i, (4 * v.inner) as i64);
                        k.store(e, py, 0);
                    }
                    let a = k.get(acc);
                    let a = k.add(a, e);
                    k.set(acc, a);
                });
                let s = k.get(acc);
                finish(k, v.r, v.inner, log, xb, yb, m, s, ty, false);
            });
        }
    });
}

/// Final softmax pass: y *= 1/s, or y = x − m − log s for log-softmax.
#[allow(clippy::too_many_arguments)]
fn finish(
    k: &mut Kb,
    r: usize,
    stride: usize,
    log: bool,
    xb: Value,
    yb: Value,
    m: Value,
    s: Value,
    ty: Type,
    row: bool,
) {
    // log-softmax is (x − m) − log s: subtracting m first keeps large
    // logits exact (x − (m + log s) rounds m + log s at m's magnitude).
    let scale = if log {
        math::unary(k, crate::ir::UnaryOp::Log, s)
    } else {
        let one = k.cst(k.ty(s), 1.0);
        k.div(one, s)
    };
    if row {
        let sv = k.splat(scale);
        let mv = k.splat(m);
        k.for_lanes(r, |k, i, t| {
            let sc = if t == VF { sv } else { scale };
            let src = if log { xb } else { yb };
            let v = k.load_at(t, src, i);
            let out = if log {
                let mm = if t == VF { mv } else { m };
                let d = k.sub(v, mm);
                k.sub(d, sc)
            } else {
                k.mul(v, sc)
            };
            k.store_at(out, yb, i);
        });
    } else {
        k.for_range(0, r as i64, 1, |k, i| {
            let src = if log { xb } else { yb };
            let p = k.index(src, i, (4 * stride) as i64);
            let v = k.load(ty, p, 0);
            let out = if log {
                let d = k.sub(v, m);
                k.sub(d, scale)
            } else {
                k.mul(v, scale)
            };
            let q = k.index(yb, i, (4 * stride) as i64);
            k.store(out, q, 0);
        });
    }
}

/// How the affine parameters of a normalization are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Affine {
    /// One value per normalized element (LayerNorm).
    PerElement,
    /// One value per row, indexed by `row % channels` (InstanceNorm).
    PerRow { channels: usize },
}

/// `y = (x − mean)/sqrt(var + eps)·scale + bias` over rows of `n` contiguous elements.
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    k: &mut Kb,
    rows: usize,
    n: usize,
    eps: f32,
    affine: Affine,
    x: Value,
    scale: Value,
    bias: Option<Value>,
    y: Value,
) {
    let v = Orc {
        outer: rows,
        r: n,
        inner: 1,
    };
    let mut caps = vec![x, scale, y];
    caps.extend(bias);
    parallel::parallel_items(k, rows, outer_tasks(v), &caps, &mut |k, p, row, _| {
        let (x, scale, y, bias) = (p[0], p[1], p[2], p.get(3).copied());
        let xr = k.index(x, row, (4 * n) as i64);
        let yr = k.index(y, row, (4 * n) as i64);
        let s = fold_row(k, xr, n, 0.0, &id, add);
        let invn = k.cst(F32, 1.0 / n as f32);
        let mean = k.mul(s, invn);
        let mv = k.splat(mean);
        let centered_sq = move |k: &mut Kb, x: Value| {
            let m = if k.ty(x) == F32 { mean } else { mv };
            let d = k.sub(x, m);
            k.mul(d, d)
        };
        let ss = fold_row(k, xr, n, 0.0, &centered_sq, add);
        let var = k.mul(ss, invn);
        let e = k.cst(F32, eps);
        let ve = k.add(var, e);
        let sd = k.b.ins().sqrt(ve);
        let one = k.cst(F32, 1.0);
        let rstd = k.div(one, sd);
        let (g, bb) = match affine {
            Affine::PerElement => (None, None),
            Affine::PerRow { channels } => {
                let c = k.b.ins().urem_imm_u(row, channels as i64);
                let g = k.load_at(F32, scale, c);
                let g = k.mul(g, rstd);
                let bb = bias.map(|b| k.load_at(F32, b, c));
                (Some(g), bb)
            }
        };
        let rv = k.splat(rstd);
        let gv = g.map(|g| k.splat(g));
        let bv = bb.map(|b| k.splat(b));
        k.for_lanes(n, |k, i, ty| {
            let vec = ty == VF;
            let xv = k.load_at(ty, xr, i);
            let m = if vec { mv } else { mean };
            let d = k.sub(xv, m);
            let out = match affine {
                Affine::PerElement => {
                    let r = if vec { rv } else { rstd };
                    let t = k.mul(d, r);
                    let sc = k.load_at(ty, scale, i);
                    match bias {
                        Some(b) => {
                            let bi = k.load_at(ty, b, i);
                            k.fma(t, sc, bi)
                        }
                        None => k.mul(t, sc),
                    }
                }
                Affine::PerRow { .. } => {
                    let gg = if vec { gv.unwrap() } else { g.unwrap() };
                    match (bb, bv) {
                        (Some(b), Some(bvv)) => {
                            let b = if vec { bvv } else { b };
                            k.fma(d, gg, b)
                        }
                        _ => k.mul(d, gg),
                    }
                }
            };
            k.store_at(out, yr, i);
        });
    });
}

/// Index of the maximum along the middle axis (i64 result). NaN counts as
/// the largest value (numpy); ties go to the first index, or the last with
/// `select_last`.
pub fn argmax(k: &mut Kb, v: Orc, select_last: bool, x: Value, y: Value) {
    use cranelift_codegen::ir::condcodes::FloatCC;
    use cranelift_codegen::ir::types::I64;
    parallel::parallel_items(k, v.outer, outer_tasks(v), &[x, y], &mut |k, p, o, _| {
        let (x, y) = (p[0], p[1]);
        let xo = k.index(x, o, (4 * v.r * v.inner) as i64);
        let yo = k.index(y, o, (8 * v.inner) as i64);
        k.for_range(0, v.inner as i64, 1, |k, j| {
            let base = k.index(xo, j, 4);
            let first = k.load(F32, base, 0);
            let best = k.var(F32, first);
            let zero = k.iconst(0);
            let bi = k.var(I64, zero);
            k.for_range(1, v.r as i64, 1, |k, i| {
                let p = k.index(base, i, (4 * v.inner) as i64);
                let xv = k.load(F32, p, 0);
                let cur = k.get(best);
                let cc = if select_last {
                    FloatCC::GreaterThanOrEqual
                } else {
                    FloatCC::GreaterThan
                };
                let gt = k.b.ins().fcmp(cc, xv, cur);
                // NaN wins over numbers; among NaNs the first (or last) one.
                let x_nan = k.b.ins().fcmp(FloatCC::Unordered, xv, xv);
                let c_nan = k.b.ins().fcmp(FloatCC::Unordered, cur, cur);
                let not_c_nan = k.b.ins().bxor_imm_u(c_nan, 1);
                let nan_first = k.b.ins().band(x_nan, not_c_nan);
                let nan_last = if select_last {
                    k.b.ins().band(x_nan, c_nan)
                } else {
                    k.b.ins().iconst(cranelift_codegen::ir::types::I8, 0)
                };
                let num_ok = k.b.ins().band(gt, not_c_nan);
                let take = k.b.ins().bor(num_ok, nan_first);
                let take = k.b.ins().bor(take, nan_last);
                let nb = k.b.ins().select(take, xv, cur);
                k.set(best, nb);
                let ci = k.get(bi);
                let ni = k.b.ins().select(take, i, ci);
                k.set(bi, ni);
            });
            let r = k.get(bi);
            let q = k.index(yo, j, 8);
            k.store(r, q, 0);
        });
    });
}
