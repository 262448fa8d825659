//! Shape ops, data movement, constants and reductions. Value-dependent
//! operands (target shapes, axes, sizes, pads) must be compile-time
//! constants; shape subgraphs usually are, once folded.

use crate::builder::{Ctx, FOLD_FREE_BYTES, FOLD_MAX_BYTES};
use crate::node::{Node, Result, MAX_ATTR_DIM};
use crate::tensor::from_proto;
use nnc_compiler::ir::{
    broadcast_shapes, BinaryOp, DType, Op, PadMode, ReduceOp, SliceDim, Tensor, TensorData,
    TensorType, UnaryOp, ValueId,
};
use std::sync::Arc;

/// Converts integer operands that are sizes (must be non-negative).
fn sizes(n: &Node, what: &str, v: &[i64]) -> Result<Vec<usize>> {
    v.iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| n.err(format!("{what} {v:?} contains negative value {d}")))
        })
        .collect()
}

/// Element count of `shape` if a tensor of it is acceptable.
fn checked_numel(n: &Node, dtype: DType, shape: &[usize]) -> Result<usize> {
    let bytes = TensorType::new(dtype, shape.to_vec())
        .checked_bytes()
        .ok_or_else(|| n.err(format!("result of shape {shape:?} is too large")))?;
    Ok(bytes as usize / dtype.size())
}

/// A constant operand given as an attribute before `since` and as input `i`
/// from then on.
fn ints_attr_or_input(
    c: &Ctx<'_>,
    n: &Node,
    since: i64,
    name: &str,
    i: usize,
) -> Result<Option<Vec<i64>>> {
    if n.opset < since {
        Ok(n.attr_ints(name)?.map(<[i64]>::to_vec))
    } else {
        c.const_ints(n, i, name)
    }
}

pub(super) fn flatten(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    let r = xs.len() as i64;
    let axis = n.attr_int("axis", 1)?;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(n.err(format!("axis {axis} is out of range for rank {r}")));
    }
    let (head, tail) = xs.split_at(a as usize);
    Ok(vec![c.reshape(
        n,
        x,
        vec![head.iter().product(), tail.iter().product()],
    )?])
}

/// Resolves an ONNX Reshape target: `0` copies the input dim (unless
/// `allowzero`), one `-1` is inferred.
fn reshape_target(n: &Node, xs: &[usize], target: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let bad = |why: &str| n.err(format!("cannot reshape {xs:?} to {target:?}: {why}"));
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        out.push(match d {
            -1 if infer.is_some() => return Err(bad("more than one -1")),
            -1 => {
                infer = Some(i);
                1
            }
            0 if !allowzero => *xs
                .get(i)
                .ok_or_else(|| bad("0 copies a dim the input does not have"))?,
            d if d < 0 => return Err(bad("negative dim")),
            d => d as usize,
        });
    }
    let numel: u128 = xs.iter().map(|&d| d as u128).product();
    let known = out
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128));
    if let Some(i) = infer {
        match known {
            Some(k) if k != 0 && numel.is_multiple_of(k) => out[i] = (numel / k) as usize,
            _ => return Err(bad("the -1 dim cannot be inferred")),
        }
    } else if known != Some(numel) {
        return Err(bad("element counts differ"));
    }
    Ok(out)
}

pub(super) fn reshape(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let target = c
        .const_ints(n, 1, "shape")?
        .ok_or_else(|| n.err("input 'shape' is missing"))?;
    let shape = reshape_target(n, &c.shape(x), &target, n.attr_bool("allowzero", false)?)?;
    Ok(vec![c.reshape(n, x, shape)?])
}

pub(super) fn transpose(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let rank = c.ty(x).rank();
    let perm = match n.attr_ints("perm")? {
        None => (0..rank).rev().collect(),
        Some(p) => {
            let perm = sizes(n, "perm", p)?;
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..rank).collect::<Vec<_>>() {
                return Err(n.err(format!("perm {p:?} is not a permutation of 0..{rank}")));
            }
            perm
        }
    };
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(vec![x]);
    }
    Ok(vec![c.op(n, Op::Transpose { perm }, &[x])?])
}

pub(super) fn squeeze(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    let axes = match ints_attr_or_input(c, n, 13, "axes", 1)? {
        Some(a) => n.axes(&a, xs.len())?,
        None => (0..xs.len()).filter(|&i| xs[i] == 1).collect(),
    };
    if let Some(&a) = axes.iter().find(|&&a| xs[a] != 1) {
        return Err(n.err(format!(
            "cannot squeeze axis {a} of size {} (input shape {xs:?})",
            xs[a]
        )));
    }
    let shape = (0..xs.len())
        .filter(|i| !axes.contains(i))
        .map(|i| xs[i])
        .collect();
    Ok(vec![c.reshape(n, x, shape)?])
}

