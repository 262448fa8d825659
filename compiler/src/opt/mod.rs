//! The optimizer: equality saturation with egg over nnc's IR.
//!
//! The graph is loaded into an e-graph (one class per value), rewritten by
//! [`rules`] under node/iteration/time limits, and the cheapest equivalent
//! graph under the target's [`cost::Machine`] model is extracted with a
//! DAG-aware extractor.

pub mod cost;
pub mod extract;
pub mod fuse;
pub mod lang;
pub mod rules;
pub mod views;

use crate::ir::{Graph, TensorType, ValueId, ValueKind};
use egg::{Id, Runner, StopReason};
use lang::{add_op, Nnc, Tables, EG};
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Saturation bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    pub iterations: usize,
    pub nodes: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            iterations: 16,
            nodes: 100_000,
            time: Duration::from_secs(2),
        }
    }
}

/// What saturation did (`--emit egraph-stats`).
#[derive(Clone, Debug)]
pub struct Stats {
    pub nodes: usize,
    pub classes: usize,
    pub iterations: usize,
    pub stop_reason: String,
    pub saturate_ms: f64,
    pub extract_ms: f64,
    pub cost_before_ns: f64,
    pub cost_after_ns: f64,
    /// Ops in the graph before and after, by name.
    pub ops_before: Vec<(String, usize)>,
    pub ops_after: Vec<(String, usize)>,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "e-graph: {} nodes, {} classes, {} iterations, stopped: {}",
            self.nodes, self.classes, self.iterations, self.stop_reason
        )?;
        writeln!(
            f,
            "time: saturation {:.2} ms, extraction {:.2} ms",
            self.saturate_ms, self.extract_ms
        )?;
        writeln!(
            f,
            "estimated cost: {:.1} us -> {:.1} us",
            self.cost_before_ns / 1e3,
            self.cost_after_ns / 1e3
        )?;
        let after: HashMap<&str, usize> = self
            .ops_after
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        let before: HashMap<&str, usize> = self
            .ops_before
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        let mut names: Vec<&str> = before.keys().chain(after.keys()).copied().collect();
        names.sort();
        names.dedup();
        writeln!(f, "ops (before -> after):")?;
        for n in names {
            writeln!(
                f,
                "  {n:<16} {:>4} -> {:>4}",
                before.get(n).unwrap_or(&0),
                after.get(n).unwrap_or(&0)
            )?;
        }
        Ok(())
    }
}

pub fn op_histogram(g: &Graph) -> Vec<(String, usize)> {
    let uses = g.use_counts();
    let mut h: HashMap<String, usize> = HashMap::new();
    for id in g.ids() {
        if let ValueKind::Op { op, .. } = &g.value(id).kind {
            if uses[id.index()] > 0 {
                *h.entry(op.name().to_string()).or_default() += 1;
            }
        }
    }
    let mut v: Vec<_> = h.into_iter().collect();
    v.sort();
    v
}

/// Estimated cost of a whole graph under `m` (sum over live ops).
pub fn graph_cost(g: &Graph, m: &cost::Machine) -> f64 {
    let uses = g.use_counts();
    g.ids()
        .filter(|id| uses[id.index()] > 0)
        .map(|id| match &g.value(id).kind {
            ValueKind::Op { op, args } => {
                let tys: Vec<&TensorType> = args.iter().map(|&a| g.ty(a)).collect();
                cost::op_ns(m, op, &tys, g.ty(id))
            }
            _ => 0.0,
        })
        .sum()
}

