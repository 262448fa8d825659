//! Elementwise ops: activations, arithmetic, comparisons, logic, casts.

use crate::builder::Ctx;
use crate::node::{Node, Result};
use crate::tensor::dtype_name;
use nnc_compiler::ir::{broadcast_shapes, BinaryOp, DType, Op, UnaryOp, ValueId};

pub(super) fn unary(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    use UnaryOp as U;
    let u = match n.op {
        "Abs" => U::Abs,
        "Ceil" => U::Ceil,
        "Erf" => U::Erf,
        "Exp" => U::Exp,
        "Floor" => U::Floor,
        "HardSwish" => U::HardSwish,
        "Log" => U::Log,
        "Neg" => U::Neg,
        "Not" => U::Not,
        "Reciprocal" => U::Reciprocal,
        "Relu" => U::Relu,
        "Round" => U::Round,
        "Sigmoid" => U::Sigmoid,
        "Sqrt" => U::Sqrt,
        "Tanh" => U::Tanh,
        "LeakyRelu" => U::LeakyRelu {
            alpha: n.attr_float("alpha", 0.01)?.into(),
        },
        "Elu" => U::Elu {
            alpha: n.attr_float("alpha", 1.0)?.into(),
        },
        "Selu" => U::Selu {
            alpha: n.attr_float("alpha", 1.673_263_2)?.into(),
            gamma: n.attr_float("gamma", 1.050_701)?.into(),
        },
        "HardSigmoid" => U::HardSigmoid {
            alpha: n.attr_float("alpha", 0.2)?.into(),
            beta: n.attr_float("beta", 0.5)?.into(),
        },
        other => return Err(n.err(format!("no unary mapping for {other}"))),
    };
    let x = c.input(n, 0)?;
    Ok(vec![c.op(n, Op::Unary(u), &[x])?])
}

fn un(c: &mut Ctx<'_>, n: &Node, u: UnaryOp, x: ValueId) -> Result<ValueId> {
    c.op(n, Op::Unary(u), &[x])
}

/// Gelu (opset 20): exact, or the tanh approximation built from ops.
pub(super) fn gelu(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    match n.attr_string("approximate", "none")?.as_str() {
        "none" => Ok(vec![un(c, n, UnaryOp::Gelu, x)?]),
        "tanh" => {
            // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            let x2 = c.binary(n, BinaryOp::Mul, x, x)?;
            let x3 = c.binary(n, BinaryOp::Mul, x2, x)?;
            let k = c.scalar(n, DType::F32, 0.044715);
            let t = c.binary(n, BinaryOp::Mul, x3, k)?;
            let t = c.binary(n, BinaryOp::Add, x, t)?;
            let s = c.scalar(n, DType::F32, (2.0 / std::f64::consts::PI).sqrt());
            let t = c.binary(n, BinaryOp::Mul, t, s)?;
            let t = un(c, n, UnaryOp::Tanh, t)?;
            let one = c.scalar(n, DType::F32, 1.0);
            let t = c.binary(n, BinaryOp::Add, t, one)?;
            let half = c.scalar(n, DType::F32, 0.5);
            let hx = c.binary(n, BinaryOp::Mul, x, half)?;
            Ok(vec![c.binary(n, BinaryOp::Mul, hx, t)?])
        }
        other => Err(n.unsupported_attr("approximate", format!("{other:?}"))),
    }
}

/// log(1 + exp(x)) computed as relu(x) + log(1 + exp(-|x|)) so large x
/// does not overflow.
fn softplus_of(c: &mut Ctx<'_>, n: &Node, x: ValueId) -> Result<ValueId> {
    let a = un(c, n, UnaryOp::Abs, x)?;
    let a = un(c, n, UnaryOp::Neg, a)?;
    let e = un(c, n, UnaryOp::Exp, a)?;
    let one = c.scalar(n, DType::F32, 1.0);
    let e = c.binary(n, BinaryOp::Add, e, one)?;
    let l = un(c, n, UnaryOp::Log, e)?;
    let r = un(c, n, UnaryOp::Relu, x)?;
    c.binary(n, BinaryOp::Add, r, l)
}

pub(super) fn softplus(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    Ok(vec![softplus_of(c, n, x)?])
}

/// x·tanh(softplus(x)).
pub(super) fn mish(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let s = softplus_of(c, n, x)?;
    let t = un(c, n, UnaryOp::Tanh, s)?;
    Ok(vec![c.binary(n, BinaryOp::Mul, x, t)?])
}

