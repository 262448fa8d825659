//! Lowering: decides where every value lives and the order kernels run.
//!
//! Values are placed in the caller's input/output buffers, in embedded
//! read-only weights, or in one workspace arena whose slots are reused once
//! a value is dead (greedy first-fit over live intervals). Reshapes alias
//! their operand instead of copying.

pub mod legalize;

use crate::ir::{Graph, Op, ValueId, ValueKind};

/// Alignment of every workspace slot (cache line; also the ABI minimum).
pub const ALIGN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// `inputs[i]` of the run call.
    Input(usize),
    /// `outputs[i]` of the run call.
    Output(usize),
    /// The `i`-th embedded constant.
    Weight(usize),
    /// Workspace byte offset.
    Work(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run the kernel computing `value` (its operands and result are placed).
    Kernel {
        value: ValueId,
        scratch: Option<usize>,
    },
    /// Copy `src` into graph output `output` (outputs that are inputs,
    /// constants, aliases or repeated values).
    Copy { src: ValueId, output: usize },
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// Location of each value (None for values never materialized).
    pub locs: Vec<Option<Loc>>,
    pub steps: Vec<Step>,
    /// Constant values in weight order.
    pub weights: Vec<ValueId>,
    pub workspace_size: usize,
}

impl Plan {
    pub fn loc(&self, v: ValueId) -> Loc {
        self.locs[v.index()].expect("every used value is placed")
    }
}

fn round_up(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// Plans `g`. `scratch_bytes(g, v)` says how much temporary memory the
/// kernel for `v` needs (from codegen, which knows its algorithms).
pub fn plan(g: &Graph, scratch_bytes: &dyn Fn(&Graph, ValueId) -> usize) -> Plan {
    let n = g.values.len();
    let mut locs: Vec<Option<Loc>> = vec![None; n];
    let mut alias_of: Vec<Option<ValueId>> = vec![None; n];
    let mut weights = Vec::new();
    let uses = g.use_counts();

    for (i, &id) in g.inputs.iter().enumerate() {
        locs[id.index()] = Some(Loc::Input(i));
    }
    for id in g.ids() {
        if let ValueKind::Const(_) = g.value(id).kind {
            if uses[id.index()] > 0 {
                locs[id.index()] = Some(Loc::Weight(weights.len()));
                weights.push(id);
            }
        }
    }
    // The first output naming a computed value is computed in place there.
    let mut copies = Vec::new();
    for (j, o) in g.outputs.iter().enumerate() {
        let v = o.value;
        let computed = matches!(g.value(v).kind, ValueKind::Op { .. });
        if computed && locs[v.index()].is_none() {
            locs[v.index()] = Some(Loc::Output(j));
        } else {
            copies.push(Step::Copy { src: v, output: j });
        }
    }
    // Reshapes whose result is not an output alias their operand.
    for id in g.ids() {
        if let ValueKind::Op {
            op: Op::Reshape { .. },
            args,
        } = &g.value(id).kind
        {
            if locs[id.index()].is_none() {
                let root = alias_of[args[0].index()].unwrap_or(args[0]);
                alias_of[id.index()] = Some(root);
            }
        }
    }

    // Steps and live intervals (in step indices) of workspace values.
    let mut steps = Vec::new();
    let mut def_step = vec![usize::MAX; n];
    let mut last_use = vec![0usize; n];
    for id in g.ids() {
        if let ValueKind::Op { args, .. } = &g.value(id).kind {
            if uses[id.index()] == 0 && locs[id.index()].is_none() {
                continue;
            }
            if alias_of[id.index()].is_some() {
                continue;
            }
            let s = steps.len();
            def_step[id.index()] = s;
            last_use[id.index()] = s;
            for a in args {
                let r = alias_of[a.index()].unwrap_or(*a);
                last_use[r.index()] = last_use[r.index()].max(s);
            }
            let sb = scratch_bytes(g, id);
            steps.push(Step::Kernel {
                value: id,
                scratch: (sb > 0).then_some(sb),
            });
        }
    }
    for c in &copies {
        if let Step::Copy { src, .. } = c {
            let r = alias_of[src.index()].unwrap_or(*src);
            last_use[r.index()] = last_use[r.index()].max(steps.len());
        }
    }
    let copy_step = steps.len();
    steps.extend(copies);
    let _ = copy_step;

    // Greedy first-fit assignment of workspace offsets, in definition order.
    let mut live: Vec<(usize, usize, usize)> = Vec::new(); // (offset, size, last step)
    let mut size = 0usize;
    let mut place =
        |bytes: usize, start: usize, end: usize, live: &mut Vec<(usize, usize, usize)>| -> usize {
            live.retain(|&(_, _, e)| e >= start);
            live.sort_unstable();
            let bytes = round_up(bytes.max(1));
            let mut off = 0;
            for &(o, s, _) in live.iter() {
                if off + bytes <= o {
                    break;
                }
                off = off.max(round_up(o + s));
            }
            live.push((off, bytes, end));
            size = size.max(off + bytes);
            off
        };
    let mut scratch_off = vec![None; steps.len()];
    for (si, st) in steps.iter().enumerate() {
        if let Step::Kernel { value, scratch } = st {
            if locs[value.index()].is_none() {
                let off = place(g.ty(*value).bytes(), si, last_use[value.index()], &mut live);
                locs[value.index()] = Some(Loc::Work(off));
            }
            if let Some(sb) = scratch {
                scratch_off[si] = Some(place(*sb, si, si, &mut live));
            }
        }
    }
    for (si, st) in steps.iter_mut().enumerate() {
        if let Step::Kernel { scratch, .. } = st {
            *scratch = scratch_off[si];
        }
    }
    for id in g.ids() {
        if let Some(r) = alias_of[id.index()] {
            locs[id.index()] = locs[r.index()];
        }
    }
    Plan {
        locs,
        steps,
        weights,
        workspace_size: round_up(size),
    }
}
