//! Neural-network ops: convolution, pooling, normalization, softmax, GEMM.

use crate::builder::Ctx;
use crate::node::{Node, Result};
use nnc_compiler::ir::{
    BinaryOp, DType, Op, PadMode, PoolKind, ReduceOp, SliceDim, Tensor, UnaryOp, ValueId, Window,
};

/// Reads strides/dilations/pads/auto_pad (and ceil_mode for pools) into a
/// [`Window`] for input shape `x`, resolving SAME padding to explicit pads.
fn window(n: &Node, x: &[usize], kernel: Vec<usize>, pool: bool) -> Result<Window> {
    let sr = kernel.len();
    if x.len() != sr + 2 {
        return Err(n.err(format!(
            "input of shape {x:?} needs rank {} for a {sr}-D kernel",
            sr + 2
        )));
    }
    let list = |name: &str, len: usize, default: usize, positive: bool| -> Result<Vec<usize>> {
        let v = n.attr_dims(name)?.unwrap_or_else(|| vec![default; len]);
        if v.len() != len {
            return Err(n.err(format!(
                "attribute '{name}' = {v:?} should have {len} entries"
            )));
        }
        if positive && v.contains(&0) {
            return Err(n.err(format!("attribute '{name}' = {v:?} must be positive")));
        }
        Ok(v)
    };
    let strides = list("strides", sr, 1, true)?;
    let dilations = list("dilations", sr, 1, true)?;
    let mut pads = list("pads", 2 * sr, 0, false)?;
    if kernel.contains(&0) {
        return Err(n.err(format!("kernel shape {kernel:?} must be positive")));
    }
    match n.attr_string("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" => {}
        "VALID" => pads.fill(0),
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            for i in 0..sr {
                let input = x[i + 2];
                let out = input.div_ceil(strides[i]);
                let eff_k = dilations[i] * (kernel[i] - 1) + 1;
                let total = ((out.max(1) - 1) * strides[i] + eff_k).saturating_sub(input);
                let small = total / 2;
                let (begin, end) = if mode == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                pads[i] = begin;
                pads[i + sr] = end;
            }
        }
        other => return Err(n.unsupported_attr("auto_pad", format!("{other:?}"))),
    }
    let ceil_mode = pool && n.attr_bool("ceil_mode", false)?;
    Ok(Window {
        kernel,
        strides,
        dilations,
        pads,
        ceil_mode,
    })
}

pub(super) fn conv(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let w = c.input(n, 1)?;
    let b = c.opt_input(n, 2)?;
    let ws = c.shape(w);
    if ws.len() < 3 {
        return Err(n.err(format!("weight of shape {ws:?} must have rank >= 3")));
    }
    let kernel = ws[2..].to_vec();
    if let Some(k) = n.attr_dims("kernel_shape")? {
        if k != kernel {
            return Err(n.err(format!(
                "attribute 'kernel_shape' = {k:?} disagrees with weight shape {ws:?}"
            )));
        }
    }
    let group = n.attr_int("group", 1)?;
    if group <= 0 {
        return Err(n.err(format!("attribute 'group' = {group} must be positive")));
    }
    let window = window(n, &c.shape(x), kernel, false)?;
    let mut args = vec![x, w];
    args.extend(b);
    Ok(vec![c.op(
        n,
        Op::Conv {
            window,
            group: group as usize,
        },
        &args,
    )?])
}

