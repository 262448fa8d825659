//! Register-blocked f32x4 GEMM: `C = alpha·A·B + beta·bias` with a 4×8
//! accumulator tile (8 vector registers, leaving room for A broadcasts and
//! B loads within the 16 xmm / 32 NEON registers).
//!
//! Loop order is column-panel outer, row-block inner, so one K×8 panel of B
//! stays in L1 while A streams from L2. B must be row-contiguous (column
//! stride 1); callers transpose or pre-pack otherwise.

use super::kb::{Kb, PTR, VF};
use super::x86;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

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

/// A compile-time B (weights): the assembled kernels read it pre-packed.
pub struct ConstB<'t> {
    /// Identifies the tensor (and layout) across call sites.
    pub key: String,
    /// `[K, N]` row-major, or `[N, K]` when `transposed`.
    pub data: &'t [f32],
    pub transposed: bool,
}

/// Emits the whole GEMM for one (batch) instance: a call to an assembled
/// kernel when the target has one (x86-64 AVX2/AVX-512), else f32x4 loops.
pub fn emit(k: &mut Kb, s: &GemmSpec, a: Value, b: Value, c: Value, bias: Option<Value>) {
    if asm_call(k, s, a, Some(b), None, c, bias) {
        return;
    }
    emit_cranelift(k, s, a, b, c, bias);
}

/// The GEMM with B a constant: one call to an assembled kernel that reads B
/// pre-packed from its own data object. Returns false (emitting nothing)
/// when no assembled kernel is available; the caller then materializes B
/// and uses [`emit`].
pub fn emit_const_b(
    k: &mut Kb,
    s: &GemmSpec,
    a: Value,
    b: &ConstB,
    c: Value,
    bias: Option<Value>,
) -> bool {
    asm_call(k, s, a, None, Some(b), c, bias)
}

fn asm_call(
    k: &mut Kb,
    s: &GemmSpec,
    a: Value,
    b: Option<Value>,
    cb: Option<&ConstB>,
    c: Value,
    bias: Option<Value>,
) -> bool {
    let Some(be) = k.asm.as_deref_mut() else {
        return false;
    };
    if s.bias.is_some_and(|x| x.strides.col > 1) || (s.bias.is_some() && bias.is_none()) {
        return false;
    }
    let level = be.level();
    let spec = x86::AsmGemm {
        m: s.m,
        n: s.n,
        k: s.k,
        a_row: s.a.row,
        a_col: s.a.col,
        b_row: s.b_row,
        c_row: s.c_row,
        alpha: s.alpha,
        bias: s.bias.map(|x| (x.strides.row, x.strides.col, x.beta)),
        relu: s.relu,
        b_packed: cb.is_some(),
    };
    let packed = match cb {
        Some(cb) => {
            let t = x86::tiling(&spec, level);
            let key = format!("{} {level:?} {}x{}x{} nv{}", cb.key, s.m, s.n, s.k, t.nv);
            let mut make = || {
                let (kk, n) = (s.k, s.n);
                let rows: Vec<f32> = if cb.transposed {
                    (0..kk * n).map(|e| cb.data[(e % n) * kk + e / n]).collect()
                } else {
                    cb.data[..kk * n].to_vec()
                };
                let dense = x86::AsmGemm {
                    b_row: n,
                    ..spec.clone()
                };
                x86::pack_b(&dense, level, &t, &rows)
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect()
            };
            match be.data(&key, &mut make) {
                Some(id) => Some(id),
                None => return false,
            }
        }
        None => None,
    };
    let Some((fid, sig)) = be.gemm(&spec) else {
        return false;
    };
    let bptr = match (packed, b) {
        (Some(id), _) => {
            let gv = x86::backend::import_data(k.b.func, id);
            k.b.ins().symbol_value(PTR, gv)
        }
        (None, Some(b)) => b,
        (None, None) => return false,
    };
    let fref = x86::backend::import_function(k.b.func, fid, sig);
    let bias = match bias {
        Some(p) if s.bias.is_some() => p,
        _ => k.iconst(0),
    };
    k.b.ins().call(fref, &[a, bptr, c, bias]);
    true
}

/// The f32x4 Cranelift GEMM.
fn emit_cranelift(k: &mut Kb, s: &GemmSpec, a: Value, b: Value, c: Value, bias: Option<Value>) {
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
