//! Max and average pooling (1-D and 2-D). Window clipping is resolved at
//! compile time: output positions are grouped into runs that share the same
//! valid tap range, so each run is a loop with a fully static window.

use super::kb::Kb;
use super::parallel;
use super::x86;
use super::x86::pool as x86pool;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::ir::Value;

#[derive(Clone, Debug, PartialEq)]
pub struct PoolGeom {
    /// N·C planes.
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub k: [usize; 2],
    pub stride: [usize; 2],
    pub dil: [usize; 2],
    pub pad_begin: [usize; 2],
    pub pad_end: [usize; 2],
    pub max: bool,
    pub count_include_pad: bool,
}

impl PoolGeom {
    /// The output runs of rows and of columns (see [`runs`]).
    fn runs(&self) -> (Vec<Run>, Vec<Run>) {
        let axis = |a: usize, out: usize, size: usize| {
            let (k, s, d) = (self.k[a], self.stride[a], self.dil[a]);
            runs(out, size, k, s, d, self.pad_begin[a], self.pad_end[a])
        };
        (axis(0, self.oh, self.h), axis(1, self.ow, self.w))
    }
}

/// A run of outputs [o_lo, o_hi) with taps [t_lo, t_hi) valid and `count`
/// taps inside the padded extent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Run {
    pub o_lo: usize,
    pub o_hi: usize,
    pub t_lo: usize,
    pub t_hi: usize,
    pub padded_count: usize,
}

pub(super) fn runs(
    out: usize,
    size: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
    pe: usize,
) -> Vec<Run> {
    let mut v: Vec<Run> = Vec::new();
    for o in 0..out {
        let base = (o * s) as i64 - pb as i64;
        let valid: Vec<usize> = (0..k)
            .filter(|&t| (0..size as i64).contains(&(base + (t * d) as i64)))
            .collect();
        let padded = (0..k)
            .filter(|&t| (-(pb as i64)..(size + pe) as i64).contains(&(base + (t * d) as i64)))
            .count();
        let (t_lo, t_hi) = match (valid.first(), valid.last()) {
            (Some(&a), Some(&b)) => (a, b + 1),
            _ => (0, 0),
        };
        match v.last_mut() {
            Some(r)
                if r.t_lo == t_lo && r.t_hi == t_hi && r.padded_count == padded && r.o_hi == o =>
            {
                r.o_hi = o + 1
            }
            _ => v.push(Run {
                o_lo: o,
                o_hi: o + 1,
                t_lo,
                t_hi,
                padded_count: padded,
            }),
        }
    }
    v
}

pub fn emit(k: &mut Kb, g: &PoolGeom, x: Value, y: Value) {
    let (hr, wr) = g.runs();
    let work = g.planes * g.oh * g.ow * g.k[0] * g.k[1];
    let tasks = parallel::tasks_for(g.planes, work, 1 << 16, 1 << 14, parallel::MAX_TASKS);
    if g.max && emit_asm(k, g, &hr, x, y, tasks) {
        return;
    }
    parallel::parallel_items(k, g.planes, tasks, &[x, y], &mut |k, c, p, _| {
        let xp = k.index(c[0], p, (4 * g.h * g.w) as i64);
        let yp = k.index(c[1], p, (4 * g.oh * g.ow) as i64);
        plane(k, g, &hr, &wr, xp, yp);
    });
}

/// Pools the `g.planes` planes at `x` (planes `x_plane` floats apart) into
/// `y` (planes `y_plane` floats apart) on the calling thread: a fused
/// conv's cache-resident tile into a band of rows of the pooled output.
pub fn emit_strided(k: &mut Kb, g: &PoolGeom, x: Value, y: Value, x_plane: usize, y_plane: usize) {
    let (hr, wr) = g.runs();
    let f = if g.max { asm_fn(k, g, &hr) } else { None };
    if let Some((fid, sig)) = &f {
        // Dense planes: one call for all of them.
        if x_plane == g.h * g.w && y_plane == g.oh * g.ow {
            let fref = x86::backend::import_function(k.b.func, *fid, sig.clone());
            let n = k.iconst(g.planes as i64);
            let unused = k.iconst(0);
            k.b.ins().call(fref, &[x, y, n, unused]);
            return;
        }
    }
    k.for_range(0, g.planes as i64, 1, |k, p| {
        let xp = k.index(x, p, 4 * x_plane as i64);
        let yp = k.index(y, p, 4 * y_plane as i64);
        match &f {
            Some((fid, sig)) => {
                let fref = x86::backend::import_function(k.b.func, *fid, sig.clone());
                let one = k.iconst(1);
                let unused = k.iconst(0);
                k.b.ins().call(fref, &[xp, yp, one, unused]);
            }
            None => plane(k, g, &hr, &wr, xp, yp),
        }
    });
}