/// x / (1 + |x|).
pub(super) fn softsign(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let a = un(c, n, UnaryOp::Abs, x)?;
    let one = c.scalar(n, DType::F32, 1.0);
    let d = c.binary(n, BinaryOp::Add, a, one)?;
    Ok(vec![c.binary(n, BinaryOp::Div, x, d)?])
}

/// x > alpha ? x : 0.
pub(super) fn thresholded_relu(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let alpha = c.scalar(n, DType::F32, n.attr_float("alpha", 1.0)? as f64);
    let zero = c.scalar(n, DType::F32, 0.0);
    let m = c.binary(n, BinaryOp::Greater, x, alpha)?;
    Ok(vec![c.op(n, Op::Where, &[m, x, zero])?])
}

/// A Clip bound: absent, known, or computed at run time.
enum Bound {
    None,
    Const(f64),
    Value(ValueId),
}

/// Clip: attributes before opset 11, optional inputs after. Constant bounds
/// on f32 give one `clip`; otherwise Max/Min with the bound values.
pub(super) fn clip(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let dtype = c.ty(x).dtype;
    let bounds = if n.opset < 11 {
        [
            n.attr_float_opt("min")?
                .map_or(Bound::None, |v| Bound::Const(v as f64)),
            n.attr_float_opt("max")?
                .map_or(Bound::None, |v| Bound::Const(v as f64)),
        ]
    } else {
        let mut b = [Bound::None, Bound::None];
        for (i, what) in [(1, "min"), (2, "max")] {
            if let Some(id) = c.opt_input(n, i)? {
                b[i - 1] = match c.as_const(id) {
                    Some(_) => Bound::Const(c.const_scalar(n, i, what)?.unwrap_or(0.0)),
                    None => Bound::Value(id),
                };
            }
        }
        b
    };
    if dtype == DType::F32 && !bounds.iter().any(|b| matches!(b, Bound::Value(_))) {
        let get = |b: &Bound, d: f32| {
            if let Bound::Const(v) = b {
                *v as f32
            } else {
                d
            }
        };
        let u = UnaryOp::Clip {
            min: get(&bounds[0], f32::NEG_INFINITY).into(),
            max: get(&bounds[1], f32::INFINITY).into(),
        };
        return Ok(vec![un(c, n, u, x)?]);
    }
    let mut y = x;
    for (b, op) in bounds.iter().zip([BinaryOp::Max, BinaryOp::Min]) {
        let v = match *b {
            Bound::None => continue,
            Bound::Const(v) => c.scalar(n, dtype, v),
            Bound::Value(id) => id,
        };
        y = c.binary(n, op, y, v)?;
    }
    Ok(vec![y])
}

/// PRelu(x) = x < 0 ? x·slope : x, with slope broadcast to x's shape.
pub(super) fn prelu(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let slope = c.input(n, 1)?;
    let (xs, ss) = (c.shape(x), c.shape(slope));
    if broadcast_shapes(&xs, &ss).ok().as_ref() != Some(&xs) {
        return Err(n.err(format!(
            "slope of shape {ss:?} does not broadcast to input shape {xs:?}"
        )));
    }
    let zero = c.scalar(n, c.ty(x).dtype, 0.0);
    let neg = c.binary(n, BinaryOp::Less, x, zero)?;
    let scaled = c.binary(n, BinaryOp::Mul, x, slope)?;
    Ok(vec![c.op(n, Op::Where, &[neg, scaled, x])?])
}

pub(super) fn binary(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    use BinaryOp as B;
    let b = match n.op {
        "Add" => B::Add,
        "Sub" => B::Sub,
        "Mul" => B::Mul,
        "Div" => B::Div,
        "Pow" => B::Pow,
        "Equal" => B::Equal,
        "Less" => B::Less,
        "Greater" => B::Greater,
        "LessOrEqual" => B::LessOrEqual,
        "GreaterOrEqual" => B::GreaterOrEqual,
        "And" => B::And,
        "Or" => B::Or,
        "Xor" => B::Xor,
        "Mod" => {
            if n.attr_bool("fmod", false)? {
                B::Fmod
            } else {
                B::Mod
            }
        }
        other => return Err(n.err(format!("no binary mapping for {other}"))),
    };
    let x = c.input(n, 0)?;
    let mut y = c.input(n, 1)?;
    if b == B::Mod && c.ty(x).dtype == DType::F32 {
        // Mod-28 defines fmod=0 on floats (A − floor(A/B)·B with IEEE special cases).
        return Err(n.err("fmod=0 on float data is not supported"));
    }
    // Pow alone lets the exponent type differ from the base type.
    let dx = c.ty(x).dtype;
    if b == B::Pow && c.ty(y).dtype != dx {
        y = c.op(n, Op::Cast { to: dx }, &[y])?;
    }
    Ok(vec![c.binary(n, b, x, y)?])
}