pub(super) fn unsqueeze(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    let axes =
        ints_attr_or_input(c, n, 13, "axes", 1)?.ok_or_else(|| n.err("'axes' is missing"))?;
    let rank = xs.len() + axes.len();
    let axes = n.axes(&axes, rank)?;
    let mut dims = xs.iter();
    let shape = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                dims.next().copied().unwrap_or(1)
            }
        })
        .collect();
    Ok(vec![c.reshape(n, x, shape)?])
}

pub(super) fn concat(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let args = (0..n.p.input.len())
        .map(|i| c.input(n, i))
        .collect::<Result<Vec<_>>>()?;
    let first = *args
        .first()
        .ok_or_else(|| n.err("needs at least one input"))?;
    let axis = n
        .attr_int_opt("axis")?
        .ok_or_else(|| n.err("attribute 'axis' is missing"))?;
    let axis = n.axis(axis, c.ty(first).rank())?;
    if args.len() == 1 {
        return Ok(args);
    }
    Ok(vec![c.op(n, Op::Concat { axis }, &args)?])
}

/// One slice along `axis` (all other dims whole).
fn slice_axis(
    c: &mut Ctx<'_>,
    n: &Node,
    x: ValueId,
    axis: usize,
    start: usize,
    count: usize,
) -> Result<ValueId> {
    let mut dims: Vec<SliceDim> = c
        .shape(x)
        .iter()
        .map(|&d| SliceDim {
            start: 0,
            step: 1,
            count: d,
        })
        .collect();
    dims[axis] = SliceDim {
        start: if count == 0 { 0 } else { start },
        step: 1,
        count,
    };
    c.op(n, Op::Slice { dims }, &[x])
}

/// Split into one Slice per output: sizes from the `split` attribute (< 13)
/// or input (>= 13), `num_outputs` (>= 18), or equal parts.
pub(super) fn split(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    let axis = n.axis(n.attr_int("axis", 0)?, xs.len())?;
    let d = xs[axis];
    let outs = n.p.output.len();
    if outs == 0 {
        return Err(n.err("has no outputs"));
    }
    let parts = if let Some(s) = ints_attr_or_input(c, n, 13, "split", 1)? {
        let s = sizes(n, "split", &s)?;
        if s.len() != outs || s.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(d) {
            return Err(n.err(format!(
                "split {s:?} does not divide dim {axis} of size {d} into {outs} outputs"
            )));
        }
        s
    } else if let Some(k) = n.attr_int_opt("num_outputs")? {
        if k != outs as i64 {
            return Err(n.err(format!("num_outputs = {k} but the node has {outs} outputs")));
        }
        // The last chunk may be smaller.
        let chunk = d.div_ceil(outs);
        let rest = d.checked_sub(chunk * (outs - 1)).ok_or_else(|| {
            n.err(format!(
                "cannot split dim {axis} of size {d} into {outs} chunks of {chunk}"
            ))
        })?;
        let mut s = vec![chunk; outs - 1];
        s.push(rest);
        s
    } else {
        if !d.is_multiple_of(outs) {
            return Err(n.err(format!(
                "dim {axis} of size {d} does not split evenly into {outs} outputs"
            )));
        }
        vec![d / outs; outs]
    };
    let mut start = 0;
    let mut res = Vec::with_capacity(outs);
    for s in parts {
        res.push(slice_axis(c, n, x, axis, start, s)?);
        start += s;
    }
    Ok(res)
}

/// Resolves one ONNX Slice axis (negative indices wrap once, then clamp).
fn slice_dim(d: usize, start: i64, end: i64, step: i64) -> SliceDim {
    let (d, step128) = (d as i128, step as i128);
    let (mut s, mut e) = (start as i128, end as i128);
    if s < 0 {
        s += d;
    }
    if e < 0 {
        e += d;
    }
    let (s, count) = if step > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        (
            s,
            if e > s {
                (e - s + step128 - 1) / step128
            } else {
                0
            },
        )
    } else {
        let (s, e) = (s.max(0).min(d - 1), e.max(-1).min(d - 1));
        (
            s,
            if s > e {
                (s - e - step128 - 1) / -step128
            } else {
                0
            },
        )
    };
    // With fewer than two elements the step is irrelevant; 1 keeps absurd
    // steps (i64::MAX) out of later stride arithmetic.
    SliceDim {
        start: if count > 0 { s as usize } else { 0 },
        step: if count > 1 { step } else { 1 },
        count: count as usize,
    }
}