/// ConvTranspose, lowered to a convolution: the input is upsampled by
/// inserting `stride − 1` zeros between elements (reshape + pad), padded by
/// `dilation·(k − 1) − pad` (negative pads crop), and convolved at stride 1
/// with the kernel transposed per group ([C_in, C_out/g, k…] → [C_out,
/// C_in/g, k…]) and flipped spatially. Output size, `output_padding`,
/// `output_shape` and `auto_pad` follow ONNX's reference.
pub(super) fn conv_transpose(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let w = c.input(n, 1)?;
    let b = c.opt_input(n, 2)?;
    let (xs, ws) = (c.shape(x), c.shape(w));
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(n.err(format!(
            "input {xs:?} and weight {ws:?} need equal rank >= 3"
        )));
    }
    let sr = xs.len() - 2;
    let group = n.attr_int("group", 1)?;
    if group <= 0 || xs[1] as i64 % group != 0 || ws[0] != xs[1] {
        return Err(n.err(format!(
            "group {group} and weight {ws:?} do not fit {} input channels",
            xs[1]
        )));
    }
    let g = group as usize;
    let kernel = ws[2..].to_vec();
    if kernel.contains(&0) {
        return Err(n.err(format!("weight shape {ws:?} has an empty kernel")));
    }
    if let Some(k) = n.attr_dims("kernel_shape")? {
        if k != kernel {
            return Err(n.err(format!(
                "attribute 'kernel_shape' = {k:?} disagrees with weight shape {ws:?}"
            )));
        }
    }
    let list = |name: &str, len: usize, default: usize| -> Result<Vec<usize>> {
        let v = n.attr_dims(name)?.unwrap_or_else(|| vec![default; len]);
        if v.len() != len {
            return Err(n.err(format!(
                "attribute '{name}' = {v:?} should have {len} entries"
            )));
        }
        Ok(v)
    };
    let strides = list("strides", sr, 1)?;
    let dil = list("dilations", sr, 1)?;
    if strides.contains(&0) || dil.contains(&0) {
        return Err(n.err("strides and dilations must be positive"));
    }
    let out_pad = list("output_padding", sr, 0)?;
    let pads = list("pads", 2 * sr, 0)?;
    let out_shape = n.attr_dims("output_shape")?.map(|v| {
        if v.len() == sr + 2 {
            v[2..].to_vec()
        } else {
            v
        }
    });
    if out_shape.as_ref().is_some_and(|v| v.len() != sr) {
        return Err(n.err(format!("attribute 'output_shape' should have {sr} entries")));
    }
    let auto_pad = n.attr_string("auto_pad", "NOTSET")?;
    let mut out = Vec::with_capacity(sr);
    let mut pad_begin = Vec::with_capacity(sr);
    for i in 0..sr {
        let ext = (dil[i] * (kernel[i] - 1)) as i64;
        let full = (strides[i] * (xs[i + 2].max(1) - 1) + out_pad[i]) as i64 + ext + 1;
        let (pb, o) = match auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => {
                let o = out_shape
                    .as_ref()
                    .map_or((xs[i + 2] * strides[i]) as i64, |v| v[i] as i64);
                let total = full - o;
                let half = total.div_euclid(2);
                let pb = if auto_pad == "SAME_UPPER" {
                    half
                } else {
                    total - half
                };
                (pb, o)
            }
            "VALID" => (0, out_shape.as_ref().map_or(full, |v| v[i] as i64)),
            "NOTSET" => {
                let pb = pads[i] as i64;
                let o = out_shape
                    .as_ref()
                    .map_or(full - pb - pads[i + sr] as i64, |v| v[i] as i64);
                (pb, o)
            }
            other => return Err(n.unsupported_attr("auto_pad", format!("{other:?}"))),
        };
        if o <= 0 {
            return Err(n.err(format!("output dim {i} would be {o}")));
        }
        out.push(o);
        pad_begin.push(pb);
    }
    if xs[2..].contains(&0) {
        return Err(n.err(format!("input of shape {xs:?} is empty")));
    }
    // Weight: [C_in, C_out/g, k…] → [C_out, C_in/g, k…], flipped.
    let (cin_g, cout_g) = (xs[1] / g, ws[1]);
    let mut gs = vec![g, cin_g, cout_g];
    gs.extend(&kernel);
    let wg = c.reshape(n, w, gs)?;
    let mut perm: Vec<usize> = (0..sr + 3).collect();
    perm.swap(1, 2);
    let wt = c.op(n, Op::Transpose { perm }, &[wg])?;
    let mut cs = vec![g * cout_g, cin_g];
    cs.extend(&kernel);
    let wc = c.reshape(n, wt, cs.clone())?;
    let dims = cs
        .iter()
        .enumerate()
        .map(|(d, &len)| {
            if d < 2 {
                SliceDim {
                    start: 0,
                    step: 1,
                    count: len,
                }
            } else {
                SliceDim {
                    start: len - 1,
                    step: -1,
                    count: len,
                }
            }
        })
        .collect();
    let wf = c.op(n, Op::Slice { dims }, &[wc])?;
    // Input: zeros between elements, then the convolution's padding.
    let mut u = x;
    if strides.iter().any(|&s| s > 1) {
        let mut split = xs[..2].to_vec();
        for i in 0..sr {
            split.extend([xs[i + 2], 1]);
        }
        let xr = c.reshape(n, x, split.clone())?;
        let rr = split.len();
        let mut p = vec![0i64; 2 * rr];
        for i in 0..sr {
            p[rr + 3 + 2 * i] = strides[i] as i64 - 1;
        }
        let padded = c.op(
            n,
            Op::Pad {
                pads: p,
                mode: PadMode::Constant,
                value: 0.0.into(),
            },
            &[xr],
        )?;
        let mut up = xs[..2].to_vec();
        up.extend((0..sr).map(|i| xs[i + 2] * strides[i]));
        u = c.reshape(n, padded, up)?;
    }
    let mut p = vec![0i64; 2 * (sr + 2)];
    for i in 0..sr {
        let ext = (dil[i] * (kernel[i] - 1)) as i64;
        let begin = ext - pad_begin[i];
        let have = (xs[i + 2] * strides[i]) as i64; // upsampled length incl. trailing zeros
        p[2 + i] = begin;
        p[sr + 4 + i] = out[i] + ext - have - begin;
    }
    let u = if p.iter().any(|&v| v != 0) {
        c.op(
            n,
            Op::Pad {
                pads: p,
                mode: PadMode::Constant,
                value: 0.0.into(),
            },
            &[u],
        )?
    } else {
        u
    };
    let window = Window {
        kernel,
        strides: vec![1; sr],
        dilations: dil,
        pads: vec![0; 2 * sr],
        ceil_mode: false,
    };
    let mut args = vec![u, wf];
    args.extend(b);
    Ok(vec![c.op(n, Op::Conv { window, group: g }, &args)?])
}

