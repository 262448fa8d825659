//! Elementwise fusion after extraction: chains of f32 unary/binary ops
//! become one `fused` op whose expression runs as a single loop.
//!
//! This is a pass over the extracted graph rather than an e-graph rewrite:
//! fusing is always profitable once the graph is fixed (one pass over memory
//! instead of several), and doing it inside saturation would multiply the
//! e-graph by every way of grouping a chain.
//!
//! A producer is inlined into its consumer only when the consumer is its
//! single use, it is not a graph output, and it has the consumer's shape:
//! the fused loop then computes every op exactly once per element (inlining
//! a smaller, broadcast producer would recompute it per output element).

use crate::ir::{BinaryOp, DType, F32Bits, FusedExpr, Graph, Op, UnaryOp, ValueId, ValueKind};

/// A tree whose leaves are still graph values.
#[derive(Clone)]
enum Tree {
    Leaf(ValueId),
    Const(F32Bits),
    Unary(UnaryOp, Box<Tree>),
    Binary(BinaryOp, Box<Tree>, Box<Tree>),
}

impl Tree {
    fn ops(&self) -> usize {
        match self {
            Tree::Leaf(_) | Tree::Const(_) => 0,
            Tree::Unary(_, a) => 1 + a.ops(),
            Tree::Binary(_, a, b) => 1 + a.ops() + b.ops(),
        }
    }

    /// The program over input indices, collecting the distinct leaves in
    /// first-use order (a value used twice becomes one input).
    fn program(&self, leaves: &mut Vec<ValueId>) -> FusedExpr {
        match self {
            Tree::Leaf(v) => {
                let i = leaves.iter().position(|l| l == v).unwrap_or_else(|| {
                    leaves.push(*v);
                    leaves.len() - 1
                });
                FusedExpr::Input(i)
            }
            Tree::Const(c) => FusedExpr::Const(*c),
            Tree::Unary(u, a) => FusedExpr::Unary(*u, Box::new(a.program(leaves))),
            Tree::Binary(b, x, y) => {
                FusedExpr::Binary(*b, Box::new(x.program(leaves)), Box::new(y.program(leaves)))
            }
        }
    }
}

/// Whether the vector elementwise kernel computes `op` (f32 in and out).
fn fusible(g: &Graph, id: ValueId) -> bool {
    let ValueKind::Op { op, args } = &g.value(id).kind else {
        return false;
    };
    let f32s = g.ty(id).dtype == DType::F32 && args.iter().all(|&a| g.ty(a).dtype == DType::F32);
    f32s && match op {
        Op::Unary(u) => *u != UnaryOp::Not,
        Op::Binary(b) => matches!(
            b,
            BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Pow
                | BinaryOp::Max
                | BinaryOp::Min
        ),
        _ => false,
    }
}

/// Fuses elementwise chains in place; returns how many fused ops it made.
pub fn fuse_elementwise(g: &mut Graph) -> usize {
    let uses = g.use_counts();
    let mut is_output = vec![false; g.values.len()];
    for o in &g.outputs {
        is_output[o.value.index()] = true;
    }
    let mut trees: Vec<Option<Tree>> = vec![None; g.values.len()];
    let mut inlined = vec![false; g.values.len()];
    for id in g.ids() {
        if !fusible(g, id) {
            continue;
        }
        let ValueKind::Op { op, args } = &g.value(id).kind else {
            continue;
        };
        let shape = &g.ty(id).shape;
        let mut subs = Vec::with_capacity(args.len());
        for &a in args {
            let i = a.index();
            let t =
                if trees[i].is_some() && uses[i] == 1 && !is_output[i] && g.ty(a).shape == *shape {
                    inlined[i] = true;
                    trees[i].clone().expect("checked")
                } else {
                    match g.as_const(a).and_then(|t| t.as_f32()) {
                        // A one-element constant that does not widen the rank
                        // becomes a literal (x², x·0.5, …).
                        Some(v) if v.len() == 1 && g.ty(a).rank() <= shape.len() => {
                            Tree::Const(v[0].into())
                        }
                        _ => Tree::Leaf(a),
                    }
                };
            subs.push(t);
        }
        let mut subs = subs.into_iter();
        trees[id.index()] = Some(match op {
            Op::Unary(u) => Tree::Unary(*u, Box::new(subs.next().expect("arity"))),
            Op::Binary(b) => {
                let x = subs.next().expect("arity");
                let y = subs.next().expect("arity");
                Tree::Binary(*b, Box::new(x), Box::new(y))
            }
            _ => unreachable!("fusible ops are unary or binary"),
        });
    }
    let mut made = 0;
    for i in 0..g.values.len() {
        let Some(t) = &trees[i] else { continue };
        if inlined[i] || t.ops() < 2 {
            continue;
        }
        let mut leaves = Vec::new();
        let expr = t.program(&mut leaves);
        let tys: Vec<&crate::ir::TensorType> = leaves.iter().map(|&l| g.ty(l)).collect();
        if expr.infer(&tys).ok().as_ref() != Some(&g.values[i].ty) {
            // Not expected (literals never widen the shape); keep the chain.
            continue;
        }
        g.values[i].kind = ValueKind::Op {
            op: Op::Fused { expr },
            args: leaves,
        };
        made += 1;
    }
    g.remove_dead();
    made
}