pub(super) fn slice(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    let (starts, ends, axes, steps) = if n.opset < 10 {
        let get = |name| n.attr_ints(name).map(|v| v.map(<[i64]>::to_vec));
        (get("starts")?, get("ends")?, get("axes")?, None)
    } else {
        (
            c.const_ints(n, 1, "starts")?,
            c.const_ints(n, 2, "ends")?,
            c.const_ints(n, 3, "axes")?,
            c.const_ints(n, 4, "steps")?,
        )
    };
    let starts = starts.ok_or_else(|| n.err("'starts' is missing"))?;
    let ends = ends.ok_or_else(|| n.err("'ends' is missing"))?;
    let k = starts.len();
    let axes = axes.unwrap_or_else(|| (0..k as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; k]);
    if ends.len() != k || axes.len() != k || steps.len() != k {
        return Err(n.err(format!(
            "starts, ends, axes and steps differ in length ({k}, {}, {}, {})",
            ends.len(),
            axes.len(),
            steps.len()
        )));
    }
    let axes = n.axes(&axes, xs.len())?;
    let mut dims: Vec<SliceDim> = xs
        .iter()
        .map(|&d| SliceDim {
            start: 0,
            step: 1,
            count: d,
        })
        .collect();
    for i in 0..k {
        if steps[i] == 0 {
            return Err(n.err("steps must be non-zero"));
        }
        dims[axes[i]] = slice_dim(xs[axes[i]], starts[i], ends[i], steps[i]);
    }
    if dims
        .iter()
        .zip(&xs)
        .all(|(s, &d)| s.step == 1 && s.count == d)
    {
        return Ok(vec![x]);
    }
    Ok(vec![c.op(n, Op::Slice { dims }, &[x])?])
}

/// Constant indices (numpy-style, negatives wrap once) must lie in the axis.
fn check_const_indices(c: &Ctx<'_>, n: &Node, idx: ValueId, axis: usize, dim: usize) -> Result<()> {
    if let Some(v) = c.as_const(idx).and_then(|t| t.to_i64_vec()) {
        let d = dim as i64;
        if let Some(bad) = v.iter().find(|&&i| i < -d || i >= d) {
            return Err(n.err(format!(
                "index {bad} is out of range for axis {axis} of size {d}"
            )));
        }
    }
    Ok(())
}

pub(super) fn gather(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let idx = c.input(n, 1)?;
    let xs = c.shape(x);
    let axis = n.axis(n.attr_int("axis", 0)?, xs.len())?;
    check_const_indices(c, n, idx, axis, xs[axis])?;
    Ok(vec![c.op(n, Op::Gather { axis }, &[x, idx])?])
}

pub(super) fn gather_elements(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let idx = c.input(n, 1)?;
    let xs = c.shape(x);
    let axis = n.axis(n.attr_int("axis", 0)?, xs.len())?;
    check_const_indices(c, n, idx, axis, xs[axis])?;
    Ok(vec![c.op(n, Op::GatherElements { axis }, &[x, idx])?])
}

/// Expand broadcasts both ways: the result is broadcast(input, shape).
pub(super) fn expand(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let target = c
        .const_ints(n, 1, "shape")?
        .ok_or_else(|| n.err("input 'shape' is missing"))?;
    let target = sizes(n, "shape", &target)?;
    let xs = c.shape(x);
    let shape = broadcast_shapes(&xs, &target).map_err(|e| n.err(e))?;
    if shape == xs {
        return Ok(vec![x]);
    }
    checked_numel(n, c.ty(x).dtype, &shape)?;
    Ok(vec![c.op(n, Op::Expand { shape }, &[x])?])
}

pub(super) fn tile(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let reps = c
        .const_ints(n, 1, "repeats")?
        .ok_or_else(|| n.err("input 'repeats' is missing"))?;
    let repeats = sizes(n, "repeats", &reps)?;
    let xs = c.shape(x);
    if repeats.len() != xs.len() {
        return Err(n.err(format!(
            "repeats {reps:?} should have one entry per input dim ({})",
            xs.len()
        )));
    }
    let out = xs
        .iter()
        .zip(&repeats)
        .map(|(&d, &r)| d.checked_mul(r))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| n.err(format!("tiling {xs:?} by {reps:?} is too large")))?;
    checked_numel(n, c.ty(x).dtype, &out)?;
    Ok(vec![c.op(n, Op::Tile { repeats }, &[x])?])
}

/// Trilu: keeps the upper (j − i ≥ k) or lower (j − i ≤ k) triangle of the
/// last two dims, zeroing the rest through `where` with a constant mask.
pub(super) fn trilu(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    if xs.len() < 2 {
        return Err(n.err(format!("input of shape {xs:?} needs rank >= 2")));
    }
    let k = match c.const_ints(n, 1, "k")? {
        None => 0,
        Some(v) if v.len() == 1 => v[0],
        Some(v) => return Err(n.err(format!("input 'k' must have one element, has {}", v.len()))),
    };
    let upper = n.attr_bool("upper", true)?;
    let (rows, cols) = (xs[xs.len() - 2], xs[xs.len() - 1]);
    let mut keep = Vec::with_capacity(rows * cols);
    for i in 0..rows as i64 {
        for j in 0..cols as i64 {
            let d = (j - i) as i128 - k as i128;
            keep.push(if upper { d >= 0 } else { d <= 0 });
        }
    }
    let mask = Tensor::bool(vec![rows, cols], keep).map_err(|e| n.err(e))?;
    let mask = c.constant(n, mask);
    let zero = c.scalar(n, c.ty(x).dtype, 0.0);
    Ok(vec![c.op(n, Op::Where, &[mask, x, zero])?])
}

