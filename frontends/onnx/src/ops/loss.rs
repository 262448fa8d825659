//! NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss from GatherElements,
//! Gather and reductions.

use crate::builder::Ctx;
use crate::node::{Node, Result};
use nnc_compiler::ir::{BinaryOp, DType, Op, ReduceOp, UnaryOp, ValueId};

/// −input[n, target[n, d…], d…]·weight[target], zero where target is
/// `ignore_index`, then reduced (none / sum / weighted mean).
fn nll(
    c: &mut Ctx<'_>,
    n: &Node,
    x: ValueId,
    target: ValueId,
    weight: Option<ValueId>,
) -> Result<ValueId> {
    let (xs, ts) = (c.shape(x), c.shape(target));
    if xs.len() < 2 || ts.len() + 1 != xs.len() || ts[0] != xs[0] || ts[1..] != xs[2..] {
        return Err(n.err(format!(
            "input {xs:?} and target {ts:?} do not match ([N, C, d…] and [N, d…])"
        )));
    }
    if c.ty(x).dtype != DType::F32 || c.ty(target).dtype != DType::I64 {
        return Err(n.err(format!(
            "input of type {} with target of type {} is not supported (float and int64 are)",
            c.ty(x).dtype,
            c.ty(target).dtype
        )));
    }
    let reduction = n.attr_string("reduction", "mean")?;
    if !matches!(reduction.as_str(), "none" | "sum" | "mean") {
        return Err(n.unsupported_attr("reduction", format!("{reduction:?}")));
    }
    let ignore = n.attr_int_opt("ignore_index")?;
    // Ignored positions read class 0 (any valid index) and weigh 0.
    let (t, keep) = match ignore {
        Some(ii) => {
            let iv = c.scalar(n, DType::I64, ii as f64);
            let ign = c.binary(n, BinaryOp::Equal, target, iv)?;
            let zero = c.scalar(n, DType::I64, 0.0);
            let t = c.op(n, Op::Where, &[ign, zero, target])?;
            let z = c.scalar(n, DType::F32, 0.0);
            let one = c.scalar(n, DType::F32, 1.0);
            (t, Some(c.op(n, Op::Where, &[ign, z, one])?))
        }
        None => (target, None),
    };
    let mut tu = ts.clone();
    tu.insert(1, 1);
    let tix = c.reshape(n, t, tu)?;
    let g = c.op(n, Op::GatherElements { axis: 1 }, &[x, tix])?;
    let g = c.reshape(n, g, ts.clone())?;
    let mut loss = c.op(n, Op::Unary(UnaryOp::Neg), &[g])?;
    // Per-element weight: weight[target], times the ignore mask.
    let w = match weight {
        Some(wv) => {
            if c.shape(wv) != [xs[1]] {
                return Err(n.err(format!(
                    "weight of shape {:?} should be [{}]",
                    c.shape(wv),
                    xs[1]
                )));
            }
            let wt = c.op(n, Op::Gather { axis: 0 }, &[wv, t])?;
            Some(match keep {
                Some(k) => c.binary(n, BinaryOp::Mul, wt, k)?,
                None => wt,
            })
        }
        None => keep,
    };
    if let Some(w) = w {
        loss = c.binary(n, BinaryOp::Mul, loss, w)?;
    }
    let all = |c: &mut Ctx<'_>, v: ValueId| {
        let r = c.ty(v).rank();
        c.op(
            n,
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: (0..r).collect(),
                keepdims: false,
            },
            &[v],
        )
    };
    Ok(match (reduction.as_str(), w) {
        ("none", _) => loss,
        ("sum", _) => all(c, loss)?,
        (_, None) => {
            let r = c.ty(loss).rank();
            c.op(
                n,
                Op::Reduce {
                    op: ReduceOp::Mean,
                    axes: (0..r).collect(),
                    keepdims: false,
                },
                &[loss],
            )?
        }
        (_, Some(w)) => {
            let s = all(c, loss)?;
            let d = all(c, w)?;
            c.binary(n, BinaryOp::Div, s, d)?
        }
    })
}

pub(super) fn nll_loss(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let (x, t, w) = (c.input(n, 0)?, c.input(n, 1)?, c.opt_input(n, 2)?);
    Ok(vec![nll(c, n, x, t, w)?])
}

/// SoftmaxCrossEntropyLoss: NLL of log_softmax over the class axis (1);
/// the optional second output is that log-probability.
pub(super) fn softmax_cross_entropy(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let (x, t, w) = (c.input(n, 0)?, c.input(n, 1)?, c.opt_input(n, 2)?);
    if c.ty(x).rank() < 2 {
        return Err(n.err(format!("scores of shape {:?} need rank >= 2", c.shape(x))));
    }
    let lp = c.op(n, Op::Softmax { axis: 1, log: true }, &[x])?;
    Ok(vec![nll(c, n, lp, t, w)?, lp])
}