/// MaxPool / AveragePool. MaxPool's Indices output is not computed (a
/// node that uses it is refused).
pub(super) fn pool(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let kernel = n
        .attr_dims("kernel_shape")?
        .ok_or_else(|| n.err("attribute 'kernel_shape' is missing"))?;
    let kind = if n.op == "MaxPool" {
        let order = n.attr_int("storage_order", 0)?;
        if order != 0 {
            return Err(n.unsupported_attr("storage_order", order));
        }
        PoolKind::Max
    } else {
        PoolKind::Avg {
            count_include_pad: n.attr_bool("count_include_pad", false)?,
        }
    };
    let window = window(n, &c.shape(x), kernel, true)?;
    Ok(vec![c.op(n, Op::Pool { kind, window }, &[x])?])
}

/// GlobalAveragePool / GlobalMaxPool: a reduction over the spatial axes.
pub(super) fn global_pool(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let rank = c.ty(x).rank();
    if rank < 3 {
        return Err(n.err(format!("input of shape {:?} needs rank >= 3", c.shape(x))));
    }
    let op = if n.op == "GlobalMaxPool" {
        ReduceOp::Max
    } else {
        ReduceOp::Mean
    };
    Ok(vec![c.op(
        n,
        Op::Reduce {
            op,
            axes: (2..rank).collect(),
            keepdims: true,
        },
        &[x],
    )?])
}

