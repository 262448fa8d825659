//! Absorbs the head-split re-indexing around fused attention into strided
//! views (see [`crate::ir::View`]): q, kᵀ and v are read straight from the
//! tensor that reshapes/transposes/constant-index gathers re-index, and the
//! result is written straight into the layout that its reshape/transpose
//! consumers produce.
//!
//! A pass over the extracted graph like [`super::fuse`]: a view is always
//! at least as good as the copy it replaces once the graph is fixed, and
//! inside saturation it would only multiply the ways to write one layout.
//! Each operand takes the deepest absorbable chain whose view keeps unit
//! column stride (the kernel's GEMMs need it); anything else stays as is.
//! kᵀ takes its deepest chain regardless: without unit columns the kernel
//! packs it once with the same strided copy a transpose kernel would run,
//! so the chain's other copies and the intermediate buffers go away.

use crate::ir::{AttnViews, Graph, Op, TensorType, ValueId, ValueKind, View};

/// The operand of a pure re-indexing op and how its result views it.
fn step_back(g: &Graph, id: ValueId) -> Option<(ValueId, Step)> {
    let ValueKind::Op { op, args } = &g.value(id).kind else {
        return None;
    };
    let step = match op {
        Op::Reshape { shape } => Step::Reshape(shape.clone()),
        Op::Transpose { perm } => Step::Transpose(perm.clone()),
        Op::Gather { axis } => {
            let idx = g.as_const(args[1])?;
            let i = *idx.as_i64()?.first()?;
            let n = g.ty(args[0]).shape[*axis] as i64;
            if idx.numel() != 1 || i < -n || i >= n {
                return None;
            }
            Step::Index(
                *axis,
                (if i < 0 { i + n } else { i }) as usize,
                idx.shape.len(),
            )
        }
        _ => return None,
    };
    Some((args[0], step))
}

#[derive(Clone)]
enum Step {
    Reshape(Vec<usize>),
    Transpose(Vec<usize>),
    /// Gather of one constant index at `axis` with an index tensor of
    /// `rank` (all dims 1).
    Index(usize, usize, usize),
}

impl Step {
    fn apply(&self, v: &View) -> Option<View> {
        Some(match self {
            Step::Reshape(s) => v.reshape(s)?,
            Step::Transpose(p) => v.transpose(p),
            Step::Index(axis, i, rank) => {
                let mut w = v.index(*axis, *i);
                for _ in 0..*rank {
                    w.shape.insert(*axis, 1);
                    w.strides.insert(*axis, 0);
                }
                w
            }
        })
    }
}

fn unit_cols(v: &View) -> bool {
    !v.shape.is_empty() && v.stride_or(v.shape.len() - 1, 1) == 1
}

/// The deepest producer that `id` re-indexes (with unit column stride when
/// `unit`), and the view; `None` when `id` is read best as itself.
fn input_view(g: &Graph, id: ValueId, unit: bool) -> Option<(ValueId, View)> {
    let mut chain = Vec::new();
    let mut cur = id;
    while let Some((src, step)) = step_back(g, cur) {
        chain.push(step);
        cur = src;
    }
    let want = &g.ty(id).shape;
    // Base after `n` steps back: try the deepest first.
    for n in (1..=chain.len()).rev() {
        let mut base = id;
        for _ in 0..n {
            base = step_back(g, base).expect("chain").0;
        }
        let mut v = Some(View::contiguous(&g.ty(base).shape));
        for s in chain[..n].iter().rev() {
            v = v.and_then(|v| s.apply(&v));
        }
        if let Some(v) = v.filter(|v| (!unit || unit_cols(v)) && &v.shape == want) {
            return Some((base, v));
        }
    }
    None
}

/// The last value of the single-use reshape/transpose chain after `id`
/// whose layout the result can be written in with unit column stride, and
/// the view of `id`'s result in it.
fn output_view(g: &Graph, id: ValueId) -> Option<(ValueId, View)> {
    let uses = g.use_counts();
    let mut is_output = vec![false; g.values.len()];
    for o in &g.outputs {
        is_output[o.value.index()] = true;
    }
    let mut chain = vec![id];
    let mut cur = id;
    while uses[cur.index()] == 1 && !is_output[cur.index()] {
        let Some(u) = g.ids().find(|&u| match &g.value(u).kind {
            ValueKind::Op {
                op: Op::Reshape { .. } | Op::Transpose { .. },
                args,
            } => args[0] == cur,
            _ => false,
        }) else {
            break;
        };
        chain.push(u);
        cur = u;
    }
    for m in (1..chain.len()).rev() {
        // Undo the steps from chain[m] back to chain[0].
        let mut v = Some(View::contiguous(&g.ty(chain[m]).shape));
        for j in (1..=m).rev() {
            let prev = &g.ty(chain[j - 1]).shape;
            v = v.and_then(|v| match &g.value(chain[j]).kind {
                ValueKind::Op {
                    op: Op::Reshape { .. },
                    ..
                } => v.reshape(prev),
                ValueKind::Op {
                    op: Op::Transpose { perm },
                    ..
                } => {
                    let mut inv = vec![0; perm.len()];
                    for (i, &p) in perm.iter().enumerate() {
                        inv[p] = i;
                    }
                    Some(v.transpose(&inv))
                }
                _ => None,
            });
        }
        if let Some(v) = v.filter(unit_cols) {
            return Some((chain[m], v));
        }
    }
    None
}

/// Gives every plain attention op the views it can absorb; returns how many
/// ops changed.
pub fn absorb_attention_views(g: &mut Graph) -> usize {
    let mut made = 0;
    for id in g.ids().collect::<Vec<_>>() {
        let ValueKind::Op {
            op:
                Op::Attention {
                    scale,
                    causal,
                    softcap,
                    views: None,
                },
            args,
        } = &g.value(id).kind
        else {
            continue;
        };
        // Empty tensors: nothing to save, and no view arithmetic to trust.
        if g.ty(id).numel() == 0 || args.iter().any(|&a| g.ty(a).numel() == 0) {
            continue;
        }
        let (scale, causal, softcap) = (*scale, *causal, *softcap);
        let mut args = args.clone();
        let mut w = AttnViews::default();
        for (i, slot) in [&mut w.q, &mut w.kt, &mut w.v].into_iter().enumerate() {
            if let Some((base, v)) = input_view(g, args[i], i != 1) {
                args[i] = base;
                *slot = Some(v);
            }
        }
        let target = match output_view(g, id) {
            Some((t, v)) => {
                w.out = Some((g.ty(t).shape.clone(), v));
                t
            }
            None => id,
        };
        if w == AttnViews::default() {
            continue;
        }
        let op = Op::Attention {
            scale,
            causal,
            softcap,
            views: Some(Box::new(w)),
        };
        let tys: Vec<&TensorType> = args.iter().map(|&a| g.ty(a)).collect();
        if op.infer(&tys).ok().as_ref() != Some(g.ty(target)) {
            continue;
        }
        g.values[target.index()].kind = ValueKind::Op { op, args };
        made += 1;
    }
    if made > 0 {
        g.remove_dead();
    }
    made
}