/// Max/Min/Sum/Mean over any number of inputs, as a chain of binary ops.
pub(super) fn variadic(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let b = match n.op {
        "Max" => BinaryOp::Max,
        "Min" => BinaryOp::Min,
        _ => BinaryOp::Add,
    };
    let count = c.num_inputs(n);
    let mut acc = c.input(n, 0)?;
    if n.op == "Mean" && c.ty(acc).dtype != DType::F32 {
        return Err(n.err(format!("Mean of {} is not supported", c.ty(acc).dtype)));
    }
    for i in 1..count {
        let v = c.input(n, i)?;
        acc = c.binary(n, b, acc, v)?;
    }
    if n.op == "Mean" && count > 1 {
        let k = c.scalar(n, c.ty(acc).dtype, 1.0 / count as f64);
        acc = c.binary(n, BinaryOp::Mul, acc, k)?;
    }
    Ok(vec![acc])
}

pub(super) fn where_(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let args = [c.input(n, 0)?, c.input(n, 1)?, c.input(n, 2)?];
    Ok(vec![c.op(n, Op::Where, &args)?])
}

/// Cast / CastLike to f32, int64 or bool.
pub(super) fn cast(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let to = if n.op == "CastLike" {
        c.ty(c.input(n, 1)?).dtype
    } else {
        let code = n
            .attr_int_opt("to")?
            .ok_or_else(|| n.err("attribute 'to' is missing"))?;
        match i32::try_from(code).ok().and_then(DType::from_onnx) {
            Some(d) => d,
            None => {
                let name = i32::try_from(code).map_or(code.to_string(), dtype_name);
                return Err(n.err(format!(
                    "Cast to {name} is not supported (nnc computes in float, int64 and bool)"
                )));
            }
        }
    };
    if c.ty(x).dtype == to {
        return Ok(vec![x]);
    }
    Ok(vec![c.op(n, Op::Cast { to }, &[x])?])
}

pub(super) fn identity(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    Ok(vec![c.input(n, 0)?])
}

/// Inference-mode Dropout is the identity with an all-true mask; training
/// mode drops elements at random and is refused unless its ratio is 0.
pub(super) fn dropout(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    if n.opset >= 12 && c.opt_input(n, 2)?.is_some() {
        let training = c.const_scalar(n, 2, "training_mode")?.unwrap_or(0.0);
        // Training with ratio 0 drops nothing: the same as inference.
        let ratio = if training != 0.0 {
            c.const_scalar(n, 1, "ratio")?.unwrap_or(0.5)
        } else {
            0.0
        };
        if ratio != 0.0 {
            return Err(n.err(
                "training_mode = true with a non-zero ratio is not supported (nnc compiles for inference)",
            ));
        }
    }
    if n.output_name(1).is_empty() {
        return Ok(vec![x]);
    }
    // Inference keeps every element: the mask is all true (all ones before
    // opset 10, where it had the input's type).
    let (dtype, one) = if n.opset >= 10 {
        (DType::Bool, 1.0)
    } else {
        (c.ty(x).dtype, 1.0)
    };
    let t = c.scalar(n, dtype, one);
    let shape = c.shape(x);
    let mask = c.op(n, Op::Expand { shape }, &[t])?;
    Ok(vec![x, mask])
}

/// Sign: the f32 kernel, or (x > 0) − (x < 0) on int64.
pub(super) fn sign(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let dtype = c.ty(x).dtype;
    if dtype != DType::I64 {
        return Ok(vec![un(c, n, UnaryOp::Sign, x)?]);
    }
    let zero = c.scalar(n, dtype, 0.0);
    let pos = c.binary(n, BinaryOp::Greater, x, zero)?;
    let neg = c.binary(n, BinaryOp::Less, x, zero)?;
    let pos = c.op(n, Op::Cast { to: dtype }, &[pos])?;
    let neg = c.op(n, Op::Cast { to: dtype }, &[neg])?;
    Ok(vec![c.binary(n, BinaryOp::Sub, pos, neg)?])
}