/// Inference BatchNormalization as `x·a + b` with per-channel `a`, `b`
/// shaped [C,1,...]; precomputed when the statistics are constants.
pub(super) fn batch_norm(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    if n.attr_int("training_mode", 0)? != 0 {
        return Err(n.unsupported_attr("training_mode", 1));
    }
    if n.opset < 9 && n.attr_int("spatial", 1)? != 1 {
        return Err(n.unsupported_attr("spatial", 0));
    }
    let eps = n.attr_float("epsilon", 1e-5)? as f64;
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    if xs.len() < 2 {
        return Err(n.err(format!("input of shape {xs:?} needs rank >= 2")));
    }
    let ch = xs[1];
    let mut params = Vec::with_capacity(4);
    for (i, what) in [(1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")] {
        let p = c.input(n, i)?;
        if c.shape(p) != [ch] {
            return Err(n.err(format!(
                "{what} has shape {:?}, expected [{ch}]",
                c.shape(p)
            )));
        }
        params.push(p);
    }
    let mut pshape = vec![ch];
    pshape.resize(xs.len() - 1, 1);
    let consts: Option<Vec<Vec<f32>>> = params
        .iter()
        .map(|&p| c.as_const(p).and_then(|t| t.as_f32().map(<[f32]>::to_vec)))
        .collect();
    let (a, b) = match consts {
        Some(v) => {
            let (scale, bias, mean, var) = (&v[0], &v[1], &v[2], &v[3]);
            let a: Vec<f32> = (0..ch)
                .map(|i| (scale[i] as f64 / (var[i] as f64 + eps).sqrt()) as f32)
                .collect();
            let b: Vec<f32> = (0..ch)
                .map(|i| (bias[i] as f64 - mean[i] as f64 * a[i] as f64) as f32)
                .collect();
            let a = Tensor::f32(pshape.clone(), a).map_err(|e| n.err(e))?;
            let b = Tensor::f32(pshape, b).map_err(|e| n.err(e))?;
            (c.constant(n, a), c.constant(n, b))
        }
        None => {
            let [scale, bias, mean, var] = [params[0], params[1], params[2], params[3]];
            let e = c.scalar(n, DType::F32, eps);
            let v = c.binary(n, BinaryOp::Add, var, e)?;
            let v = c.op(n, Op::Unary(UnaryOp::Sqrt), &[v])?;
            let a = c.binary(n, BinaryOp::Div, scale, v)?;
            let ma = c.binary(n, BinaryOp::Mul, mean, a)?;
            let b = c.binary(n, BinaryOp::Sub, bias, ma)?;
            (c.reshape(n, a, pshape.clone())?, c.reshape(n, b, pshape)?)
        }
    };
    let y = c.binary(n, BinaryOp::Mul, x, a)?;
    Ok(vec![c.binary(n, BinaryOp::Add, y, b)?])
}

pub(super) fn instance_norm(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let epsilon = n.attr_float("epsilon", 1e-5)?.into();
    let args = [c.input(n, 0)?, c.input(n, 1)?, c.input(n, 2)?];
    Ok(vec![c.op(n, Op::InstanceNorm { epsilon }, &args)?])
}

/// LayerNormalization. The optional Mean and InvStdDev outputs (shape
/// `X.shape[..axis] + [1; rank - axis]`, f32: the only stash_type nnc
/// computes in) are built from reductions when used.
pub(super) fn layer_norm(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let rank = c.ty(x).rank();
    let axis = n.axis(n.attr_int("axis", -1)?, rank)?;
    let eps = n.attr_float("epsilon", 1e-5)?;
    let stash = n.attr_int("stash_type", 1)?;
    if stash != 1 {
        return Err(n.unsupported_attr("stash_type", stash));
    }
    let mut args = vec![x, c.input(n, 1)?];
    args.extend(c.opt_input(n, 2)?);
    let y = c.op(
        n,
        Op::LayerNorm {
            axis,
            epsilon: eps.into(),
        },
        &args,
    )?;
    if n.output_name(1).is_empty() && n.output_name(2).is_empty() {
        return Ok(vec![y]);
    }
    let (mean, inv) = moments(c, n, x, axis, eps)?;
    Ok(vec![y, mean, inv])
}

/// RMSNormalization (opset 23): x / sqrt(mean(x², dims axis..) + eps) · scale.
pub(super) fn rms_norm(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let scale = c.input(n, 1)?;
    if c.ty(x).dtype != DType::F32 {
        return Err(n.err(format!("input of type {} is not supported", c.ty(x).dtype)));
    }
    let rank = c.ty(x).rank();
    let axis = n.axis(n.attr_int("axis", -1)?, rank)?;
    let eps = n.attr_float("epsilon", 1e-5)?;
    let stash = n.attr_int("stash_type", 1)?;
    if stash != 1 {
        return Err(n.unsupported_attr("stash_type", stash));
    }
    let sq = c.binary(n, BinaryOp::Mul, x, x)?;
    let ms = c.op(
        n,
        Op::Reduce {
            op: ReduceOp::Mean,
            axes: (axis..rank).collect(),
            keepdims: true,
        },
        &[sq],
    )?;
    let e = c.scalar(n, DType::F32, eps as f64);
    let v = c.binary(n, BinaryOp::Add, ms, e)?;
    let s = c.op(n, Op::Unary(UnaryOp::Sqrt), &[v])?;
    let y = c.binary(n, BinaryOp::Div, x, s)?;
    Ok(vec![c.binary(n, BinaryOp::Mul, y, scale)?])
}

/// Mean and 1/sqrt(var + eps) over dims `axis..` (kept as size-1 dims),
/// population variance.
fn moments(
    c: &mut Ctx<'_>,
    n: &Node,
    x: ValueId,
    axis: usize,
    eps: f32,
) -> Result<(ValueId, ValueId)> {
    let rank = c.ty(x).rank();
    let mean_op = Op::Reduce {
        op: ReduceOp::Mean,
        axes: (axis..rank).collect(),
        keepdims: true,
    };
    let mean = c.op(n, mean_op.clone(), &[x])?;
    let d = c.binary(n, BinaryOp::Sub, x, mean)?;
    let d2 = c.binary(n, BinaryOp::Mul, d, d)?;
    let var = c.op(n, mean_op, &[d2])?;
    let e = c.scalar(n, DType::F32, eps as f64);
    let v = c.binary(n, BinaryOp::Add, var, e)?;
    let s = c.op(n, Op::Unary(UnaryOp::Sqrt), &[v])?;
    let inv = c.op(n, Op::Unary(UnaryOp::Reciprocal), &[s])?;
    Ok((mean, inv))
}

/// Softmax / LogSoftmax. Before opset 13 the input is coerced to 2-D at
/// `axis` (default 1), which equals a softmax over dims `axis..`.
pub(super) fn softmax(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let log = n.op == "LogSoftmax";
    let xs = c.shape(x);
    let rank = xs.len();
    if n.opset >= 13 {
        let axis = n.axis(n.attr_int("axis", -1)?, rank)?;
        return Ok(vec![c.op(n, Op::Softmax { axis, log }, &[x])?]);
    }
    let axis = n.axis(n.attr_int("axis", 1)?, rank)?;
    if axis == rank - 1 {
        return Ok(vec![c.op(n, Op::Softmax { axis, log }, &[x])?]);
    }
    let rows = xs[..axis].iter().product();
    let cols = xs[axis..].iter().product();
    let flat = c.reshape(n, x, vec![rows, cols])?;
    let s = c.op(n, Op::Softmax { axis: 1, log }, &[flat])?;
    Ok(vec![c.reshape(n, s, xs)?])
}

pub(super) fn gemm(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let op = Op::Gemm {
        alpha: n.attr_float("alpha", 1.0)?.into(),
        beta: n.attr_float("beta", 1.0)?.into(),
        trans_a: n.attr_bool("transA", false)?,
        trans_b: n.attr_bool("transB", false)?,
        relu: false,
    };
    let mut args = vec![c.input(n, 0)?, c.input(n, 1)?];
    args.extend(c.opt_input(n, 2)?);
    Ok(vec![c.op(n, op, &args)?])
}

pub(super) fn matmul(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let args = [c.input(n, 0)?, c.input(n, 1)?];
    Ok(vec![c.op(n, Op::MatMul, &args)?])
}

/// Hardmax: 1.0 at the first maximum along `axis`, 0 elsewhere (before
/// opset 13 over the input coerced to 2-D at `axis`, default 1).
pub(super) fn hardmax(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    let rank = xs.len();
    if c.ty(x).dtype != DType::F32 {
        return Err(n.err(format!("input of type {} is not supported", c.ty(x).dtype)));
    }
    let (v, axis) = if n.opset >= 13 {
        (x, n.axis(n.attr_int("axis", -1)?, rank)?)
    } else {
        let axis = n.axis(n.attr_int("axis", 1)?, rank)?;
        let rows = xs[..axis].iter().product();
        let cols = xs[axis..].iter().product();
        (c.reshape(n, x, vec![rows, cols])?, 1)
    };
    let vs = c.shape(v);
    if vs[axis] == 0 {
        return Ok(vec![x]);
    }
    let am = c.op(
        n,
        Op::ArgMax {
            axis,
            keepdims: true,
            select_last: false,
        },
        &[v],
    )?;
    let mut ishape = vec![1; vs.len()];
    ishape[axis] = vs[axis];
    let iota = Tensor::i64(ishape, (0..vs[axis] as i64).collect()).map_err(|e| n.err(e))?;
    let iota = c.constant(n, iota);
    let eq = c.binary(n, BinaryOp::Equal, iota, am)?;
    let y = c.op(n, Op::Cast { to: DType::F32 }, &[eq])?;
    Ok(vec![c.reshape(n, y, xs)?])
}

/// LpNormalization: x / ‖x‖ₚ along `axis` (p = 1 or 2), 0 where the norm is 0.
pub(super) fn lp_norm(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let axis = n.axis(n.attr_int("axis", -1)?, c.ty(x).rank())?;
    let op = match n.attr_int("p", 2)? {
        1 => ReduceOp::L1,
        2 => ReduceOp::L2,
        p => return Err(n.unsupported_attr("p", p)),
    };
    let norm = c.op(
        n,
        Op::Reduce {
            op,
            axes: vec![axis],
            keepdims: true,
        },
        &[x],
    )?;
    let y = c.binary(n, BinaryOp::Div, x, norm)?;
    // A zero norm gives 0, not 0/0 (as ONNX's reference does).
    let zero = c.scalar(n, DType::F32, 0.0);
    let z = c.binary(n, BinaryOp::Equal, norm, zero)?;
    Ok(vec![c.op(n, Op::Where, &[z, zero, y])?])
}

/// GroupNormalization: statistics per (N, group) over the group's channels
/// and spatial dims, then a per-channel scale and bias (per group before
/// opset 21).
pub(super) fn group_norm(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let (scale, bias) = (c.input(n, 1)?, c.input(n, 2)?);
    let xs = c.shape(x);
    if xs.len() < 2 || c.ty(x).dtype != DType::F32 {
        return Err(n.err(format!(
            "input {xs:?} of type {} is not supported",
            c.ty(x).dtype
        )));
    }
    let g = n.attr_int("num_groups", 0)?;
    let ch = xs[1];
    if g <= 0 || !ch.is_multiple_of(g as usize) {
        return Err(n.err(format!("num_groups {g} does not divide {ch} channels")));
    }
    let g = g as usize;
    let stash = n.attr_int("stash_type", 1)?;
    if stash != 1 {
        return Err(n.unsupported_attr("stash_type", stash));
    }
    let eps = n.attr_float("epsilon", 1e-5)?;
    let rest: usize = xs[1..].iter().product::<usize>() / g;
    let grouped = c.reshape(n, x, vec![xs[0], g, rest])?;
    let (mean, inv) = moments(c, n, grouped, 2, eps)?;
    let d = c.binary(n, BinaryOp::Sub, grouped, mean)?;
    let y = c.binary(n, BinaryOp::Mul, d, inv)?;
    let y = c.reshape(n, y, xs.clone())?;
    let mut pshape = vec![ch];
    pshape.resize(xs.len() - 1, 1);
    let per_channel = |c: &mut Ctx<'_>, p: ValueId, what: &str| -> Result<ValueId> {
        let ps = c.shape(p);
        let p = if ps == [ch] {
            p
        } else if ps == [g] && n.opset < 21 {
            let col = c.reshape(n, p, vec![g, 1])?;
            let e = c.op(
                n,
                Op::Expand {
                    shape: vec![g, ch / g],
                },
                &[col],
            )?;
            c.reshape(n, e, vec![ch])?
        } else {
            return Err(n.err(format!("{what} of shape {ps:?} should be [{ch}]")));
        };
        c.reshape(n, p, pshape.clone())
    };
    let sc = per_channel(c, scale, "scale")?;
    let bi = per_channel(c, bias, "bias")?;
    let y = c.binary(n, BinaryOp::Mul, y, sc)?;
    Ok(vec![c.binary(n, BinaryOp::Add, y, bi)?])
}

