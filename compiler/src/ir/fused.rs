//! The program of a fused elementwise op: an expression tree over the op's
//! inputs (numpy broadcasting to the result shape), so a chain like
//! `relu(a + b)` runs as one loop instead of one pass per op.

use super::op::{broadcast_shapes, BinaryOp, Op, UnaryOp};
use super::tensor::{DType, F32Bits, Tensor, TensorType};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FusedExpr {
    /// Input `i` of the fused op.
    Input(usize),
    /// A scalar constant (it does not take part in the result's shape).
    Const(F32Bits),
    Unary(UnaryOp, Box<FusedExpr>),
    Binary(BinaryOp, Box<FusedExpr>, Box<FusedExpr>),
}

impl FusedExpr {
    /// Ops in the tree (a fused op has at least two).
    pub fn ops(&self) -> usize {
        match self {
            FusedExpr::Input(_) | FusedExpr::Const(_) => 0,
            FusedExpr::Unary(_, a) => 1 + a.ops(),
            FusedExpr::Binary(_, a, b) => 1 + a.ops() + b.ops(),
        }
    }

    /// Weighted per-element work (transcendentals count more), for the cost model.
    pub fn work(&self, unary_weight: &dyn Fn(&UnaryOp) -> f64) -> f64 {
        match self {
            FusedExpr::Input(_) | FusedExpr::Const(_) => 0.0,
            FusedExpr::Unary(u, a) => unary_weight(u) + a.work(unary_weight),
            FusedExpr::Binary(_, a, b) => 1.0 + a.work(unary_weight) + b.work(unary_weight),
        }
    }

    /// Largest input index used, plus one.
    pub fn arity(&self) -> usize {
        match self {
            FusedExpr::Input(i) => i + 1,
            FusedExpr::Const(_) => 0,
            FusedExpr::Unary(_, a) => a.arity(),
            FusedExpr::Binary(_, a, b) => a.arity().max(b.arity()),
        }
    }

    /// Result type: every op is f32 → f32, shapes broadcast.
    pub fn infer(&self, args: &[&TensorType]) -> Result<TensorType, String> {
        for (i, t) in args.iter().enumerate() {
            if t.dtype != DType::F32 {
                return Err(format!("fused: input {i} is {}, only f32", t.dtype));
            }
        }
        if self.arity() != args.len() {
            return Err(format!(
                "fused: program uses {} inputs, op has {}",
                self.arity(),
                args.len()
            ));
        }
        Ok(TensorType::new(DType::F32, self.shape(args)?))
    }

    fn shape(&self, args: &[&TensorType]) -> Result<Vec<usize>, String> {
        match self {
            FusedExpr::Input(i) => Ok(args[*i].shape.clone()),
            FusedExpr::Const(_) => Ok(vec![]),
            FusedExpr::Unary(u, a) => match u {
                UnaryOp::Not => Err("fused: 'not' is not an f32 op".into()),
                _ => a.shape(args),
            },
            FusedExpr::Binary(b, x, y) => {
                if !matches!(
                    b,
                    BinaryOp::Add
                        | BinaryOp::Sub
                        | BinaryOp::Mul
                        | BinaryOp::Div
                        | BinaryOp::Pow
                        | BinaryOp::Max
                        | BinaryOp::Min
                ) {
                    return Err(format!("fused: '{}' is not an f32 op", b.name()));
                }
                broadcast_shapes(&x.shape(args)?, &y.shape(args)?)
            }
        }
    }

    /// Reference semantics: the ops one after another (the evaluator's own).
    pub fn eval(&self, args: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
        let t = self.eval_rec(args)?;
        if t.shape == out {
            return Ok(t);
        }
        super::eval::eval_op(
            &Op::Expand {
                shape: out.to_vec(),
            },
            &[&t],
        )
    }

    fn eval_rec(&self, args: &[&Tensor]) -> Result<Tensor, String> {
        use super::eval::eval_op;
        match self {
            FusedExpr::Input(i) => Ok(args[*i].clone()),
            FusedExpr::Const(c) => Ok(Tensor::scalar_f32(c.get())),
            FusedExpr::Unary(u, a) => eval_op(&Op::Unary(*u), &[&a.eval_rec(args)?]),
            FusedExpr::Binary(b, x, y) => {
                eval_op(&Op::Binary(*b), &[&x.eval_rec(args)?, &y.eval_rec(args)?])
            }
        }
    }
}

impl fmt::Display for FusedExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FusedExpr::Input(i) => write!(f, "${i}"),
            FusedExpr::Const(c) => write!(f, "{c}"),
            FusedExpr::Unary(u, a) => write!(f, "{}({a})", u.name()),
            FusedExpr::Binary(b, x, y) => write!(f, "{}({x}, {y})", b.name()),
        }
    }
}
