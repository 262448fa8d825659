//! Einsum with one or two operands, lowered to ReduceSum, Transpose,
//! Reshape and MatMul: letters summed away by one operand alone are reduced
//! first, then the two operands become [batch…, M, K] × [batch…, K, N].
//! Repeated letters within one operand (diagonals) and three or more
//! operands are refused by name.

use crate::builder::Ctx;
use crate::node::{Node, Result};
use nnc_compiler::ir::{Op, ReduceOp, ValueId};

/// Parses one term into letters, expanding `...` to `ell` placeholder
/// letters (uppercase, which equations may not use for ordinary indices
/// together with an ellipsis) for a tensor of rank `rank`.
fn term(n: &Node, t: &str, rank: Option<usize>, ell: &mut Option<usize>) -> Result<Vec<char>> {
    let bad = |why: &str| n.err(format!("equation term {t:?}: {why}"));
    let (head, tail, has) = match t.split_once("...") {
        Some((h, tl)) => (h, tl, true),
        None => (t, "", false),
    };
    let letters = |s: &str| -> Result<Vec<char>> {
        s.chars()
            .map(|ch| {
                if ch.is_ascii_alphabetic() {
                    Ok(ch)
                } else {
                    Err(bad(&format!("{ch:?} is not a letter")))
                }
            })
            .collect()
    };
    let (h, tl) = (letters(head)?, letters(tail)?);
    if !has {
        return Ok(h);
    }
    if tl.iter().chain(&h).any(|c| c.is_ascii_uppercase()) {
        return Err(bad("uppercase indices with '...' are not supported"));
    }
    let k = match rank {
        Some(r) => r
            .checked_sub(h.len() + tl.len())
            .ok_or_else(|| bad("more indices than the operand's rank"))?,
        None => ell.ok_or_else(|| bad("'...' in the output needs one in an input"))?,
    };
    match ell {
        Some(e) if *e != k && rank.is_some() => {
            return Err(bad("operands with different '...' ranks are not supported"))
        }
        _ => *ell = Some(k),
    }
    let mut v = h;
    v.extend((0..k).map(|i| (b'A' + i as u8) as char));
    v.extend(tl);
    Ok(v)
}

