//! Neural-network ops: convolution, pooling, normalization, softmax, GEMM.

use crate::builder::Ctx;
use crate::node::{Node, Result};
use nnc_compiler::ir::{BinaryOp, DType, Op, PoolKind, ReduceOp, Tensor, UnaryOp, ValueId, Window};

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

/// MaxPool / AveragePool. MaxPool's Indices output is not computed.
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

/// LayerNormalization; the optional Mean/InvStdDev outputs are not computed.
pub(super) fn layer_norm(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let axis = n.axis(n.attr_int("axis", -1)?, c.ty(x).rank())?;
    let epsilon = n.attr_float("epsilon", 1e-5)?.into();
    let mut args = vec![x, c.input(n, 1)?];
    args.extend(c.opt_input(n, 2)?);
    Ok(vec![c.op(n, Op::LayerNorm { axis, epsilon }, &args)?])
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
    };
    let mut args = vec![c.input(n, 0)?, c.input(n, 1)?];
    args.extend(c.opt_input(n, 2)?);
    Ok(vec![c.op(n, op, &args)?])
}

pub(super) fn matmul(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let args = [c.input(n, 0)?, c.input(n, 1)?];
    Ok(vec![c.op(n, Op::MatMul, &args)?])
}