/// One plane `xp` → `yp`, window clipping resolved per run.
fn plane(k: &mut Kb, g: &PoolGeom, hr: &[Run], wr: &[Run], xp: Value, yp: Value) {
    for hrun in hr {
        for wrun in wr {
            k.for_range(hrun.o_lo as i64, hrun.o_hi as i64, 1, |k, oh| {
                // &x[oh·s − pb][·]
                let ih0 = k.b_ins_imul_add(oh, g.stride[0] as i64, -(g.pad_begin[0] as i64));
                let xrow = k.index(xp, ih0, (4 * g.w) as i64);
                let yrow = k.index(yp, oh, (4 * g.ow) as i64);
                k.for_range(wrun.o_lo as i64, wrun.o_hi as i64, 1, |k, ow| {
                    let iw0 = k.b_ins_imul_add(ow, g.stride[1] as i64, -(g.pad_begin[1] as i64));
                    let base = k.index(xrow, iw0, 4);
                    // A max window entirely in padding (only possible
                    // with pads ≥ kernel) gives onnxruntime's initial
                    // value, f32::MIN, as the reference does, not −inf.
                    let empty = hrun.t_lo == hrun.t_hi || wrun.t_lo == wrun.t_hi;
                    let init = match (g.max, empty) {
                        (true, true) => f32::MIN,
                        (true, false) => f32::NEG_INFINITY,
                        (false, _) => 0.0,
                    };
                    let mut acc = k.cst(F32, init);
                    for th in hrun.t_lo..hrun.t_hi {
                        for tw in wrun.t_lo..wrun.t_hi {
                            let off = 4 * ((th * g.dil[0] * g.w) + tw * g.dil[1]) as i64;
                            let v = k.load(F32, base, off);
                            acc = if g.max { k.max(acc, v) } else { k.add(acc, v) };
                        }
                    }
                    if !g.max {
                        let cnt = if g.count_include_pad {
                            hrun.padded_count * wrun.padded_count
                        } else {
                            (hrun.t_hi - hrun.t_lo) * (wrun.t_hi - wrun.t_lo)
                        };
                        let inv = k.cst(F32, 1.0 / cnt.max(1) as f32);
                        acc = k.mul(acc, inv);
                    }
                    k.store_at(acc, yrow, ow);
                });
            });
        }
    }
}

/// Max pooling with the assembled AVX-512 row kernel (see
/// `x86::pool`); false (nothing emitted) when the target or shape does not
/// allow it.
fn emit_asm(k: &mut Kb, g: &PoolGeom, hr: &[Run], x: Value, y: Value, tasks: usize) -> bool {
    let Some((fid, sig)) = asm_fn(k, g, hr) else {
        return false;
    };
    let call = |k: &mut Kb, x: Value, y: Value, planes: Value| {
        let fref = x86::backend::import_function(k.b.func, fid, sig.clone());
        let unused = k.iconst(0);
        k.b.ins().call(fref, &[x, y, planes, unused]);
    };
    if tasks <= 1 || k.threads.is_none() {
        let n = k.iconst(g.planes as i64);
        call(k, x, y, n);
        return true;
    }
    parallel::parallel_items(k, g.planes, tasks, &[x, y], &mut |k, c, p, _| {
        let xp = k.index(c[0], p, (4 * g.h * g.w) as i64);
        let yp = k.index(c[1], p, (4 * g.oh * g.ow) as i64);
        let one = k.iconst(1);
        call(k, xp, yp, one);
    });
    true
}

type AsmFn = (cranelift_module::FuncId, cranelift_codegen::ir::Signature);

/// The assembled max pool for `g` (one call per run of planes), when the
/// target and shape allow it.
fn asm_fn(k: &mut Kb, g: &PoolGeom, hr: &[Run]) -> Option<AsmFn> {
    if std::env::var_os("NNC_NO_ASM_POOL").is_some() {
        return None;
    }
    let spec = x86pool::MaxPool {
        h: g.h,
        w: g.w,
        oh: g.oh,
        ow: g.ow,
        k: g.k,
        stride: g.stride,
        dil: g.dil,
        pad: g.pad_begin,
        runs: hr
            .iter()
            .map(|r| x86pool::RowRun {
                o_lo: r.o_lo,
                o_hi: r.o_hi,
                t_lo: r.t_lo,
                t_hi: r.t_hi,
            })
            .collect(),
    };
    if !spec.supported() {
        return None;
    }
    let be = k.asm()?;
    if be.level() != x86::Level::Avx512 {
        return None;
    }
    let key = format!("maxpool {spec:?}");
    be.func(&key, &mut |_| x86pool::assemble(&spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_border_and_interior() {
        // 3-tap window, stride 1, pad 1 on a 5-wide input: border, interior, border.
        let r = runs(5, 5, 3, 1, 1, 1, 1);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].o_lo, r[0].o_hi, r[0].t_lo, r[0].t_hi), (0, 1, 1, 3));
        assert_eq!((r[1].o_lo, r[1].o_hi, r[1].t_lo, r[1].t_hi), (1, 4, 0, 3));
        assert_eq!((r[2].o_lo, r[2].o_hi, r[2].t_lo, r[2].t_hi), (4, 5, 0, 2));
    }
}