/// DepthToSpace (DCR or CRD) and SpaceToDepth (DCR, or CRD from opset 28)
/// as reshape → transpose → reshape on NCHW.
pub(super) fn depth_space(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    if xs.len() != 4 {
        return Err(n.err(format!("input of shape {xs:?} must be 4-D (NCHW)")));
    }
    let b = n.attr_int("blocksize", 0)?;
    if b <= 0 {
        return Err(n.err(format!("attribute 'blocksize' = {b} must be positive")));
    }
    let b = b as usize;
    let crd = match n.attr_string("mode", "DCR")?.as_str() {
        "DCR" => false,
        "CRD" => true,
        other => return Err(n.unsupported_attr("mode", format!("{other:?}"))),
    };
    let (nn, ch, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (split, perm, out) = if n.op == "DepthToSpace" {
        if ch % (b * b) != 0 {
            return Err(n.err(format!(
                "{ch} channels are not a multiple of blocksize² = {}",
                b * b
            )));
        }
        let c2 = ch / (b * b);
        if crd {
            (
                vec![nn, c2, b, b, h, w],
                vec![0, 1, 4, 2, 5, 3],
                vec![nn, c2, h * b, w * b],
            )
        } else {
            (
                vec![nn, b, b, c2, h, w],
                vec![0, 3, 4, 1, 5, 2],
                vec![nn, c2, h * b, w * b],
            )
        }
    } else {
        if h % b != 0 || w % b != 0 {
            return Err(n.err(format!(
                "spatial dims {h}x{w} are not multiples of blocksize {b}"
            )));
        }
        let split = vec![nn, ch, h / b, b, w / b, b];
        let out = vec![nn, ch * b * b, h / b, w / b];
        if crd {
            (split, vec![0, 1, 3, 5, 2, 4], out)
        } else {
            (split, vec![0, 3, 5, 1, 2, 4], out)
        }
    };
    let r = c.reshape(n, x, split)?;
    let t = c.op(n, Op::Transpose { perm }, &[r])?;
    Ok(vec![c.reshape(n, t, out)?])
}

/// EyeLike: a constant identity (shifted by k) of the input's 2-D shape.
pub(super) fn eye_like(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    if xs.len() != 2 {
        return Err(n.err(format!("input of shape {xs:?} must be 2-D")));
    }
    let dtype = match n.attr_int_opt("dtype")? {
        None => c.ty(x).dtype,
        Some(code) => i32::try_from(code)
            .ok()
            .and_then(crate::tensor::const_dtype)
            .ok_or_else(|| n.err(format!("dtype {code} is not supported")))?,
    };
    let k = n.attr_int("k", 0)?;
    let (r, cols) = (xs[0], xs[1]);
    let on = |i: usize, j: usize| j as i64 - i as i64 == k;
    let data = match dtype {
        DType::F32 => TensorData::F32(
            (0..r * cols)
                .map(|p| on(p / cols, p % cols) as u8 as f32)
                .collect(),
        ),
        DType::I64 => TensorData::I64(
            (0..r * cols)
                .map(|p| on(p / cols, p % cols) as i64)
                .collect(),
        ),
        DType::Bool => TensorData::Bool((0..r * cols).map(|p| on(p / cols, p % cols)).collect()),
    };
    let t = Tensor::new(xs, data).map_err(|e| n.err(e))?;
    Ok(vec![c.constant(n, t)])
}

/// MeanVarianceNormalization: (x − mean) / sqrt(mean((x − mean)²)) over
/// `axes` (default [0, 2, 3]).
pub(super) fn mvn(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let rank = c.ty(x).rank();
    let axes = n.attr_ints("axes")?.map_or(vec![0, 2, 3], <[i64]>::to_vec);
    let mut axes = n.axes(&axes, rank)?;
    axes.sort_unstable();
    let mean = reduce_axes(c, n, ReduceOp::Mean, axes.clone(), true, x)?;
    let d = c.binary(n, BinaryOp::Sub, x, mean)?;
    let d2 = c.binary(n, BinaryOp::Mul, d, d)?;
    let var = reduce_axes(c, n, ReduceOp::Mean, axes, true, d2)?;
    let sd = c.op(n, Op::Unary(UnaryOp::Sqrt), &[var])?;
    Ok(vec![c.binary(n, BinaryOp::Div, d, sd)?])
}

/// CenterCropPad: per axis, crop a centered window or pad evenly (the extra
/// element of an odd difference goes to the end) to the constant `shape`.
pub(super) fn center_crop_pad(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    let r = xs.len();
    let target = c
        .const_ints(n, 1, "shape")?
        .ok_or_else(|| n.err("input 'shape' is missing"))?;
    let axes = match n.attr_ints("axes")? {
        Some(a) => n.axes(a, r)?,
        None => (0..r).collect(),
    };
    if target.len() != axes.len() {
        return Err(n.err(format!(
            "shape {target:?} has {} entries for {} axes",
            target.len(),
            axes.len()
        )));
    }
    let target = sizes(n, "shape", &target)?;
    let mut dims: Vec<SliceDim> = xs
        .iter()
        .map(|&d| SliceDim {
            start: 0,
            step: 1,
            count: d,
        })
        .collect();
    let mut pads = vec![0i64; 2 * r];
    for (&a, &t) in axes.iter().zip(&target) {
        let d = xs[a];
        if t < d {
            dims[a] = SliceDim {
                start: (d - t) / 2,
                step: 1,
                count: t,
            };
        } else if t > d {
            pads[a] = ((t - d) / 2) as i64;
            pads[a + r] = (t - d - (t - d) / 2) as i64;
        }
    }
    let mut y = x;
    if dims.iter().zip(&xs).any(|(s, &d)| s.count != d) {
        y = c.op(n, Op::Slice { dims }, &[y])?;
    }
    if pads.iter().any(|&p| p != 0) {
        y = c.op(
            n,
            Op::Pad {
                pads,
                mode: PadMode::Constant,
                value: 0.0.into(),
            },
            &[y],
        )?;
    }
    Ok(vec![y])
}

/// OneHot: `values[1]` where the index (negative counts from the end) equals
/// the position along the new axis of size `depth`, `values[0]` elsewhere.
pub(super) fn one_hot(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let idx = c.input(n, 0)?;
    let values = c.input(n, 2)?;
    let depth = c
        .const_scalar(n, 1, "depth")?
        .ok_or_else(|| n.err("input 'depth' is missing"))?;
    if !(depth >= 1.0 && depth <= MAX_ATTR_DIM as f64) {
        return Err(n.err(format!("depth {depth} must be a positive size")));
    }
    let depth = depth as usize;
    if c.shape(values) != [2] {
        return Err(n.err(format!(
            "values of shape {:?} should be [2]",
            c.shape(values)
        )));
    }
    let is = c.shape(idx);
    let r = is.len();
    let a = n.attr_int("axis", -1)?;
    let axis = if a < 0 { a + r as i64 + 1 } else { a };
    if !(0..=r as i64).contains(&axis) {
        return Err(n.err(format!(
            "axis {a} is out of range for output rank {}",
            r + 1
        )));
    }
    let axis = axis as usize;
    let idx = match c.ty(idx).dtype {
        DType::I64 => idx,
        DType::F32 => c.op(n, Op::Cast { to: DType::I64 }, &[idx])?,
        t => return Err(n.err(format!("indices of type {t} are not supported"))),
    };
    let d = c.scalar(n, DType::I64, depth as f64);
    let zero = c.scalar(n, DType::I64, 0.0);
    let neg = c.binary(n, BinaryOp::Less, idx, zero)?;
    let wrapped = c.binary(n, BinaryOp::Add, idx, d)?;
    let idx = c.op(n, Op::Where, &[neg, wrapped, idx])?;
    let mut us = is.clone();
    us.insert(axis, 1);
    let idx = c.reshape(n, idx, us)?;
    let mut ishape = vec![1; r + 1];
    ishape[axis] = depth;
    let iota = Tensor::i64(ishape, (0..depth as i64).collect()).map_err(|e| n.err(e))?;
    let iota = c.constant(n, iota);
    let hot = c.binary(n, BinaryOp::Equal, idx, iota)?;
    let pick = |c: &mut Ctx<'_>, i: i64| -> Result<ValueId> {
        let t = Tensor::i64(vec![], vec![i]).map_err(|e| n.err(e))?;
        let k = c.constant(n, t);
        c.op(n, Op::Gather { axis: 0 }, &[values, k])
    };
    let (off, on) = (pick(c, 0)?, pick(c, 1)?);
    Ok(vec![c.op(n, Op::Where, &[hot, on, off])?])
}

