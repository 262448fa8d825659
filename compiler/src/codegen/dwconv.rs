//! Depthwise convolution (one filter per channel), computed directly: the
//! GEMM formulation would multiply 1-row matrices. Valid tap ranges are
//! resolved at compile time as for pooling (runs of output positions with
//! the same window clipping); with unit width stride, four output columns
//! are computed per f32x4.

use super::conv::ConvGeom;
use super::kb::{InsExt, Kb, LANES, VF};
use super::parallel;
use super::pool::runs;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{Type, Value};

pub fn emit(
    k: &mut Kb,
    g: &ConvGeom,
    x: Value,
    w: Value,
    bias: Option<Value>,
    y: Value,
    relu: bool,
) {
    let hr = runs(g.oh, g.h, g.kh, g.stride[0], g.dil[0], g.pad[0], 0);
    let wr = runs(g.ow, g.w, g.kw, g.stride[1], g.dil[1], g.pad[1], 0);
    let taps = g.kh * g.kw;
    let planes = g.n * g.c;
    let work = planes * g.oh * g.ow * taps;
    let tasks = parallel::tasks_for(planes, work, 1 << 16, 1 << 14, parallel::MAX_TASKS);
    let mut caps = vec![x, w, y];
    caps.extend(bias);
    parallel::parallel_items(k, planes, tasks, &caps, &mut |k, cp, p, _| {
        let (x, w, y, bias) = (cp[0], cp[1], cp[2], cp.get(3).copied());
        let c = k.b.ins_urem(p, g.c as i64);
        let xp = k.index(x, p, (4 * g.h * g.w) as i64);
        let yp = k.index(y, p, (4 * g.oh * g.ow) as i64);
        let wc = k.index(w, c, (4 * taps) as i64);
        let wv: Vec<Value> = (0..taps).map(|t| k.load(F32, wc, 4 * t as i64)).collect();
        let b0 = match bias {
            Some(b) => k.load_at(F32, b, c),
            None => k.fconst(0.0),
        };
        for hrun in &hr {
            for wrun in &wr {
                k.for_range(hrun.o_lo as i64, hrun.o_hi as i64, 1, |k, oh| {
                    let ih0 = k.b_ins_imul_add(oh, g.stride[0] as i64, -(g.pad[0] as i64));
                    let xrow = k.index(xp, ih0, (4 * g.w) as i64);
                    let yrow = k.index(yp, oh, (4 * g.ow) as i64);
                    let point = |k: &mut Kb, ow: Value, ty: Type| {
                        let iw0 = k.b_ins_imul_add(ow, g.stride[1] as i64, -(g.pad[1] as i64));
                        let base = k.index(xrow, iw0, 4);
                        let mut acc = if ty == VF { k.splat(b0) } else { b0 };
                        for th in hrun.t_lo..hrun.t_hi {
                            for tw in wrun.t_lo..wrun.t_hi {
                                let off = 4 * ((th * g.dil[0] * g.w) + tw * g.dil[1]) as i64;
                                let xv = k.load(ty, base, off);
                                let wt = wv[th * g.kw + tw];
                                let wt = if ty == VF { k.splat(wt) } else { wt };
                                acc = k.fma(xv, wt, acc);
                            }
                        }
                        if relu {
                            let z = k.cst(ty, 0.0);
                            acc = k.max(acc, z);
                        }
                        k.store_at(acc, yrow, ow);
                    };
                    let n = wrun.o_hi - wrun.o_lo;
                    if g.stride[1] == 1 && n >= LANES {
                        let n4 = n / LANES * LANES;
                        k.for_range(
                            wrun.o_lo as i64,
                            (wrun.o_lo + n4) as i64,
                            LANES as i64,
                            |k, ow| point(k, ow, VF),
                        );
                        k.for_range((wrun.o_lo + n4) as i64, wrun.o_hi as i64, 1, |k, ow| {
                            point(k, ow, F32)
                        });
                    } else {
                        k.for_range(wrun.o_lo as i64, wrun.o_hi as i64, 1, |k, ow| {
                            point(k, ow, F32)
                        });
                    }
                });
            }
        }
    });
}