pub(super) fn einsum(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let eq: String = n
        .attr_string("equation", "")?
        .chars()
        .filter(|ch| !ch.is_whitespace())
        .collect();
    let count = c.num_inputs(n);
    if count == 0 || count > 2 {
        return Err(n.err(format!(
            "Einsum with {count} operands is not supported (one or two are)"
        )));
    }
    let ops: Vec<ValueId> = (0..count).map(|i| c.input(n, i)).collect::<Result<_>>()?;
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != count {
        return Err(n.err(format!(
            "equation {eq:?} has {} operand terms for {count} inputs",
            terms.len()
        )));
    }
    let mut ell = None;
    let mut ins = Vec::new();
    for (t, &x) in terms.iter().zip(&ops) {
        let v = term(n, t, Some(c.ty(x).rank()), &mut ell)?;
        if v.len() != c.ty(x).rank() {
            return Err(n.err(format!(
                "equation term {t:?} has {} indices for an operand of rank {}",
                v.len(),
                c.ty(x).rank()
            )));
        }
        let mut seen = v.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != v.len() {
            return Err(n.err(format!(
                "equation {eq:?}: a repeated index within one operand (diagonal) is not supported"
            )));
        }
        ins.push(v);
    }
    let out: Vec<char> = match rhs {
        Some(r) => term(n, r, None, &mut ell)?,
        None => {
            // Implicit output: '...' dims, then letters used once, sorted.
            let all: Vec<char> = ins.iter().flatten().copied().collect();
            let mut o: Vec<char> = all
                .iter()
                .copied()
                .filter(|ch| ch.is_ascii_uppercase())
                .collect();
            o.dedup();
            let mut once: Vec<char> = all
                .iter()
                .copied()
                .filter(|ch| {
                    ch.is_ascii_lowercase() && all.iter().filter(|x| *x == ch).count() == 1
                })
                .collect();
            once.sort_unstable();
            o.extend(once);
            o
        }
    };
    // Sizes per letter (broadcast 1 against n allowed).
    let mut size = std::collections::HashMap::new();
    for (v, &x) in ins.iter().zip(&ops) {
        for (ch, d) in v.iter().zip(c.shape(x)) {
            let e = size.entry(*ch).or_insert(d);
            if *e == 1 {
                *e = d;
            } else if d != 1 && d != *e {
                return Err(n.err(format!("index {ch:?} has sizes {} and {d}", *e)));
            }
        }
    }
    if let Some(ch) = out.iter().find(|ch| !size.contains_key(ch)) {
        return Err(n.err(format!("output index {ch:?} appears in no operand")));
    }
    // Reduce letters that only one operand has and the output lacks.
    let mut vals = Vec::new();
    for (k, (v, &x)) in ins.iter().zip(&ops).enumerate() {
        let others: Vec<char> = ins
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != k)
            .flat_map(|(_, w)| w.iter().copied())
            .collect();
        let axes: Vec<usize> = (0..v.len())
            .filter(|&i| !out.contains(&v[i]) && !others.contains(&v[i]))
            .collect();
        let (x, v) = if axes.is_empty() {
            (x, v.clone())
        } else {
            let r = c.op(
                n,
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes: axes.clone(),
                    keepdims: false,
                },
                &[x],
            )?;
            let kept = (0..v.len())
                .filter(|i| !axes.contains(i))
                .map(|i| v[i])
                .collect();
            (r, kept)
        };
        vals.push((x, v));
    }
    let (y, yv) = if vals.len() == 1 {
        vals.pop().unwrap()
    } else {
        let (b, bv) = vals.pop().unwrap();
        let (a, av) = vals.pop().unwrap();
        let batch: Vec<char> = out
            .iter()
            .copied()
            .filter(|ch| av.contains(ch) && bv.contains(ch))
            .collect();
        let kk: Vec<char> = av
            .iter()
            .copied()
            .filter(|ch| bv.contains(ch) && !out.contains(ch))
            .collect();
        let m: Vec<char> = av.iter().copied().filter(|ch| !bv.contains(ch)).collect();
        let nn: Vec<char> = bv.iter().copied().filter(|ch| !av.contains(ch)).collect();
        let arrange =
            |c: &mut Ctx<'_>, x: ValueId, v: &[char], order: &[&[char]]| -> Result<ValueId> {
                let want: Vec<char> = order.iter().flat_map(|p| p.iter().copied()).collect();
                let perm: Vec<usize> = want
                    .iter()
                    .map(|ch| v.iter().position(|x| x == ch).unwrap())
                    .collect();
                let t = if perm.iter().enumerate().all(|(i, &p)| i == p) {
                    x
                } else {
                    c.op(n, Op::Transpose { perm }, &[x])?
                };
                let xs = c.shape(t);
                let nb = batch.len();
                let mut shape = xs[..nb].to_vec();
                let p1: usize = xs[nb..nb + order[1].len()].iter().product();
                let p2: usize = xs[nb + order[1].len()..].iter().product();
                shape.extend([p1, p2]);
                c.reshape(n, t, shape)
            };
        let a2 = arrange(c, a, &av, &[&batch, &m, &kk])?;
        let b2 = arrange(c, b, &bv, &[&batch, &kk, &nn])?;
        let mm = c.op(n, Op::MatMul, &[a2, b2])?;
        let ms = c.shape(mm);
        let mut shape = ms[..batch.len()].to_vec();
        shape.extend(m.iter().map(|ch| size[ch]));
        shape.extend(nn.iter().map(|ch| size[ch]));
        let y = c.reshape(n, mm, shape)?;
        let mut yv = batch.clone();
        yv.extend(&m);
        yv.extend(&nn);
        (y, yv)
    };
    if yv.len() != out.len() || out.iter().any(|ch| !yv.contains(ch)) {
        return Err(n.err(format!("equation {eq:?} is not supported")));
    }
    let perm: Vec<usize> = out
        .iter()
        .map(|ch| yv.iter().position(|x| x == ch).unwrap())
        .collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(vec![y]);
    }
    Ok(vec![c.op(n, Op::Transpose { perm }, &[y])?])
}
