//! Data movement kernels: copies, transpose, concat, slice, gather, tile, pad.

use super::kb::Kb;
use super::parallel;
use cranelift_codegen::ir::types::{F32, I64};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// `dst[0..n] = src[0..n]` for n elements of `esize` bytes (vectorized).
pub fn copy(k: &mut Kb, dst: Value, src: Value, n: usize, esize: usize) {
    copy_bytes(k, dst, src, n * esize);
}

/// Byte copy with 16-byte vector moves and a tail.
pub fn copy_bytes(k: &mut Kb, dst: Value, src: Value, bytes: usize) {
    let n16 = bytes / 16 * 16;
    k.for_range(0, n16 as i64, 16, |k, i| {
        let s = k.index(src, i, 1);
        let d = k.index(dst, i, 1);
        let v = k.load(super::kb::VF, s, 0);
        k.store(v, d, 0);
    });
    let mut off = n16;
    for (w, ty) in [
        (8usize, I64),
        (4, cranelift_codegen::ir::types::I32),
        (2, cranelift_codegen::ir::types::I16),
        (1, cranelift_codegen::ir::types::I8),
    ] {
        while bytes - off >= w {
            let v = k.load(ty, src, off as i64);
            k.store(v, dst, off as i64);
            off += w;
        }
    }
}

/// Fills n f32 elements with `value`.
pub fn fill_f32(k: &mut Kb, dst: Value, n: usize, value: f32) {
    k.for_lanes(n, |k, i, ty| {
        let v = k.cst(ty, value);
        k.store_at(v, dst, i);
    });
}

/// Fills `bytes` bytes with a repeated element pattern of `esize` bytes
/// (zero for every pad value nnc emits for non-f32 data).
pub fn fill_zero(k: &mut Kb, dst: Value, bytes: usize) {
    let n16 = bytes / 16 * 16;
    let z = k.cst(super::kb::VF, 0.0);
    k.for_range(0, n16 as i64, 16, |k, i| {
        let d = k.index(dst, i, 1);
        k.store(z, d, 0);
    });
    for off in n16..bytes {
        let zb = k.b.ins().iconst(cranelift_codegen::ir::types::I8, 0);
        k.store(zb, dst, off as i64);
    }
}

fn int_ty(esize: usize) -> Type {
    match esize {
        1 => cranelift_codegen::ir::types::I8,
        4 => F32,
        8 => I64,
        _ => unreachable!(),
    }
}

/// A strided copy: `dst[Σ i_d·out_strides[d]] = src[Σ i_d·in_strides[d]]`
/// over `dims` (element strides; 0 broadcasts). Shared by transpose, slice,
/// expand and pad. Dims contiguous in both views are merged first.
pub fn strided_copy(
    k: &mut Kb,
    dims: &[usize],
    in_strides: &[i64],
    src: Value,
    out_strides: &[i64],
    dst: Value,
    esize: usize,
) {
    let mut d: Vec<usize> = Vec::new();
    let mut si: Vec<i64> = Vec::new();
    let mut so: Vec<i64> = Vec::new();
    for ((&n, &a), &b) in dims.iter().zip(in_strides).zip(out_strides) {
        if n == 1 {
            continue;
        }
        if let (Some(&la), Some(&lb)) = (si.last(), so.last()) {
            if la == a * n as i64 && lb == b * n as i64 {
                let l = d.len() - 1;
                d[l] *= n;
                si[l] = a;
                so[l] = b;
                continue;
            }
        }
        d.push(n);
        si.push(a);
        so.push(b);
    }
    if d.is_empty() {
        d.push(1);
        si.push(1);
        so.push(1);
    }
    // Large copies split over threads by the outermost dim (disjoint
    // output blocks: every caller writes a dense or sub-block region).
    let n: usize = d.iter().product();
    if d.len() >= 2 && k.threads.is_some() {
        let tasks = parallel::tasks_for(d[0], n, 1 << 16, 1 << 14, parallel::MAX_TASKS);
        if tasks > 1 {
            let e = esize as i64;
            parallel::parallel_items(k, d[0], tasks, &[src, dst], &mut |k, p, i, _| {
                let ps = k.index(p[0], i, si[0] * e);
                let pd = k.index(p[1], i, so[0] * e);
                level(k, &d, &si, &so, 1, ps, pd, esize);
            });
            return;
        }
    }
    level(k, &d, &si, &so, 0, src, dst, esize);
}

