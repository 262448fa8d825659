//! Graph rewrites that put ops in the form the kernels expect, done on
//! constants at compile time so the generated code never pays for them.

use crate::ir::{eval, Graph, Op, ValueKind};
use std::sync::Arc;

/// - Gemm with `trans_b` and constant B: transpose B once, here.
/// - LayerNorm with constant scale/bias that broadcast: expand them to the
///   normalized shape so the kernel reads one value per element.
pub fn legalize(g: &mut Graph) {
    for i in 0..g.values.len() {
        let (op, args) = match &g.values[i].kind {
            ValueKind::Op { op, args } => (op.clone(), args.clone()),
            _ => continue,
        };
        match op {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b: true,
            } => {
                let Some(b) = g.as_const(args[1]).cloned() else {
                    continue;
                };
                let Ok(bt) = eval::eval_op(&Op::Transpose { perm: vec![1, 0] }, &[&b]) else {
                    continue;
                };
                let name = format!("{}.T", g.value(args[1]).name);
                let nb = push_const_before(g, i, name, bt);
                set_op(
                    g,
                    i + 1,
                    Op::Gemm {
                        alpha,
                        beta,
                        trans_a,
                        trans_b: false,
                    },
                    nb,
                    1,
                );
            }
            Op::LayerNorm { axis, .. } => {
                let norm: Vec<usize> = g.ty(args[0]).shape[axis..].to_vec();
                for (slot, &p) in args.iter().enumerate().skip(1) {
                    let idx = current_index(g, i, &args, slot);
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
                    let np = push_const_before(g, idx, name, e);
                    let cur = match &g.values[idx + 1].kind {
                        ValueKind::Op { op, .. } => op.clone(),
                        _ => unreachable!(),
                    };
                    set_op(g, idx + 1, cur, np, slot);
                }
            }
            _ => {}
        }
    }
    g.remove_dead();
}

/// Position of the node that started at `start` (constants may have been
/// inserted before it while legalizing earlier slots).
fn current_index(g: &Graph, start: usize, args: &[crate::ir::ValueId], _slot: usize) -> usize {
    let _ = args;
    let mut i = start;
    while !matches!(g.values[i].kind, ValueKind::Op { .. }) {
        i += 1;
    }
    i
}

/// Inserts a constant at position `at`, shifting later value ids by one.
fn push_const_before(
    g: &mut Graph,
    at: usize,
    name: String,
    t: crate::ir::Tensor,
) -> crate::ir::ValueId {
    let ty = t.ty();
    let v = crate::ir::Value {
        name,
        ty,
        kind: ValueKind::Const(Arc::new(t)),
        origin: None,
    };
    g.values.insert(at, v);
    let shift = |id: &mut crate::ir::ValueId| {
        if id.index() >= at {
            id.0 += 1;
        }
    };
    for val in g.values.iter_mut().skip(at + 1) {
        if let ValueKind::Op { args, .. } = &mut val.kind {
            args.iter_mut().for_each(shift);
        }
    }
    g.inputs.iter_mut().for_each(shift);
    for o in g.outputs.iter_mut() {
        shift(&mut o.value);
    }
    crate::ir::ValueId(at as u32)
}

fn set_op(g: &mut Graph, at: usize, op: Op, new_arg: crate::ir::ValueId, slot: usize) {
    if let ValueKind::Op { op: o, args } = &mut g.values[at].kind {
        *o = op;
        args[slot] = new_arg;
    }
}
