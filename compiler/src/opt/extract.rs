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
    let mut all: BTreeMap<Id, f64> = BTreeMap::new();
    for &r in roots {
        let (_, s, _) = best.get(&eg.find(r))?;
        all.extend(s.iter().map(|(k, v)| (*k, *v)));
    }
    Some(Choice {
        total: all.values().sum(),
        best: best.into_iter().map(|(k, (_, _, n))| (k, n)).collect(),
    })
}