/// Compress: the slices along `axis` (of the flattened input without one)
/// whose constant condition is true.
pub(super) fn compress(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let mut x = c.input(n, 0)?;
    let cond = c
        .const_input(n, 1, "condition")?
        .ok_or_else(|| n.err("input 'condition' is missing"))?;
    let cond: Vec<bool> = match cond.as_bool() {
        Some(v) => v.to_vec(),
        None => cond
            .to_i64_vec()
            .ok_or_else(|| n.err("condition must be bool"))?
            .iter()
            .map(|&v| v != 0)
            .collect(),
    };
    let axis = match n.attr_int_opt("axis")? {
        Some(a) => n.axis(a, c.ty(x).rank())?,
        None => {
            let total = c.ty(x).numel();
            x = c.reshape(n, x, vec![total])?;
            0
        }
    };
    let len = c.shape(x)[axis];
    if cond.len() > len && cond[len..].iter().any(|&b| b) {
        return Err(n.err(format!(
            "condition selects index {} beyond the axis size {len}",
            len + cond[len..].iter().position(|&b| b).unwrap_or(0)
        )));
    }
    let keep: Vec<i64> = (0..len.min(cond.len()))
        .filter(|&i| cond[i])
        .map(|i| i as i64)
        .collect();
    let k = keep.len();
    let t = Tensor::i64(vec![k], keep).map_err(|e| n.err(e))?;
    let t = c.constant(n, t);
    Ok(vec![c.op(n, Op::Gather { axis }, &[x, t])?])
}

