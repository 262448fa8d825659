//! Register-blocked f32x4 GEMM: `C = alpha·A·B + beta·bias` with a 4×8
//! accumulator tile (8 vector registers, leaving room for A broadcasts and
//! B loads within the 16 xmm / 32 NEON registers).
//!
//! Loop order is column-panel outer, row-block inner, so one K×8 panel of B
//! stays in L1 while A streams from L2. B must be row-contiguous (column
//! stride 1); callers transpose or pre-pack otherwise.

use super::kb::{Kb, VF};
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{Type, Value};

pub const MR: usize = 4;
pub const NR_VECS: usize = 2;

/// Element strides of a row-major-ish matrix view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    pub row: usize,
    pub col: usize,
}

/// Epilogue addend: `beta·bias[i·row + j·col]` with `col` ∈ {0, 1}.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bias {
    pub strides: Strides,
    pub beta: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Strides,
    /// Row stride of B (its column stride is 1).
    pub b_row: usize,
    /// Row stride of C (column stride 1).
    pub c_row: usize,
    pub alpha: f32,
    pub bias: Option<Bias>,
    pub relu: bool,
}

struct Ptrs {
    a: Value,
    b: Value,
    c: Value,
    bias: Option<Value>,
}

/// Emits the whole GEMM for one (batch) instance.
pub fn emit(k: &mut Kb, s: &GemmSpec, a: Value, b: Value, c: Value, bias: Option<Value>) {
    let p = Ptrs { a, b, c, bias };
    let nr = NR_VECS * 4;
    let n_full = s.n / nr * nr;
    let m_full = s.m / MR * MR;
    let m_rem = s.m - m_full;
    // Full-width column panels.
    k.for_range(0, n_full as i64, nr as i64, |k, j0| {
        k.for_range(0, m_full as i64, MR as i64, |k, i0| {
            tile(k, s, &p, i0, j0, MR, NR_VECS, VF)
        });
        if m_rem > 0 {
            let i0 = k.iconst(m_full as i64);
            tile(k, s, &p, i0, j0, m_rem, NR_VECS, VF);
        }
    });
    // One 4-wide panel, then scalar columns.
    let mut j = n_full;
    if s.n - j >= 4 {
        let j0 = k.iconst(j as i64);
        row_blocks(k, s, &p, j0, 1, VF);
        j += 4;
    }
    if j < s.n {
        k.for_range(j as i64, s.n as i64, 1, |k, j0| {
            row_blocks(k, s, &p, j0, 1, F32)
        });
    }
}

fn row_blocks(k: &mut Kb, s: &GemmSpec, p: &Ptrs, j0: Value, nv: usize, ty: Type) {
    let m_full = s.m / MR * MR;
    k.for_range(0, m_full as i64, MR as i64, |k, i0| {
        tile(k, s, p, i0, j0, MR, nv, ty)
    });
    if s.m > m_full {
        let i0 = k.iconst(m_full as i64);
        tile(k, s, p, i0, j0, s.m - m_full, nv, ty);
    }
}

/// One `mr × (nv·width)` tile at (i0, j0): accumulate over K, then the epilogue.
#[allow(clippy::too_many_arguments)]
fn tile(k: &mut Kb, s: &GemmSpec, p: &Ptrs, i0: Value, j0: Value, mr: usize, nv: usize, ty: Type) {
    let w = if ty == VF { 4 } else { 1 };
    let a0 = k.index(p.a, i0, 4 * s.a.row as i64);
    let b0 = k.index(p.b, j0, 4);
    let zero = k.cst(ty, 0.0);
    let acc: Vec<_> = (0..mr * nv).map(|_| k.var(ty, zero)).collect();
    k.for_range(0, s.k as i64, 1, |k, kk| {
        let pa = k.index(a0, kk, 4 * s.a.col as i64);
        let pb = k.index(b0, kk, 4 * s.b_row as i64);
        let bv: Vec<Value> = (0..nv)
            .map(|v| k.load(ty, pb, 4 * (v * w) as i64))
            .collect();
        for r in 0..mr {
            let a = k.load(F32, pa, 4 * (r * s.a.row) as i64);
            let a = if ty == VF { k.splat(a) } else { a };
            for v in 0..nv {
                let cur = k.get(acc[r * nv + v]);
                let nxt = k.fma(a, bv[v], cur);
                k.set(acc[r * nv + v], nxt);
            }
        }
    });
    let c0 = k.index(p.c, i0, 4 * s.c_row as i64);
    let c0 = k.index(c0, j0, 4);
    let bias0 = match (p.bias, s.bias) {
        (Some(bp), Some(bs)) => {
            let q = k.index(bp, i0, 4 * bs.strides.row as i64);
            let q = if bs.strides.col == 0 {
                q
            } else {
                k.index(q, j0, 4)
            };
            Some((q, bs))
        }
        _ => None,
    };
    for r in 0..mr {
        for v in 0..nv {
            let mut y = k.get(acc[r * nv + v]);
            if s.alpha != 1.0 {
                let al = k.cst(ty, s.alpha);
                y = k.mul(y, al);
            }
            if let Some((q, bs)) = bias0 {
                let row_off = 4 * (r * bs.strides.row) as i64;
                let bv = if bs.strides.col == 0 {
                    let x = k.load(F32, q, row_off);
                    if ty == VF {
                        k.splat(x)
                    } else {
                        x
                    }
                } else {
                    k.load(ty, q, row_off + 4 * (v * w) as i64)
                };
                y = if bs.beta == 1.0 {
                    k.add(y, bv)
                } else {
                    let be = k.cst(ty, bs.beta);
                    k.fma(bv, be, y)
                };
            }
            if s.relu {
                let z = k.cst(ty, 0.0);
                y = k.max(y, z);
            }
            k.store(y, c0, 4 * (r * s.c_row + v * w) as i64);
        }
    }
}