/// IsNaN as x ≠ x.
pub(super) fn is_nan(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let eq = c.binary(n, BinaryOp::Equal, x, x)?;
    Ok(vec![un(c, n, UnaryOp::Not, eq)?])
}

/// IsInf as comparisons with ±inf, per detect_positive / detect_negative.
pub(super) fn is_inf(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let pos = n.attr_bool("detect_positive", true)?;
    let neg = n.attr_bool("detect_negative", true)?;
    let mut r = None;
    for (on, v) in [(pos, f64::INFINITY), (neg, f64::NEG_INFINITY)] {
        if on {
            let inf = c.scalar(n, DType::F32, v);
            let e = c.binary(n, BinaryOp::Equal, x, inf)?;
            r = Some(match r {
                None => e,
                Some(p) => c.binary(n, BinaryOp::Or, p, e)?,
            });
        }
    }
    Ok(vec![match r {
        Some(r) => r,
        None => {
            let f = c.scalar(n, DType::Bool, 0.0);
            let shape = c.shape(x);
            c.op(n, Op::Expand { shape }, &[f])?
        }
    }])
}

/// Swish (opset 24): x·sigmoid(alpha·x).
pub(super) fn swish(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let alpha = n.attr_float("alpha", 1.0)?;
    if alpha == 1.0 {
        return Ok(vec![un(c, n, UnaryOp::Silu, x)?]);
    }
    let a = c.scalar(n, DType::F32, alpha as f64);
    let ax = c.binary(n, BinaryOp::Mul, x, a)?;
    let s = un(c, n, UnaryOp::Sigmoid, ax)?;
    Ok(vec![c.binary(n, BinaryOp::Mul, x, s)?])
}

/// Celu: max(0, x) + min(0, alpha·(exp(x/alpha) − 1)).
pub(super) fn celu(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let alpha = n.attr_float("alpha", 1.0)?;
    if alpha == 0.0 {
        return Err(n.err("attribute 'alpha' must not be 0"));
    }
    let inv = c.scalar(n, DType::F32, 1.0 / alpha as f64);
    let t = c.binary(n, BinaryOp::Mul, x, inv)?;
    let e = un(c, n, UnaryOp::Elu { alpha: 1.0.into() }, t)?;
    // elu(t) = t for t ≥ 0, exp(t) − 1 below: alpha·elu(x/alpha) is celu.
    let a = c.scalar(n, DType::F32, alpha as f64);
    Ok(vec![c.binary(n, BinaryOp::Mul, e, a)?])
}

/// Shrink: x + bias below −lambd, x − bias above lambd, 0 between.
pub(super) fn shrink(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let dtype = c.ty(x).dtype;
    if dtype == DType::Bool {
        return Err(n.err("bool input is not supported"));
    }
    let lambd = n.attr_float("lambd", 0.5)? as f64;
    let bias = n.attr_float("bias", 0.0)? as f64;
    let (nl, l) = (c.scalar(n, dtype, -lambd), c.scalar(n, dtype, lambd));
    let b = c.scalar(n, dtype, bias);
    let zero = c.scalar(n, dtype, 0.0);
    let lo = c.binary(n, BinaryOp::Less, x, nl)?;
    let hi = c.binary(n, BinaryOp::Greater, x, l)?;
    let xp = c.binary(n, BinaryOp::Add, x, b)?;
    let xm = c.binary(n, BinaryOp::Sub, x, b)?;
    let y = c.op(n, Op::Where, &[hi, xm, zero])?;
    Ok(vec![c.op(n, Op::Where, &[lo, xp, y])?])
}

/// SwiGLU (opset 28): swish_alpha(a)·b, with a and b of equal shape.
pub(super) fn swiglu(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let (a, b) = (c.input(n, 0)?, c.input(n, 1)?);
    if c.shape(a) != c.shape(b) {
        return Err(n.err(format!(
            "A {:?} and B {:?} must have the same shape",
            c.shape(a),
            c.shape(b)
        )));
    }
    let alpha = n.attr_float("alpha", 1.0)?;
    let g = if alpha == 1.0 {
        un(c, n, UnaryOp::Silu, a)?
    } else {
        let k = c.scalar(n, DType::F32, alpha as f64);
        let ka = c.binary(n, BinaryOp::Mul, a, k)?;
        let s = un(c, n, UnaryOp::Sigmoid, ka)?;
        c.binary(n, BinaryOp::Mul, a, s)?
    };
    Ok(vec![c.binary(n, BinaryOp::Mul, g, b)?])
}