/// Pad: attributes before opset 11, inputs (pads, constant_value, axes) after.
pub(super) fn pad(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let r = c.ty(x).rank();
    let mode = match n.attr_string("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        other => return Err(n.unsupported_attr("mode", format!("{other:?}"))),
    };
    let (pads, value, axes) = if n.opset < 11 {
        (
            n.attr_ints("pads")?.map(<[i64]>::to_vec),
            n.attr_float("value", 0.0)? as f64,
            None,
        )
    } else {
        let value = c.const_scalar(n, 2, "constant_value")?.unwrap_or(0.0);
        (
            c.const_ints(n, 1, "pads")?,
            value,
            c.const_ints(n, 3, "axes")?,
        )
    };
    let pads = pads.ok_or_else(|| n.err("'pads' is missing"))?;
    if let Some(p) = pads.iter().find(|p| p.unsigned_abs() > MAX_ATTR_DIM as u64) {
        return Err(n.err(format!("pad {p} is out of range")));
    }
    let axes = match axes {
        Some(a) => n.axes(&a, r)?,
        None => (0..r).collect(),
    };
    let k = axes.len();
    if pads.len() != 2 * k {
        return Err(n.err(format!("pads {pads:?} should have {} entries", 2 * k)));
    }
    let mut full = vec![0i64; 2 * r];
    for (i, &a) in axes.iter().enumerate() {
        full[a] = pads[i];
        full[a + r] = pads[i + k];
    }
    if full.iter().all(|&p| p == 0) {
        return Ok(vec![x]);
    }
    Ok(vec![c.op(
        n,
        Op::Pad {
            pads: full,
            mode,
            value: (value as f32).into(),
        },
        &[x],
    )?])
}

/// Shape is known statically, so it is always a constant (opset 15 start/end).
pub(super) fn shape(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let xs = c.shape(c.input(n, 0)?);
    let r = xs.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(n.attr_int("start", 0)?);
    let end = clamp(n.attr_int("end", r)?).max(start);
    let dims: Vec<i64> = xs[start..end].iter().map(|&d| d as i64).collect();
    let t = Tensor::i64(vec![dims.len()], dims).map_err(|e| n.err(e))?;
    Ok(vec![c.constant(n, t)])
}

pub(super) fn size(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let numel = c.ty(c.input(n, 0)?).numel() as i64;
    Ok(vec![c.constant(
        n,
        Tensor {
            shape: vec![],
            data: TensorData::I64(vec![numel]),
        },
    )])
}

/// A constant fill: materialized when small, otherwise Expand of a scalar.
pub(super) fn constant_of_shape(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let shape = c
        .const_ints(n, 0, "input")?
        .ok_or_else(|| n.err("input is missing"))?;
    let shape = sizes(n, "shape", &shape)?;
    let value = match n.attr_tensor("value")? {
        Some(t) => {
            from_proto(t, c.base_dir).map_err(|e| n.err(format!("attribute 'value': {e}")))?
        }
        None => Tensor::scalar_f32(0.0),
    };
    if value.numel() != 1 {
        return Err(n.err(format!(
            "attribute 'value' must have one element, has shape {:?}",
            value.shape
        )));
    }
    let numel = checked_numel(n, value.dtype(), &shape)?;
    if numel * value.dtype().size() > FOLD_FREE_BYTES {
        let s = c.constant(
            n,
            Tensor {
                shape: vec![],
                data: value.data,
            },
        );
        return Ok(vec![c.op(n, Op::Expand { shape }, &[s])?]);
    }
    let data = match value.data {
        TensorData::F32(v) => TensorData::F32(vec![v[0]; numel]),
        TensorData::I64(v) => TensorData::I64(vec![v[0]; numel]),
        TensorData::Bool(v) => TensorData::Bool(vec![v[0]; numel]),
    };
    Ok(vec![c.constant(n, Tensor { shape, data })])
}

