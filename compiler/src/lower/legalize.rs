//! Graph rewrites that put ops in the form the kernels expect, done on
//! constants at compile time so the generated code never pays for them.

use crate::ir::{eval, Graph, Op, Tensor, Value, ValueId, ValueKind};
use std::sync::Arc;

/// - Gemm with `trans_b` and constant B: transpose B once, here.
/// - LayerNorm with constant scale/bias that broadcast: expand them to the
///   normalized shape so the kernel reads one value per element.
///
/// New constants are appended and then moved ahead of every op in one
/// renumbering (constants have no operands, so the order stays topological).
pub fn legalize(g: &mut Graph) {
    let n = g.values.len();
    for i in 0..n {
        let ValueKind::Op { op, args } = &g.values[i].kind else {
            continue;
        };
        let (op, args) = (op.clone(), args.clone());
        // A tiled Gemm is legalized like the Gemm it wraps (and keeps its tile).
        let wrap = |o: Op| match &op {
            Op::Tiled { tile, .. } => Op::Tiled {
                tile: *tile,
                op: Box::new(o),
            },
            _ => o,
        };
        match op.base().clone() {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b: true,
                relu,
            } => {
                let Some(b) = g.as_const(args[1]).cloned() else {
                    continue;
                };
                let Ok(bt) = eval::eval_op(&Op::Transpose { perm: vec![1, 0] }, &[&b]) else {
                    continue;
                };
                let name = format!("{}.T", g.value(args[1]).name);
                let nb = append_const(g, name, bt);
                set_op(
                    g,
                    i,
                    wrap(Op::Gemm {
                        alpha,
                        beta,
                        trans_a,
                        trans_b: false,
                        relu,
                    }),
                    nb,
                    1,
                );
            }
            Op::LayerNorm { axis, .. } => {
                let norm: Vec<usize> = g.ty(args[0]).shape[axis..].to_vec();
                for (slot, &p) in args.iter().enumerate().skip(1) {
                    let Some(t) = g.as_const(p).cloned() else {
                        continue;
                    };
                    if t.shape == norm {
                        continue;
                    }
                    let Ok(e) = eval::eval_op(
                        &Op::Expand {
                            shape: norm.clone(),
                        },
                        &[&t],
                    ) else {
                        continue;
                    };
                    let Ok(e) = eval::eval_op(
                        &Op::Reshape {
                            shape: norm.clone(),
                        },
                        &[&e],
                    ) else {
                        continue;
                    };
                    let name = format!("{}.expanded", g.value(p).name);
                    let np = append_const(g, name, e);
                    set_op(g, i, op.clone(), np, slot);
                }
            }
            _ => {}
        }
    }
    if g.values.len() > n {
        constants_first(g);
    }
    g.remove_dead();
}

fn append_const(g: &mut Graph, name: String, t: Tensor) -> ValueId {
    let ty = t.ty();
    g.values.push(Value {
        name,
        ty,
        kind: ValueKind::Const(Arc::new(t)),
        origin: None,
    });
    ValueId((g.values.len() - 1) as u32)
}

fn set_op(g: &mut Graph, at: usize, op: Op, new_arg: ValueId, slot: usize) {
    if let ValueKind::Op { op: o, args } = &mut g.values[at].kind {
        *o = op;
        args[slot] = new_arg;
    }
}

/// Stable reorder: constants, then everything else in its order.
fn constants_first(g: &mut Graph) {
    let is_const = |v: &Value| matches!(v.kind, ValueKind::Const(_));
    let order: Vec<usize> = (0..g.values.len())
        .filter(|&i| is_const(&g.values[i]))
        .chain((0..g.values.len()).filter(|&i| !is_const(&g.values[i])))
        .collect();
    let mut remap = vec![0u32; order.len()];
    for (new, &old) in order.iter().enumerate() {
        remap[old] = new as u32;
    }
    let mut old: Vec<Option<Value>> = std::mem::take(&mut g.values)
        .into_iter()
        .map(Some)
        .collect();
    g.values = order
        .iter()
        .map(|&i| old[i].take().expect("each value moved once"))
        .collect();
    let fix = |id: &mut ValueId| *id = ValueId(remap[id.index()]);
    for v in &mut g.values {
        if let ValueKind::Op { args, .. } = &mut v.kind {
            args.iter_mut().for_each(fix);
        }
    }
    g.inputs.iter_mut().for_each(fix);
    g.outputs.iter_mut().for_each(|o| fix(&mut o.value));
}