/// Optimizes `g` for machine `m`; returns the new graph and what happened.
pub fn optimize(g: &Graph, m: &cost::Machine, limits: &Limits) -> (Graph, Stats) {
    let t0 = Instant::now();
    let mut eg: EG = EG::new(Tables {
        inputs: g.inputs.iter().map(|&i| g.ty(i).clone()).collect(),
        l2_bytes: m.l2_bytes,
        winograd: m.winograd,
        asm_gemm: m.asm_gemm,
        blocked_conv: m.blocked_conv,
        ..Default::default()
    });
    let mut class_of: Vec<Id> = Vec::with_capacity(g.values.len());
    for id in g.ids() {
        let v = g.value(id);
        let c = match &v.kind {
            ValueKind::Input(i) => eg.add(Nnc::Input(*i as u32)),
            ValueKind::Const(t) => {
                let i = eg.analysis.konst(t.clone());
                eg.add(Nnc::Const(i))
            }
            ValueKind::Op { op, args } => {
                let a: Vec<Id> = args.iter().map(|a| class_of[a.index()]).collect();
                add_op(&mut eg, op, &a)
            }
        };
        class_of.push(c);
    }
    eg.rebuild();
    let roots: Vec<Id> = g
        .outputs
        .iter()
        .map(|o| class_of[o.value.index()])
        .collect();
    let runner = Runner::default()
        .with_egraph(eg)
        .with_iter_limit(limits.iterations)
        .with_node_limit(limits.nodes)
        .with_time_limit(limits.time)
        .run(&rules::rules());
    let saturate_ms = t0.elapsed().as_secs_f64() * 1e3;
    let stop_reason = match &runner.stop_reason {
        Some(StopReason::Saturated) => "saturated".to_string(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(StopReason::TimeLimit(t)) => format!("time limit ({t:.2} s)"),
        Some(StopReason::Other(s)) => s.clone(),
        None => "not run".into(),
    };
    let iterations = runner.iterations.len();
    let eg = runner.egraph;
    let t1 = Instant::now();
    let own = |eg: &EG, n: &Nnc| -> Option<f64> {
        match n {
            Nnc::Input(_) | Nnc::Const(_) | Nnc::Attr(_) => Some(0.0),
            Nnc::Op(_, ch) => {
                let op = lang::attr_of(eg, ch[0])?;
                let tys: Option<Vec<TensorType>> =
                    ch[1..].iter().map(|&c| eg[c].data.ty.clone()).collect();
                let tys = tys?;
                let out = op.infer(&tys.iter().collect::<Vec<_>>()).ok()?;
                Some(cost::op_ns(m, op, &tys.iter().collect::<Vec<_>>(), &out))
            }
        }
    };
    let choice = extract::extract(&eg, &roots, &own);
    let extract_ms = t1.elapsed().as_secs_f64() * 1e3;
    let mut new_graph = match &choice {
        Some(ch) => rebuild(g, &eg, &class_of, ch).unwrap_or_else(|| g.clone()),
        None => g.clone(),
    };
    fuse::fuse_elementwise(&mut new_graph);
    views::absorb_attention_views(&mut new_graph);
    let stats = Stats {
        nodes: eg.total_size(),
        classes: eg.number_of_classes(),
        iterations,
        stop_reason,
        saturate_ms,
        extract_ms,
        cost_before_ns: graph_cost(g, m),
        cost_after_ns: graph_cost(&new_graph, m),
        ops_before: op_histogram(g),
        ops_after: op_histogram(&new_graph),
    };
    (new_graph, stats)
}

/// Builds a graph from the extracted nodes, keeping input order, output
/// names, and the ONNX names/origins of classes that existed before.
fn rebuild(g: &Graph, eg: &EG, class_of: &[Id], ch: &extract::Choice) -> Option<Graph> {
    let mut out = Graph::new(g.name.clone());
    let mut names: HashMap<Id, (String, Option<String>)> = HashMap::new();
    for (i, &c) in class_of.iter().enumerate() {
        let v = &g.values[i];
        names
            .entry(eg.find(c))
            .or_insert((v.name.clone(), v.origin.clone()));
    }
    let mut memo: HashMap<Id, ValueId> = HashMap::new();
    for &i in &g.inputs {
        let v = g.value(i);
        let nid = out.add_input(v.name.clone(), v.ty.clone());
        memo.insert(eg.find(class_of[i.index()]), nid);
    }
    let mut fresh = 0usize;
    for o in &g.outputs {
        let root = eg.find(class_of[o.value.index()]);
        let id = build(&mut out, eg, ch, &names, &mut memo, &mut fresh, root)?;
        out.add_output(o.name.clone(), id);
    }
    out.remove_dead();
    out.verify().ok()?;
    Some(out)
}

fn build(
    out: &mut Graph,
    eg: &EG,
    ch: &extract::Choice,
    names: &HashMap<Id, (String, Option<String>)>,
    memo: &mut HashMap<Id, ValueId>,
    fresh: &mut usize,
    class: Id,
) -> Option<ValueId> {
    let class = eg.find(class);
    if let Some(&v) = memo.get(&class) {
        return Some(v);
    }
    let node = ch.best.get(&class)?;
    let (name, origin) = names.get(&class).cloned().unwrap_or_else(|| {
        *fresh += 1;
        (format!("opt_{fresh}"), None)
    });
    let id = match node {
        Nnc::Input(_) | Nnc::Attr(_) => return None,
        Nnc::Const(i) => out.add_const(name, eg.analysis.consts[*i as usize].clone()),
        Nnc::Op(_, children) => {
            let op = lang::attr_of(eg, children[0])?.clone();
            let mut args = Vec::new();
            for &c in &children[1..] {
                args.push(build(out, eg, ch, names, memo, fresh, c)?);
            }
            let id = out.add_op(name, op, &args).ok()?;
            if let Some(o) = origin {
                out.set_origin(id, o);
            }
            id
        }
    };
    memo.insert(class, id);
    Some(id)
}

#[cfg(test)]
mod tests;