/// Range from constant scalars, computed here.
pub(super) fn range(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let mut t = Vec::with_capacity(3);
    for (i, what) in [(0, "start"), (1, "limit"), (2, "delta")] {
        let v = c
            .const_input(n, i, what)?
            .ok_or_else(|| n.err(format!("input '{what}' is missing")))?;
        if v.numel() != 1
            || t.first()
                .is_some_and(|f: &Arc<Tensor>| f.dtype() != v.dtype())
        {
            return Err(n.err("start, limit and delta must be scalars of one type"));
        }
        t.push(v);
    }
    let too_big = || n.err("Range result is too large to materialize");
    let max_numel = |size: usize| FOLD_MAX_BYTES / size;
    let data = match (&t[0].data, &t[1].data, &t[2].data) {
        (TensorData::I64(s), TensorData::I64(l), TensorData::I64(d)) => {
            let (s, l, d) = (s[0] as i128, l[0] as i128, d[0] as i128);
            if d == 0 {
                return Err(n.err("delta must be non-zero"));
            }
            let diff = l - s;
            let mut count = diff / d;
            if diff % d != 0 && (diff > 0) == (d > 0) {
                count += 1;
            }
            let count = count.max(0);
            if count > max_numel(8) as i128 {
                return Err(too_big());
            }
            TensorData::I64((0..count).map(|i| (s + i * d) as i64).collect())
        }
        (TensorData::F32(s), TensorData::F32(l), TensorData::F32(d)) => {
            let (s, l, d) = (s[0], l[0], d[0]);
            let count = ((l as f64 - s as f64) / d as f64).ceil();
            if d == 0.0 || !count.is_finite() {
                return Err(n.err("start, limit and delta must be finite with non-zero delta"));
            }
            let count = count.max(0.0);
            if count > max_numel(4) as f64 {
                return Err(too_big());
            }
            TensorData::F32((0..count as usize).map(|i| s + i as f32 * d).collect())
        }
        _ => return Err(n.err(format!("Range of {} is not supported", t[0].dtype()))),
    };
    let len = data.len();
    Ok(vec![c.constant(
        n,
        Tensor::new(vec![len], data).map_err(|e| n.err(e))?,
    )])
}

pub(super) fn constant(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let t = if let Some(t) = n.attr_tensor("value")? {
        from_proto(t, c.base_dir).map_err(|e| n.err(format!("attribute 'value': {e}")))?
    } else if let Some(v) = n.attr_float_opt("value_float")? {
        Tensor::scalar_f32(v)
    } else if let Some(v) = n.attr_floats("value_floats")? {
        Tensor {
            shape: vec![v.len()],
            data: TensorData::F32(v.to_vec()),
        }
    } else if let Some(v) = n.attr_int_opt("value_int")? {
        Tensor {
            shape: vec![],
            data: TensorData::I64(vec![v]),
        }
    } else if let Some(v) = n.attr_ints("value_ints")? {
        Tensor {
            shape: vec![v.len()],
            data: TensorData::I64(v.to_vec()),
        }
    } else {
        let other = ["sparse_value", "value_string", "value_strings"]
            .into_iter()
            .find(|a| n.has_attr(a));
        return Err(match other {
            Some(a) => n.err(format!("attribute '{a}' is not supported")),
            None => n.err("has no value attribute"),
        });
    };
    Ok(vec![c.constant(n, t)])
}

/// Reduce*: axes from the attribute before opset 13 (ReduceSum) or 18
/// (the others), from input 1 after; no axes means all (or none with
/// `noop_with_empty_axes`).
pub(super) fn reduce(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let op = match n.op {
        "ReduceLogSum" => ReduceOp::Sum,
        "ReduceMean" => ReduceOp::Mean,
        "ReduceSum" => ReduceOp::Sum,
        "ReduceMax" => ReduceOp::Max,
        "ReduceMin" => ReduceOp::Min,
        "ReduceProd" => ReduceOp::Prod,
        "ReduceL1" => ReduceOp::L1,
        "ReduceL2" => ReduceOp::L2,
        "ReduceSumSquare" => ReduceOp::SumSquare,
        "ReduceLogSumExp" => ReduceOp::LogSumExp,
        other => return Err(n.err(format!("no reduction mapping for {other}"))),
    };
    let x = c.input(n, 0)?;
    let rank = c.ty(x).rank();
    let since = if op == ReduceOp::Sum { 13 } else { 18 };
    let axes = ints_attr_or_input(c, n, since, "axes", 1)?.unwrap_or_default();
    let keepdims = n.attr_bool("keepdims", true)?;
    let mut axes = if axes.is_empty() {
        if n.attr_bool("noop_with_empty_axes", false)? {
            return Ok(vec![x]);
        }
        (0..rank).collect()
    } else {
        n.axes(&axes, rank)?
    };
    axes.sort_unstable();
    let xs = c.shape(x);
    let dtype = c.ty(x).dtype;
    if axes.iter().any(|&a| xs[a] == 0) {
        // A reduction over an empty set gives the operation's identity.
        let out: Vec<usize> = (0..rank)
            .filter_map(|i| match axes.contains(&i) {
                true if keepdims => Some(1),
                true => None,
                false => Some(xs[i]),
            })
            .collect();
        let v = match (n.op, dtype) {
            ("ReduceProd", _) => 1.0,
            ("ReduceMax", DType::Bool) => 0.0,
            ("ReduceMin", DType::Bool) => 1.0,
            ("ReduceMax", DType::I64) => i64::MIN as f64,
            ("ReduceMin", DType::I64) => i64::MAX as f64,
            ("ReduceMax" | "ReduceLogSum" | "ReduceLogSumExp", _) => f64::NEG_INFINITY,
            ("ReduceMin", _) => f64::INFINITY,
            ("ReduceMean", _) => f64::NAN,
            _ => 0.0,
        };
        let t = c.scalar(n, dtype, v);
        return Ok(vec![c.op(n, Op::Expand { shape: out }, &[t])?]);
    }
    if dtype == DType::Bool && matches!(op, ReduceOp::Max | ReduceOp::Min) {
        // any / all through int64.
        let xi = c.op(n, Op::Cast { to: DType::I64 }, &[x])?;
        let r = reduce_axes(c, n, op, axes, keepdims, xi)?;
        return Ok(vec![c.op(n, Op::Cast { to: DType::Bool }, &[r])?]);
    }
    let r = reduce_axes(c, n, op, axes, keepdims, x)?;
    if n.op == "ReduceLogSum" {
        return Ok(vec![c.op(n, Op::Unary(UnaryOp::Log), &[r])?]);
    }
    Ok(vec![r])
}

