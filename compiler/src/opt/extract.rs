//! DAG-aware greedy extraction: a class's cost is the sum of the own costs
//! of the distinct classes its chosen subgraph needs, so a value shared by
//! many users is paid for once (egg's tree-cost extractor would count it
//! once per path, which explodes on residual networks).

use super::lang::{Nnc, EG};
use egg::{Id, Language};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// Chosen node per class, from the roots.
pub struct Choice {
    pub best: HashMap<Id, Nnc>,
    pub total: f64,
}

type Set = Rc<BTreeMap<Id, f64>>;

/// `own(node)` is the node's own cost (children excluded); None = cannot be
/// extracted (e.g. lacks a type).
pub fn extract(eg: &EG, roots: &[Id], own: &dyn Fn(&EG, &Nnc) -> Option<f64>) -> Option<Choice> {
    // The e-graph does not change during extraction: price each node once
    // (the swap search re-prices whole graphs).
    let memo: std::cell::RefCell<HashMap<Nnc, Option<f64>>> = Default::default();
    let own = |eg: &EG, n: &Nnc| -> Option<f64> {
        if let Some(&c) = memo.borrow().get(n) {
            return c;
        }
        let c = own(eg, n);
        memo.borrow_mut().insert(n.clone(), c);
        c
    };
    let own = &own;
    let mut best: HashMap<Id, (f64, Set, Nnc)> = HashMap::new();
    let classes: Vec<Id> = {
        let mut v: Vec<Id> = eg.classes().map(|c| c.id).collect();
        v.sort();
        v
    };
    let mut changed = true;
    let mut rounds = 0;
    while changed && rounds < 1000 {
        changed = false;
        rounds += 1;
        for &cid in &classes {
            for node in &eg[cid].nodes {
                let Some(oc) = own(eg, node) else { continue };
                let mut set: BTreeMap<Id, f64> = BTreeMap::new();
                let mut ok = true;
                for &ch in node.children() {
                    let ch = eg.find(ch);
                    match best.get(&ch) {
                        Some((_, s, _)) => {
                            if set.is_empty() {
                                set = (**s).clone();
                            } else {
                                for (k, v) in s.iter() {
                                    set.insert(*k, *v);
                                }
                            }
                        }
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok || set.contains_key(&cid) {
                    continue; // a cycle through this class
                }
                set.insert(cid, oc);
                let total: f64 = set.values().sum();
                let better = match best.get(&cid) {
                    None => true,
                    // Strictly better, with a tolerance so float noise cannot flip-flop;
                    // ties keep the first node found (deterministic order).
                    Some((t, _, _)) => total < t - 1e-9,
                };
                if better {
                    best.insert(cid, (total, Rc::new(set), node.clone()));
                    changed = true;
                }
            }
        }
    }
    let mut choice: HashMap<Id, Nnc> = best.into_iter().map(|(k, (_, _, n))| (k, n)).collect();
    let roots: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    let mut total = dag_cost(eg, &choice, &roots, own)?;
    // Greedy choices are per class; a class shared by several roots can make
    // a locally dearer node globally cheaper (e.g. keep mul(conv) when the
    // conv is needed anyway). Improve by single-class swaps on the whole DAG.
    let mut budget = 1500usize;
    for _ in 0..8 {
        let mut improved = false;
        let mut live: Vec<Id> = reachable(eg, &choice, &roots).into_iter().collect();
        live.sort();
        for cid in live {
            for node in &eg[cid].nodes {
                if Some(node) == choice.get(&cid) || own(eg, node).is_none() {
                    continue;
                }
                if node
                    .children()
                    .iter()
                    .any(|c| !choice.contains_key(&eg.find(*c)))
                {
                    continue;
                }
                let old = choice
                    .insert(cid, node.clone())
                    .expect("live classes are chosen");
                match dag_cost(eg, &choice, &roots, own) {
                    Some(t) if t < total - 1e-6 => {
                        total = t;
                        improved = true;
                    }
                    _ => {
                        choice.insert(cid, old);
                    }
                }
            }
        }
        // Pairs of swaps, for choices that only pay off together (e.g. one
        // shared conv feeding both a mul and a relu instead of two fused convs).
        if !improved {
            let mut multi: Vec<Id> = reachable(eg, &choice, &roots)
                .into_iter()
                .filter(|&c| eg[c].nodes.len() > 1)
                .collect();
            multi.sort();
            multi.truncate(64);
            // Only classes whose alternatives read a common class compete.
            let kids: HashMap<Id, std::collections::BTreeSet<Id>> = multi
                .iter()
                .map(|&c| {
                    (
                        c,
                        eg[c]
                            .nodes
                            .iter()
                            .flat_map(|n| n.children().iter().map(|&x| eg.find(x)))
                            .collect(),
                    )
                })
                .collect();
            'pairs: for (i, &a) in multi.iter().enumerate() {
                for &b in &multi[i + 1..] {
                    if kids[&a].is_disjoint(&kids[&b]) {
                        continue;
                    }
                    for na in &eg[a].nodes {
                        for nb in &eg[b].nodes {
                            if own(eg, na).is_none() || own(eg, nb).is_none() {
                                continue;
                            }
                            let ready = |n: &Nnc, ch: &HashMap<Id, Nnc>| {
                                n.children().iter().all(|c| ch.contains_key(&eg.find(*c)))
                            };
                            if !ready(na, &choice) || !ready(nb, &choice) {
                                continue;
                            }
                            // A fixed evaluation budget keeps extraction fast and deterministic.
                            budget = budget.saturating_sub(1);
                            if budget == 0 {
                                break 'pairs;
                            }
                            let oa = choice.insert(a, na.clone()).expect("chosen");
                            let ob = choice.insert(b, nb.clone()).expect("chosen");
                            match dag_cost(eg, &choice, &roots, own) {
                                Some(t) if t < total - 1e-6 => {
                                    total = t;
                                    improved = true;
                                    break 'pairs;
                                }
                                _ => {
                                    choice.insert(a, oa);
                                    choice.insert(b, ob);
                                }
                            }
                        }
                    }
                }
            }
        }
        if !improved {
            break;
        }
    }
    Some(Choice {
        total,
        best: choice,
    })
}

/// Classes reachable from the roots through the chosen nodes.
fn reachable(eg: &EG, choice: &HashMap<Id, Nnc>, roots: &[Id]) -> std::collections::BTreeSet<Id> {
    let mut seen = std::collections::BTreeSet::new();
    let mut stack: Vec<Id> = roots.to_vec();
    while let Some(c) = stack.pop() {
        let c = eg.find(c);
        if !seen.insert(c) {
            continue;
        }
        if let Some(n) = choice.get(&c) {
            stack.extend(n.children().iter().copied());
        }
    }
    seen
}

/// Sum of own costs over the distinct classes the chosen DAG needs; None if
/// the choice has a cycle or a missing class.
fn dag_cost(
    eg: &EG,
    choice: &HashMap<Id, Nnc>,
    roots: &[Id],
    own: &dyn Fn(&EG, &Nnc) -> Option<f64>,
) -> Option<f64> {
    // Iterative DFS with colors: 1 = on the current path, 2 = finished.
    let mut state: HashMap<Id, u8> = HashMap::new();
    let mut total = 0.0;
    for &r in roots {
        let mut stack: Vec<(Id, bool)> = vec![(eg.find(r), false)];
        while let Some((c, exiting)) = stack.pop() {
            if exiting {
                state.insert(c, 2);
                continue;
            }
            match state.get(&c) {
                Some(2) => continue,
                Some(1) => return None,
                _ => {}
            }
            let n = choice.get(&c)?;
            state.insert(c, 1);
            total += own(eg, n)?;
            stack.push((c, true));
            for &ch in n.children() {
                let ch = eg.find(ch);
                match state.get(&ch) {
                    Some(2) => {}
                    Some(1) => return None,
                    _ => stack.push((ch, false)),
                }
            }
        }
    }
    Some(total)
}