/// LpPool: (Σ |x|ᵖ over the window)^(1/p), as an average pool that counts
/// padding, times the window size.
pub(super) fn lp_pool(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let kernel = n
        .attr_dims("kernel_shape")?
        .ok_or_else(|| n.err("attribute 'kernel_shape' is missing"))?;
    let p = n.attr_int("p", 2)?;
    if p <= 0 {
        return Err(n.err(format!("attribute 'p' = {p} must be positive")));
    }
    let window = window(n, &c.shape(x), kernel, true)?;
    if window.ceil_mode {
        return Err(n.unsupported_attr("ceil_mode", 1));
    }
    let k: usize = window.kernel.iter().product();
    let a = match p {
        1 => c.op(n, Op::Unary(UnaryOp::Abs), &[x])?,
        2 => c.binary(n, BinaryOp::Mul, x, x)?,
        _ => {
            let ax = c.op(n, Op::Unary(UnaryOp::Abs), &[x])?;
            let e = c.scalar(n, DType::F32, p as f64);
            c.binary(n, BinaryOp::Pow, ax, e)?
        }
    };
    let kind = PoolKind::Avg {
        count_include_pad: true,
    };
    let avg = c.op(n, Op::Pool { kind, window }, &[a])?;
    let kk = c.scalar(n, DType::F32, k as f64);
    let sum = c.binary(n, BinaryOp::Mul, avg, kk)?;
    Ok(vec![match p {
        1 => sum,
        2 => c.op(n, Op::Unary(UnaryOp::Sqrt), &[sum])?,
        _ => {
            let e = c.scalar(n, DType::F32, 1.0 / p as f64);
            c.binary(n, BinaryOp::Pow, sum, e)?
        }
    }])
}