/// Contiguous row-major output strides for `dims`.
pub fn dense(dims: &[usize]) -> Vec<i64> {
    crate::ir::contiguous_strides(dims)
        .iter()
        .map(|&s| s as i64)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn level(
    k: &mut Kb,
    d: &[usize],
    si: &[i64],
    so: &[i64],
    lv: usize,
    src: Value,
    dst: Value,
    esize: usize,
) {
    let e = esize as i64;
    if lv + 1 == d.len() {
        let n = d[lv];
        if si[lv] == 1 && so[lv] == 1 {
            copy(k, dst, src, n, esize);
        } else if si[lv] == 0 && esize == 4 && so[lv] == 1 {
            let v = k.load(F32, src, 0);
            let vv = k.splat(v);
            k.for_lanes(n, |k, i, ty| {
                k.store_at(if ty == F32 { v } else { vv }, dst, i)
            });
        } else {
            let ty = int_ty(esize);
            k.for_range(0, n as i64, 1, |k, i| {
                let p = k.index(src, i, si[lv] * e);
                let v = k.load(ty, p, 0);
                let q = k.index(dst, i, so[lv] * e);
                k.store(v, q, 0);
            });
        }
        return;
    }
    k.for_range(0, d[lv] as i64, 1, |k, i| {
        let ps = k.index(src, i, si[lv] * e);
        let pd = k.index(dst, i, so[lv] * e);
        level(k, d, si, so, lv + 1, ps, pd, esize);
    });
}

/// Transpose `shape` by `perm` (output dim i = input dim perm[i]).
pub fn transpose(
    k: &mut Kb,
    shape: &[usize],
    perm: &[usize],
    src: Value,
    dst: Value,
    esize: usize,
) {
    let st = crate::ir::contiguous_strides(shape);
    let dims: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let strides: Vec<i64> = perm.iter().map(|&p| st[p] as i64).collect();
    strided_copy(k, &dims, &strides, src, &dense(&dims), dst, esize);
}

/// Concatenation along `axis` of inputs with the given shapes.
pub fn concat(
    k: &mut Kb,
    shapes: &[Vec<usize>],
    axis: usize,
    srcs: &[Value],
    dst: Value,
    esize: usize,
) {
    let outer: usize = shapes[0][..axis].iter().product();
    let chunks: Vec<usize> = shapes
        .iter()
        .map(|s| s[axis..].iter().product::<usize>())
        .collect();
    let total: usize = chunks.iter().sum();
    k.for_range(0, outer as i64, 1, |k, o| {
        let mut off = 0usize;
        for (i, &src) in srcs.iter().enumerate() {
            let ps = k.index(src, o, (chunks[i] * esize) as i64);
            let pd = k.index(dst, o, (total * esize) as i64);
            let pd = k.offset(pd, (off * esize) as i64);
            copy(k, pd, ps, chunks[i], esize);
            off += chunks[i];
        }
    });
}

/// Gather along `axis` with i64 indices read at run time; returns the
/// status value (0, or 3 when an index is out of range).
#[allow(clippy::too_many_arguments)]
pub fn gather(
    k: &mut Kb,
    shape: &[usize],
    axis: usize,
    n_idx: usize,
    src: Value,
    idx: Value,
    dst: Value,
    esize: usize,
    status: cranelift_frontend::Variable,
) {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let dim = shape[axis] as i64;
    let block = (inner * esize) as i64;
    k.for_range(0, n_idx as i64, 1, |k, j| {
        let p = k.index(idx, j, 8);
        let raw = k.load(I64, p, 0);
        k.checked_index(raw, dim, status, |k, i| {
            k.for_range(0, outer as i64, 1, |k, o| {
                let ps = k.index(src, o, dim * block);
                let ps = k.index(ps, i, block);
                let pd = k.index(dst, o, n_idx as i64 * block);
                let pd = k.index(pd, j, block);
                copy_bytes(k, pd, ps, block as usize);
            });
        });
    });
}

/// Tile: output dim d has size in[d]·rep[d]; each output element reads
/// input index (i mod in[d]).
pub fn tile(k: &mut Kb, shape: &[usize], repeats: &[usize], src: Value, dst: Value, esize: usize) {
    // Copy the input into the first block, then replicate dim by dim from
    // the innermost outward, each time copying already-built blocks.
    let r = shape.len();
    if r == 0 {
        copy(k, dst, src, 1, esize);
        return;
    }
    let out: Vec<usize> = shape.iter().zip(repeats).map(|(a, b)| a * b).collect();
    let in_strides = crate::ir::contiguous_strides(shape);
    let strides: Vec<i64> = in_strides.iter().map(|&s| s as i64).collect();
    // Direct gather formulation: loop over output dims, input offset via modulo
    // computed statically per repeat: out index = rep_i·in_d + j.
    tile_level(k, shape, &out, &strides, 0, src, dst, esize);
}

#[allow(clippy::too_many_arguments)]
fn tile_level(
    k: &mut Kb,
    shape: &[usize],
    out: &[usize],
    in_strides: &[i64],
    lv: usize,
    src: Value,
    dst: Value,
    esize: usize,
) {
    let out_stride: usize = out[lv + 1..].iter().product();
    let reps = out[lv] / shape[lv].max(1);
    k.for_range(0, reps as i64, 1, |k, rep| {
        k.for_range(0, shape[lv] as i64, 1, |k, j| {
            let ps = k.index(src, j, in_strides[lv] * esize as i64);
            let oi = k.b.ins().imul_imm_s(rep, shape[lv] as i64);
            let oi = k.b.ins().iadd(oi, j);
            let pd = k.index(dst, oi, (out_stride * esize) as i64);
            if lv + 1 == shape.len() {
                let ty = int_ty(esize);
                let v = k.load(ty, ps, 0);
                k.store(v, pd, 0);
            } else {
                tile_level(k, shape, out, in_strides, lv + 1, ps, pd, esize);
            }
        });
    });
}
