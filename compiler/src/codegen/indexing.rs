//! Data-dependent indexing kernels: GatherElements. Scalar loops — each
//! output element reads one input element at an index loaded at run time,
//! checked against the axis size (status 3 when out of range).

use super::kb::Kb;
use cranelift_codegen::ir::types::{F32, I64, I8};
use cranelift_codegen::ir::{Type, Value};
use cranelift_frontend::Variable;

fn elem_ty(esize: usize) -> Type {
    match esize {
        1 => I8,
        4 => F32,
        _ => I64,
    }
}

/// `dst[i] = src[i with dim axis := idx[i]]` over the indices' shape
/// `idx_shape` (same rank as `src_shape`); out-of-range indices set
/// `status` to 3 and leave their element unwritten.
#[allow(clippy::too_many_arguments)]
pub fn gather_elements(
    k: &mut Kb,
    src_shape: &[usize],
    idx_shape: &[usize],
    axis: usize,
    src: Value,
    idx: Value,
    dst: Value,
    esize: usize,
    status: Variable,
) {
    let src_st = crate::ir::contiguous_strides(src_shape);
    let out_st = crate::ir::contiguous_strides(idx_shape);
    let g = Geom {
        src_st,
        out_st,
        shape: idx_shape.to_vec(),
        axis,
        dim: src_shape[axis] as i64,
        esize: esize as i64,
    };
    level(k, &g, 0, src, idx, dst, status);
}

struct Geom {
    src_st: Vec<usize>,
    out_st: Vec<usize>,
    shape: Vec<usize>,
    axis: usize,
    dim: i64,
    esize: i64,
}

fn level(k: &mut Kb, g: &Geom, d: usize, src: Value, idx: Value, dst: Value, status: Variable) {
    if d == g.shape.len() {
        return element(k, g, src, idx, dst, status);
    }
    k.for_range(0, g.shape[d] as i64, 1, |k, i| {
        // Along `axis` the source position comes from the index, not the loop.
        let s = if d == g.axis {
            src
        } else {
            k.index(src, i, g.src_st[d] as i64 * g.esize)
        };
        let ix = k.index(idx, i, g.out_st[d] as i64 * 8);
        let o = k.index(dst, i, g.out_st[d] as i64 * g.esize);
        level(k, g, d + 1, s, ix, o, status);
    });
}

fn element(k: &mut Kb, g: &Geom, src: Value, idx: Value, dst: Value, status: Variable) {
    let raw = k.load(I64, idx, 0);
    k.checked_index(raw, g.dim, status, |k, j| {
        let p = k.index(src, j, g.src_st[g.axis] as i64 * g.esize);
        let ty = elem_ty(g.esize as usize);
        let v = k.load(ty, p, 0);
        k.store(v, dst, 0);
    });
}