/// A reduction over sorted `axes`. The kernels reduce one contiguous block
/// of axes, so scattered axes are first transposed to the end (the kept
/// dims keep their order, so the keepdims shape is a reshape away).
pub(super) fn reduce_axes(
    c: &mut Ctx<'_>,
    n: &Node,
    op: ReduceOp,
    axes: Vec<usize>,
    keepdims: bool,
    x: ValueId,
) -> Result<ValueId> {
    let adjacent = axes.is_empty() || axes[axes.len() - 1] - axes[0] + 1 == axes.len();
    if adjacent || c.as_const(x).is_some() {
        return c.op(n, Op::Reduce { op, axes, keepdims }, &[x]);
    }
    let xs = c.shape(x);
    let r = xs.len();
    let mut perm: Vec<usize> = (0..r).filter(|d| !axes.contains(d)).collect();
    let kept = perm.len();
    perm.extend(&axes);
    let t = c.op(n, Op::Transpose { perm }, &[x])?;
    let red = c.op(
        n,
        Op::Reduce {
            op,
            axes: (kept..r).collect(),
            keepdims: false,
        },
        &[t],
    )?;
    if !keepdims {
        return Ok(red);
    }
    let shape = (0..r)
        .map(|d| if axes.contains(&d) { 1 } else { xs[d] })
        .collect();
    c.reshape(n, red, shape)
}

/// ArgMax, and ArgMin as ArgMax of the negation.
pub(super) fn arg_max(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let mut x = c.input(n, 0)?;
    let axis = n.axis(n.attr_int("axis", 0)?, c.ty(x).rank())?;
    let keepdims = n.attr_bool("keepdims", true)?;
    let select_last = n.attr_bool("select_last_index", false)?;
    if n.op == "ArgMin" {
        x = c.op(n, Op::Unary(UnaryOp::Neg), &[x])?;
    }
    Ok(vec![c.op(
        n,
        Op::ArgMax {
            axis,
            keepdims,
            select_last,
        },
        &[x],
    )?])
}

#[cfg(test)]
mod tests {
    use super::slice_dim;

    fn idx(d: usize, s: i64, e: i64, st: i64) -> Vec<i64> {
        let sd = slice_dim(d, s, e, st);
        (0..sd.count as i64)
            .map(|i| sd.start as i64 + i * sd.step)
            .collect()
    }

    #[test]
    fn slice_clamping_matches_numpy() {
        assert_eq!(idx(5, 1, 3, 1), vec![1, 2]);
        assert_eq!(idx(5, -2, i64::MAX, 1), vec![3, 4]);
        assert_eq!(idx(5, 0, 5, 2), vec![0, 2, 4]);
        assert_eq!(idx(5, -1, i64::MIN, -1), vec![4, 3, 2, 1, 0]);
        assert_eq!(idx(5, 10, -10, -2), vec![4, 2, 0]);
        assert_eq!(idx(5, 3, 3, 1), Vec::<i64>::new());
        assert_eq!(idx(0, 0, -1, -1), Vec::<i64>::new());
        assert_eq!(idx(5, i64::MIN, i64::MAX, i64::MAX), vec![0]);
        assert_eq!(slice_dim(5, 0, 1, i64::MAX).step, 1);
    }
}
