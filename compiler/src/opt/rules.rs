//! Rewrite rules. Each rule is a pattern over op names plus an applier that
//! checks attributes/shapes/constants through the analysis and builds the
//! replacement. The one-line algebra of each rule is in its comment.

use super::lang::{add_const, add_op, attr_of, Nnc, EG};
use crate::ir::{eval, BinaryOp, ConvAlgo, Op, PoolKind, ReduceOp, Tensor, TensorType, UnaryOp};
use egg::{Applier, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
use std::sync::Arc;

type ApplyFn = fn(&mut EG, Id, &Subst) -> Option<Id>;

/// An applier from a function that returns the replacement class.
/// Each (rule, match) is applied once: egg re-reports old matches every
/// iteration, and rebuilding folded weights for them again is wasted work.
struct FnApplier {
    f: ApplyFn,
    vars: Vec<Var>,
}

impl Applier<Nnc, super::lang::Tables> for FnApplier {
    fn apply_one(
        &self,
        eg: &mut EG,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<Nnc>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let mut key = vec![eg.find(eclass)];
        key.extend(
            self.vars
                .iter()
                .filter_map(|v| subst.get(*v))
                .map(|&i| eg.find(i)),
        );
        let key = (rule.as_str().to_string(), key);
        if eg.analysis.applied.contains(&key) {
            return vec![];
        }
        // A match that does not apply yet (its operand class gains the node
        // the rule needs in a later iteration, e.g. a conv folded from a
        // BatchNorm only then gets its algorithms) is tried again.
        match (self.f)(eg, eclass, subst) {
            Some(new) => {
                eg.analysis.applied.insert(key);
                if eg.union(eclass, new) {
                    vec![eclass]
                } else {
                    vec![]
                }
            }
            None => vec![],
        }
    }
}

fn rule(name: &str, pattern: &str, f: ApplyFn) -> Rewrite<Nnc, super::lang::Tables> {
    let p: Pattern<Nnc> = pattern
        .parse()
        .unwrap_or_else(|e| panic!("rule {name}: bad pattern: {e:?}"));
    let vars = p.vars();
    Rewrite::new(name, p, FnApplier { f, vars }).unwrap_or_else(|e| panic!("rule {name}: {e}"))
}

fn v(s: &Subst, name: &str) -> Id {
    s[name.parse::<Var>().expect("pattern variable")]
}

fn ty(eg: &EG, id: Id) -> Option<TensorType> {
    eg[id].data.ty.clone()
}

fn value(eg: &EG, id: Id) -> Option<Arc<Tensor>> {
    eg[id].data.value.clone()
}

/// The single f32 value of a constant with one element.
fn scalar(eg: &EG, id: Id) -> Option<f32> {
    let t = value(eg, id)?;
    (t.numel() == 1).then(|| t.as_f32().map(|x| x[0])).flatten()
}

fn near(x: Option<f32>, want: f32, tol: f32) -> bool {
    x.is_some_and(|x| (x - want).abs() <= tol)
}

fn op(eg: &EG, s: &Subst, var: &str) -> Option<Op> {
    attr_of(eg, v(s, var)).cloned()
}

/// Replacement must have the class's type (broadcasting constants can
/// change shapes; never rewrite across a shape change).
fn same_type(eg: &EG, a: Id, b: Id) -> bool {
    ty(eg, a).is_some() && ty(eg, a) == ty(eg, b)
}

fn unary(eg: &mut EG, eclass: Id, u: UnaryOp, x: Id) -> Option<Id> {
    let new = add_op(eg, &Op::Unary(u), &[x]);
    same_type(eg, eclass, new).then_some(new)
}

fn gelu(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let ok = near(scalar(eg, v(s, "?h")), 0.5, 1e-6) && near(scalar(eg, v(s, "?one")), 1.0, 0.0);
    let r = scalar(eg, v(s, "?r"))?;
    // x/√2 or x·(1/√2)
    let scale_ok = (r - std::f32::consts::SQRT_2).abs() < 1e-4
        || (r - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-4;
    if !(ok && scale_ok) {
        return None;
    }
    unary(eg, c, UnaryOp::Gelu, v(s, "?x"))
}

fn silu(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    unary(eg, c, UnaryOp::Silu, v(s, "?x"))
}

fn hard_swish(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    match op(eg, s, "?hs")? {
        Op::Unary(UnaryOp::HardSigmoid { alpha, beta })
            if (alpha.get() - 1.0 / 6.0).abs() < 1e-6 && beta.get() == 0.5 =>
        {
            unary(eg, c, UnaryOp::HardSwish, v(s, "?x"))
        }
        _ => None,
    }
}

/// Reduce-mean over the trailing axes `k..rank` with keepdims; returns k.
fn trailing_mean(op: &Op, rank: usize) -> Option<usize> {
    match op {
        Op::Reduce {
            op: ReduceOp::Mean,
            axes,
            keepdims: true,
        } if !axes.is_empty() => {
            let k = *axes.iter().min()?;
            (axes.len() == rank - k && axes.iter().all(|&a| a >= k)).then_some(k)
        }
        _ => None,
    }
}

fn ones(shape: &[usize]) -> Tensor {
    Tensor::f32(shape.to_vec(), vec![1.0; shape.iter().product()]).expect("shape matches")
}

/// (x − mean x)/√(mean((x − mean x)²) + ε) → layer_norm(x, 1)
fn layer_norm(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let x = v(s, "?x");
    let xt = ty(eg, x)?;
    let k1 = trailing_mean(&op(eg, s, "?r1")?, xt.rank())?;
    let k2 = trailing_mean(&op(eg, s, "?r2")?, xt.rank())?;
    if k1 != k2 || !near(scalar(eg, v(s, "?two")), 2.0, 0.0) {
        return None;
    }
    let eps = scalar(eg, v(s, "?eps"))?;
    let sc = add_const(eg, ones(&xt.shape[k1..]));
    let new = add_op(
        eg,
        &Op::LayerNorm {
            axis: k1,
            epsilon: eps.into(),
        },
        &[x, sc],
    );
    same_type(eg, c, new).then_some(new)
}

/// A constant broadcast to `shape` exactly (None if it does not broadcast).
fn expand_to(t: &Tensor, shape: &[usize]) -> Option<Tensor> {
    let e = eval::eval_op(
        &Op::Expand {
            shape: shape.to_vec(),
        },
        &[t],
    )
    .ok()?;
    (e.shape == shape).then_some(e)
}

/// layer_norm(x, s[, b])·g → layer_norm(x, s·g[, b·g]); g constant over the normalized dims.
fn ln_scale(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let Op::LayerNorm { axis, epsilon } = op(eg, s, "?ln")? else {
        return None;
    };
    let x = v(s, "?x");
    let norm = ty(eg, x)?.shape[axis..].to_vec();
    let g = value(eg, v(s, "?g"))?;
    // g must not broadcast over the leading (non-normalized) dims.
    if g.shape.len() > norm.len()
        && g.shape[..g.shape.len() - norm.len()]
            .iter()
            .any(|&d| d != 1)
    {
        return None;
    }
    let g = expand_to(&squeeze_leading(&g, norm.len())?, &norm)?;
    let sc = value(eg, v(s, "?s"))?;
    let sc = expand_to(&sc, &norm)?;
    let ns = eval::eval_op(&Op::Binary(BinaryOp::Mul), &[&sc, &g]).ok()?;
    let ns = add_const(eg, ns);
    let new = add_op(eg, &Op::LayerNorm { axis, epsilon }, &[x, ns]);
    same_type(eg, c, new).then_some(new)
}

/// layer_norm(x, s) + b → layer_norm(x, s, b); b constant over the normalized dims.
fn ln_bias(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let Op::LayerNorm { axis, epsilon } = op(eg, s, "?ln")? else {
        return None;
    };
    let x = v(s, "?x");
    let norm = ty(eg, x)?.shape[axis..].to_vec();
    let b = value(eg, v(s, "?b"))?;
    let b = expand_to(&squeeze_leading(&b, norm.len())?, &norm)?;
    let bc = add_const(eg, b);
    let sc = v(s, "?s");
    let new = add_op(eg, &Op::LayerNorm { axis, epsilon }, &[x, sc, bc]);
    same_type(eg, c, new).then_some(new)
}

/// Drops leading size-1 dims beyond `rank` (they only broadcast).
fn squeeze_leading(t: &Tensor, rank: usize) -> Option<Tensor> {
    if t.shape.len() <= rank {
        return Some(t.clone());
    }
    let cut = t.shape.len() - rank;
    if t.shape[..cut].iter().any(|&d| d != 1) {
        return None;
    }
    Some(Tensor {
        shape: t.shape[cut..].to_vec(),
        data: t.data.clone(),
    })
}

/// Per-output-channel constant of a conv result [N, C, …]: accepts shapes
/// that broadcast only along C (e.g. [C,1,1], [1,C,1,1], [1], []); returns [C].
fn per_channel(t: &Tensor, out: &TensorType) -> Option<Vec<f32>> {
    let c = out.shape[1];
    let r = out.rank();
    if t.shape.len() > r {
        return None;
    }
    let pad = r - t.shape.len();
    for (i, &d) in t.shape.iter().enumerate() {
        let od = i + pad;
        if d != 1 && od != 1 {
            return None;
        }
        if od == 1 && d != 1 && d != c {
            return None;
        }
    }
    let x = t.as_f32()?;
    Some(if x.len() == 1 {
        vec![x[0]; c]
    } else {
        x.to_vec()
    })
}

/// conv(x, w, b)·s → conv(x, w·s, b·s) for per-channel constant s (BatchNorm folding).
fn conv_mul(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let conv_id = v(s, "?cv");
    let out = ty(eg, conv_id)?;
    let sv = per_channel(&*value(eg, v(s, "?s"))?, &out)?;
    let conv = op(eg, s, "?c")?;
    let w = value(eg, v(s, "?w"))?;
    let per = w.numel() / sv.len();
    let nw: Vec<f32> = w
        .as_f32()?
        .iter()
        .enumerate()
        .map(|(i, &x)| x * sv[i / per])
        .collect();
    let nw = add_const(eg, Tensor::f32(w.shape.clone(), nw).ok()?);
    let mut args = vec![v(s, "?x"), nw];
    if let Some(bv) = s.get("?b".parse().ok()?).and_then(|&b| value(eg, b)) {
        let nb: Vec<f32> = bv.as_f32()?.iter().zip(&sv).map(|(b, s)| b * s).collect();
        args.push(add_const(eg, Tensor::f32(vec![sv.len()], nb).ok()?));
    } else if s.get("?b".parse().ok()?).is_some() {
        return None; // run-time bias
    }
    let new = add_op(eg, &conv, &args);
    same_type(eg, c, new).then_some(new)
}

/// conv(x, w[, b]) + t → conv(x, w, b + t) for per-channel constant t.
fn conv_add(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let conv_id = v(s, "?cv");
    let out = ty(eg, conv_id)?;
    let tv = per_channel(&*value(eg, v(s, "?t"))?, &out)?;
    let conv = op(eg, s, "?c")?;
    let w = v(s, "?w");
    value(eg, w)?;
    let old_b: Vec<f32> = match s.get("?b".parse().ok()?) {
        Some(&b) => value(eg, b)?.as_f32()?.to_vec(),
        None => vec![0.0; tv.len()],
    };
    let nb: Vec<f32> = old_b.iter().zip(&tv).map(|(a, b)| a + b).collect();
    let nb = add_const(eg, Tensor::f32(vec![tv.len()], nb).ok()?);
    let new = add_op(eg, &conv, &[v(s, "?x"), w, nb]);
    same_type(eg, c, new).then_some(new)
}

/// matmul(x, W) + b → reshape(gemm(reshape(x, [M, K]), W, b), out) for
/// constant W [K, N] and constant b over the last dim: the bias moves into
/// the GEMM epilogue (the reshapes are free aliases).
fn matmul_bias(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let x = v(s, "?x");
    let w = v(s, "?w");
    let wt = ty(eg, w)?;
    value(eg, w)?;
    let b = value(eg, v(s, "?b"))?;
    let xt = ty(eg, x)?;
    if wt.rank() != 2 || xt.rank() < 2 {
        return None;
    }
    let (k, n) = (wt.shape[0], wt.shape[1]);
    let b = squeeze_leading(&b, 1)?;
    if b.shape != [n] && b.shape != [1] {
        return None;
    }
    let m = xt.numel() / k;
    let out = ty(eg, c)?;
    let x2 = if xt.rank() == 2 {
        x
    } else {
        add_op(eg, &Op::Reshape { shape: vec![m, k] }, &[x])
    };
    let bc = add_const(eg, b);
    let g = add_op(
        eg,
        &Op::Gemm {
            alpha: 1.0.into(),
            beta: 1.0.into(),
            trans_a: false,
            trans_b: false,
            relu: false,
        },
        &[x2, w, bc],
    );
    let new = if out.rank() == 2 {
        g
    } else {
        add_op(
            eg,
            &Op::Reshape {
                shape: out.shape.clone(),
            },
            &[g],
        )
    };
    same_type(eg, c, new).then_some(new)
}

/// transpose(transpose(x, p), q) → transpose(x, p∘q), or x when that is the identity.
fn transpose_transpose(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let (Op::Transpose { perm: p }, Op::Transpose { perm: q }) =
        (op(eg, s, "?t1")?, op(eg, s, "?t2")?)
    else {
        return None;
    };
    let composed: Vec<usize> = q.iter().map(|&i| p[i]).collect();
    let x = v(s, "?x");
    if composed.iter().enumerate().all(|(i, &p)| i == p) {
        return same_type(eg, c, x).then_some(x);
    }
    let new = add_op(eg, &Op::Transpose { perm: composed }, &[x]);
    same_type(eg, c, new).then_some(new)
}

/// reshape(reshape(x, s1), s2) → reshape(x, s2); reshape(x, shape(x)) → x.
fn reshape_reshape(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let Op::Reshape { shape } = op(eg, s, "?r2")? else {
        return None;
    };
    let x = v(s, "?x");
    if ty(eg, x)?.shape == shape {
        return Some(x);
    }
    let new = add_op(eg, &Op::Reshape { shape }, &[x]);
    same_type(eg, c, new).then_some(new)
}

fn reshape_identity(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let x = v(s, "?x");
    same_type(eg, c, x).then_some(x)
}

fn transpose_identity(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let Op::Transpose { perm } = op(eg, s, "?t")? else {
        return None;
    };
    let x = v(s, "?x");
    (perm.iter().enumerate().all(|(i, &p)| i == p) && same_type(eg, c, x)).then_some(x)
}

/// x·1 → x, x + 0 → x (constant identity elements of the same shape).
fn drop_identity(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let Op::Binary(b) = op(eg, s, "?o")? else {
        return None;
    };
    let k = value(eg, v(s, "?k"))?;
    let unit = match b {
        BinaryOp::Mul | BinaryOp::Div => 1.0,
        BinaryOp::Add | BinaryOp::Sub => 0.0,
        _ => return None,
    };
    if !k.as_f32()?.iter().all(|&x| x == unit) {
        return None;
    }
    let x = v(s, "?x");
    same_type(eg, c, x).then_some(x)
}

/// Builds the fused attention for scores = scale·(q·kt) [+ mask], output
/// softmax(scores)·v (the op takes kᵀ as the graph already has it).
fn fuse_attention(
    eg: &mut EG,
    c: Id,
    q: Id,
    kt: Id,
    v: Id,
    mask: Option<Id>,
    scale: f32,
) -> Option<Id> {
    let r = ty(eg, q)?.rank();
    if r < 3 || ty(eg, kt)?.rank() != r || ty(eg, v)?.rank() != r {
        return None;
    }
    let mut args = vec![q, kt, v];
    args.extend(mask);
    let new = add_op(
        eg,
        &Op::Attention {
            scale: scale.into(),
            causal: false,
            softcap: 0.0.into(),
            views: None,
        },
        &args,
    );
    same_type(eg, c, new).then_some(new)
}

fn softmax_last(eg: &EG, s: &Subst) -> bool {
    let Some(Op::Softmax { axis, log: false }) = op(eg, s, "?sm") else {
        return false;
    };
    ty(eg, v(s, "?v")).is_some_and(|t| axis + 1 == t.rank())
}

/// matmul(softmax(matmul(q, kt)·s), v) and its scale/mask variants → attention.
fn attention_rule(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    if !softmax_last(eg, s) {
        return None;
    }
    let var = |n: &str| s.get(n.parse().ok()?).copied();
    let mut scale = 1.0f32;
    if let Some(sc) = var("?s") {
        let x = scalar(eg, sc)?;
        // ?div marks the division form (scores / √d).
        scale = if var("?isdiv").is_some() { 1.0 / x } else { x };
    }
    if let (Some(a), Some(b)) = (var("?s1"), var("?s2")) {
        scale = scalar(eg, a)? * scalar(eg, b)?;
    }
    let mask = var("?mask");
    if let Some(m) = mask {
        if ty(eg, m)?.dtype != crate::ir::DType::F32 {
            return None;
        }
    }
    fuse_attention(eg, c, var("?q")?, var("?kt")?, var("?v")?, mask, scale)
}

/// Adds each of `ops` applied to `args` as alternatives of one class;
/// None when `ops` is empty.
fn add_alternatives(eg: &mut EG, ops: impl IntoIterator<Item = Op>, args: &[Id]) -> Option<Id> {
    let mut class = None;
    for o in ops {
        let n = add_op(eg, &o, args);
        if let Some(prev) = class {
            eg.union(prev, n);
        }
        class = Some(n);
    }
    class
}

/// Every applicable algorithm for a conv, with im2col chunkings chosen
/// against the target's L2 (whole output, about L2/2, about L2/8), and
/// Winograd F(2,3) tile-row chunkings likewise where the target has it.
/// `NNC_FORCE_CONV=im2col|chunked|pointwise|depthwise|winograd` restricts the set
/// (to measure forced plans against the cost model's choice).
fn conv_algorithms(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let Op::Conv { window, group } = op(eg, s, "?c")? else {
        return None;
    };
    let x = ty(eg, v(s, "?x"))?;
    let wt = ty(eg, v(s, "?w"))?;
    let out = ty(eg, c)?;
    let mut args = vec![v(s, "?x"), v(s, "?w")];
    if let Some(&b) = s.get("?b".parse().ok()?) {
        args.push(b);
    }
    let rank = out.rank();
    let oh = if rank >= 4 { out.shape[2] } else { 1 };
    let ow: usize = out.shape[2..].iter().product::<usize>() / oh.max(1);
    let per = wt.shape[1] * window.kernel.iter().product::<usize>();
    let l2 = eg.analysis.l2_bytes.max(1 << 16);
    let fit = |budget: usize| {
        (1..=oh)
            .rev()
            .find(|r| oh % r == 0 && 4 * per * r * ow <= budget)
            .unwrap_or(1)
    };
    let mut algos = vec![ConvAlgo::Im2col {
        chunk_rows: oh.max(1),
    }];
    for r in [fit(l2 / 2), fit(l2 / 8)] {
        if r < oh && !algos.contains(&ConvAlgo::Im2col { chunk_rows: r }) {
            algos.push(ConvAlgo::Im2col { chunk_rows: r });
        }
    }
    let tys = [&x, &wt];
    if super::cost::is_pointwise(&window, &tys, &out) {
        algos.push(ConvAlgo::Pointwise);
    }
    if group > 1 && x.shape[1] == group && wt.shape[0] == group && window.spatial_rank() <= 2 {
        algos.push(ConvAlgo::Depthwise);
    }
    let w_const = eg[v(s, "?w")].data.value.is_some();
    if eg.analysis.winograd
        && w_const
        && winograd_window(&window, group)
        && rank == 4
        && winograd_sized(&x.shape, &out.shape)
    {
        let (th, tw) = crate::codegen::winograd::tile_grid(oh, ow, None);
        for tile_rows in winograd_rows(th, tw, wt.shape[0], wt.shape[1], l2) {
            algos.push(ConvAlgo::Winograd { tile_rows });
        }
    }
    if let Some(f) = super::cost::forced_conv() {
        algos.retain(|a| match (f, a) {
            ("im2col", ConvAlgo::Im2col { chunk_rows }) => *chunk_rows == oh.max(1),
            ("chunked", ConvAlgo::Im2col { chunk_rows }) => *chunk_rows < oh || algos_len_one(oh),
            ("blocked", _) => true,
            ("pointwise", ConvAlgo::Pointwise)
            | ("depthwise", ConvAlgo::Depthwise)
            | ("winograd", ConvAlgo::Winograd { .. }) => true,
            _ => false,
        });
    }
    let ops = algos.into_iter().map(|algo| Op::ConvImpl {
        window: window.clone(),
        group,
        algo,
        relu: false,
        pool: None,
    });
    add_alternatives(eg, ops, &args)
}

/// Every register tile and row block of the assembled GEMM kernels for a
/// MatMul/Gemm that runs as one 2-D f32 product (see
/// `x86::tile_candidates`), as `tiled` alternatives of its class.
/// `NNC_FORCE_GEMM_TILE=<mr>x<nv>` keeps only that register tile (where it
/// fits), to measure forced plans against the cost model's choice.
fn gemm_tilings(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let level = eg.analysis.asm_gemm?;
    let base = op(eg, s, "?g")?;
    if !matches!(base, Op::MatMul | Op::Gemm { .. }) {
        return None;
    }
    let args: Vec<Id> = ["?a", "?b", "?c", "?r"]
        .iter()
        .filter_map(|n| s.get(n.parse().ok()?).copied())
        .collect();
    let out = ty(eg, c)?;
    let tys: Vec<TensorType> = args.iter().map(|&a| ty(eg, a)).collect::<Option<_>>()?;
    if out.dtype != crate::ir::DType::F32 || tys.iter().any(|t| t.dtype != crate::ir::DType::F32) {
        return None;
    }
    let refs: Vec<&TensorType> = tys.iter().collect();
    let (m, n, k) = super::cost::gemm_dims(&base, &refs, &out)?;
    if crate::codegen::gemm_runs_inline(m, n, k) {
        return None;
    }
    let b_const = eg[args[1]].data.value.is_some();
    let mut tiles = crate::codegen::x86::tile_candidates(m, n, k, b_const, level);
    if let Ok(f) = std::env::var("NNC_FORCE_GEMM_TILE") {
        let forced: Vec<_> = tiles
            .iter()
            .copied()
            .filter(|t| format!("{}x{}", t.mr, t.nv) == f)
            .collect();
        if !forced.is_empty() {
            tiles = forced;
        } else {
            tiles.truncate(1);
        }
    }
    let ops = tiles.into_iter().map(|tile| Op::Tiled {
        tile,
        op: Box::new(base.clone()),
    });
    add_alternatives(eg, ops, &args)
}

/// A 2-D single-group conv (with its fused relu and residual) as the direct
/// conv on channel-blocked tensors, between layout changes:
/// `from_blocked(conv_blocked(to_blocked(x), w, b, to_blocked(r)))`. The
/// layout changes of consecutive convs cancel (`blocked-roundtrip`), so a
/// chain that extraction keeps blocked converts once at each end. Offered
/// where the kernel assembles, for channel counts that are whole blocks.
fn conv_blocked(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    use crate::codegen::{blocked, x86::dconv::CB};
    // NNC_NO_BLOCKED_CONV: the plan without this alternative (A/B runs);
    // a forced plan of another algorithm leaves it out too.
    let forced_other = super::cost::forced_conv().is_some_and(|f| f != "blocked");
    if !eg.analysis.blocked_conv
        || forced_other
        || std::env::var_os("NNC_NO_BLOCKED_CONV").is_some()
    {
        return None;
    }
    let Op::ConvImpl {
        window,
        group: 1,
        relu,
        pool: None,
        ..
    } = op(eg, s, "?c")?
    else {
        return None;
    };
    let (x, w) = (v(s, "?x"), v(s, "?w"));
    let b = s.get("?b".parse().ok()?).copied();
    let r = s.get("?r".parse().ok()?).copied();
    let (xt, wt, out) = (ty(eg, x)?, ty(eg, w)?, ty(eg, c)?);
    if window.spatial_rank() != 2
        || xt.shape[1] == 0
        || wt.shape[0] == 0
        || xt.dtype != crate::ir::DType::F32
        || xt.shape[1] % CB != 0
        || wt.shape[0] % CB != 0
        || value(eg, w).is_none()
        || b.is_some_and(|b| value(eg, b).is_none())
        || !winograd_sized(&xt.shape, &out.shape)
    {
        return None;
    }
    let spec = blocked::spec(
        &window,
        &xt.shape,
        &wt.shape,
        &out.shape,
        relu,
        r.is_some(),
        None,
    );
    // Every tiling of the kernel (register tile, input-channel chunks) that
    // assembles; `NNC_FORCE_DIRECT_NB=<blocks>` keeps the tilings with that
    // many output blocks per register tile (forced plans).
    let mut tiles = crate::codegen::x86::dconv::tile_candidates(&spec);
    if let Some(nb) = std::env::var("NNC_FORCE_DIRECT_NB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        if tiles.iter().any(|t| t.nb == nb) {
            tiles.retain(|t| t.nb == nb);
        }
    }
    let tiles: Vec<_> = tiles
        .into_iter()
        .filter(|&t| {
            // Whether it assembles does not depend on the epilogue: one
            // check per geometry and tiling, with the longest epilogue.
            let spec = crate::codegen::x86::dconv::DirectConv {
                tile: Some(t),
                relu: true,
                residual: true,
                ..spec.clone()
            };
            let key = format!("{spec:?}");
            match eg.analysis.blocked_ok.get(&key) {
                Some(&ok) => ok,
                None => {
                    let ok = blocked::assembles(&spec);
                    eg.analysis.blocked_ok.insert(key, ok);
                    ok
                }
            }
        })
        .collect();
    if tiles.is_empty() {
        return None;
    }
    let to = Op::ToBlocked { cb: CB };
    let mut args = vec![add_op(eg, &to, &[x]), w];
    args.extend(b);
    if let Some(r) = r {
        args.push(add_op(eg, &to, &[r]));
    }
    let ops = tiles.into_iter().map(|tile| Op::ConvBlocked {
        window: window.clone(),
        relu,
        tile: Some(tile),
    });
    let y = add_alternatives(eg, ops, &args)?;
    let back = add_op(eg, &Op::FromBlocked, &[y]);
    same_type(eg, c, back).then_some(back)
}

/// to_blocked(from_blocked(y)) = y: every blocked tensor is a whole number
/// of channel blocks, so the round trip is exact.
fn blocked_roundtrip(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let y = v(s, "?y");
    same_type(eg, c, y).then_some(y)
}

/// A 2-D 3×3 stride-1 single-group window: Winograd F(2,3) applies.
fn winograd_window(w: &crate::ir::Window, group: usize) -> bool {
    group == 1 && w.kernel == [3, 3] && w.strides == [1, 1] && w.dilations == [1, 1]
}

/// The transform kernels address one image's input and output with 32-bit
/// displacements: planes and channel blocks must stay well below 2 GiB.
fn winograd_sized(x: &[usize], y: &[usize]) -> bool {
    let bytes = |s: &[usize]| 4 * s[1..].iter().product::<usize>();
    bytes(x) < 1 << 30 && bytes(y) < 1 << 30
}

/// Winograd tile-row chunkings of a `th × tw` tile grid: all rows, and the
/// most whose scratch (transformed input and products) fits about L2/2 and
/// L2/8.
fn winograd_rows(th: usize, tw: usize, m: usize, c: usize, l2: usize) -> Vec<usize> {
    use crate::codegen::winograd::slot_bytes;
    let fit = |budget: usize| {
        (1..=th)
            .rev()
            .find(|&r| th.is_multiple_of(r) && slot_bytes(r * tw, m, c) <= budget)
            .unwrap_or(1)
    };
    let mut rows: Vec<usize> = Vec::new();
    for r in [th.max(1), fit(l2 / 2), fit(l2 / 8)] {
        // (The transforms address a chunk's scratch with 32-bit displacements.)
        if !rows.contains(&r) && slot_bytes(r * tw, m, c) < 1 << 30 {
            rows.push(r);
        }
    }
    rows
}

fn algos_len_one(oh: usize) -> bool {
    oh <= 1
}

/// relu(conv_impl(…)) → conv_impl(…, relu): the activation moves into the epilogue.
fn conv_relu(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let Op::ConvImpl {
        window,
        group,
        algo,
        relu: false,
        pool,
    } = op(eg, s, "?c")?
    else {
        return None;
    };
    let cv = v(s, "?cv");
    let ch: Vec<Id> = eg[cv].nodes.iter().find_map(|n| match n {
        Nnc::Op("conv_impl", ch) if ch[0] == v(s, "?c") => Some(ch[1..].to_vec()),
        _ => None,
    })?;
    let new = add_op(
        eg,
        &Op::ConvImpl {
            window,
            group,
            algo,
            relu: true,
            // relu commutes with max: relu(max_pool(conv)) = max_pool(relu(conv))
            pool,
        },
        &ch,
    );
    same_type(eg, c, new).then_some(new)
}

/// max_pool(conv_impl(x, w, b)) → conv_impl(x, w, b) with the pool fused,
/// for every 2-D im2col algorithm of the conv without residual: each chunk
/// of pooled rows computes its conv rows into a cache-resident tile and
/// pools from there (the conv's output never goes to memory). Chunkings
/// as for the conv (pooled rows whose tile + unfolded block fit about
/// L2/2, L2/8; all rows); the cost model weighs the saved traffic against
/// rows recomputed where windows overlap chunk boundaries.
/// `NNC_NO_CONV_POOL` turns it off (to measure against the unfused pair).
fn conv_pool(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    if std::env::var_os("NNC_NO_CONV_POOL").is_some() {
        return None;
    }
    let Op::Pool {
        kind: PoolKind::Max,
        window: pw,
    } = op(eg, s, "?p")?
    else {
        return None;
    };
    let out = ty(eg, c)?;
    if pw.spatial_rank() != 2 || out.rank() != 4 {
        return None;
    }
    let convs: Vec<(Op, Vec<Id>)> = eg[v(s, "?cv")]
        .nodes
        .iter()
        .filter_map(|n| match n {
            Nnc::Op("conv_impl", ch) if ch.len() <= 4 => match attr_of(eg, ch[0]) {
                Some(
                    o @ Op::ConvImpl {
                        algo: ConvAlgo::Im2col { .. } | ConvAlgo::Winograd { .. },
                        pool: None,
                        ..
                    },
                ) => Some((o.clone(), ch[1..].to_vec())),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let cy = ty(eg, v(s, "?cv"))?;
    // Winograd: each 2×2 output tile is one window of a 2×2/2 unpadded pool.
    let tile_pool = pw.kernel == [2, 2]
        && pw.strides == [2, 2]
        && pw.dilations == [1, 1]
        && pw.pads.iter().all(|&p| p == 0)
        && out.shape[2] == cy.shape[2] / 2
        && out.shape[3] == cy.shape[3] / 2;
    let (oh, ow, ph) = (cy.shape[2], cy.shape[3], out.shape[2]);
    let l2 = eg.analysis.l2_bytes.max(1 << 16);
    let mut first = None;
    for (o, args) in convs {
        let Op::ConvImpl {
            window,
            group,
            relu,
            algo,
            ..
        } = o
        else {
            continue;
        };
        let wt = ty(eg, args[1])?;
        let pooled_algos: Vec<ConvAlgo> = if let ConvAlgo::Winograd { .. } = algo {
            if !tile_pool {
                continue;
            }
            let (th, tw) = (out.shape[2], out.shape[3]);
            winograd_rows(th, tw, wt.shape[0], wt.shape[1], l2)
                .into_iter()
                .map(|tile_rows| ConvAlgo::Winograd { tile_rows })
                .collect()
        } else {
            let per = wt.shape[1] * window.kernel.iter().product::<usize>();
            let mg = wt.shape[0] / group.max(1);
            // conv rows a chunk of `pr` pooled rows reads, and its scratch bytes
            let need = |pr: usize| {
                ((pr - 1) * pw.strides[0] + (pw.kernel[0] - 1) * pw.dilations[0] + 1).min(oh)
            };
            let bytes = |pr: usize| 4 * (per + mg) * need(pr) * ow;
            let fit = |budget: usize| {
                (1..=ph)
                    .rev()
                    .find(|&r| ph % r == 0 && bytes(r) <= budget)
                    .unwrap_or(1)
            };
            let mut rows = vec![ph.max(1)];
            for r in [fit(l2 / 2), fit(l2 / 8)] {
                if !rows.contains(&r) {
                    rows.push(r);
                }
            }
            rows.into_iter()
                .map(|chunk_rows| ConvAlgo::Im2col { chunk_rows })
                .collect()
        };
        for algo in pooled_algos {
            let new = add_op(
                eg,
                &Op::ConvImpl {
                    window: window.clone(),
                    group,
                    algo,
                    relu,
                    pool: Some(Box::new(pw.clone())),
                },
                &args,
            );
            if !same_type(eg, c, new) {
                continue;
            }
            match first {
                None => first = Some(new),
                Some(f) => {
                    eg.union(f, new);
                }
            }
        }
    }
    first
}

/// All rules, in a fixed order (saturation is deterministic for a given model).
pub fn rules() -> Vec<Rewrite<Nnc, super::lang::Tables>> {
    vec![
        // Commutativity of the broadcasting elementwise ops lets one pattern
        // match operands in either order. (Associativity is left out on
        // purpose: it blows the e-graph up.)
        egg::rewrite!("comm-add"; "(add ?a ?x ?y)" => "(add ?a ?y ?x)"),
        egg::rewrite!("comm-mul"; "(mul ?a ?x ?y)" => "(mul ?a ?y ?x)"),
        // x·0.5·(1 + erf(x/√2)) → gelu(x), in the association orders exporters emit
        rule("gelu-1", "(mul ?m1 (mul ?m2 ?x ?h) (add ?a (erf ?e (div ?d ?x ?r)) ?one))", gelu),
        rule("gelu-2", "(mul ?m1 ?x (mul ?m2 (add ?a (erf ?e (div ?d ?x ?r)) ?one) ?h))", gelu),
        rule("gelu-3", "(mul ?m1 (mul ?m2 ?x ?h) (add ?a (erf ?e (mul ?d ?x ?r)) ?one))", gelu),
        rule("gelu-4", "(mul ?m1 ?x (mul ?m2 (add ?a (erf ?e (mul ?d ?x ?r)) ?one) ?h))", gelu),
        rule("gelu-5", "(mul ?m2 (mul ?m1 ?x (add ?a (erf ?e (div ?d ?x ?r)) ?one)) ?h)", gelu),
        // x·sigmoid(x) → silu(x)
        rule("silu", "(mul ?m ?x (sigmoid ?s ?x))", silu),
        // x·hard_sigmoid(x; 1/6, 1/2) → hard_swish(x)
        rule("hard-swish", "(mul ?m ?x (hard_sigmoid ?hs ?x))", hard_swish),
        // (x − μ)/√(mean((x − μ)²) + ε) → layer_norm(x)
        rule(
            "layer-norm",
            "(div ?dv (sub ?sb ?x (reduce ?r1 ?x)) (sqrt ?q (add ?ad (reduce ?r2 (pow ?p (sub ?sb ?x (reduce ?r1 ?x)) ?two)) ?eps)))",
            layer_norm,
        ),
        rule("layer-norm-scale", "(mul ?m (layer_norm ?ln ?x ?s) ?g)", ln_scale),
        rule("layer-norm-bias", "(add ?a (layer_norm ?ln ?x ?s) ?b)", ln_bias),
        // BatchNorm (already Mul/Add by the frontend) and scalar affine ops fold into conv weights
        rule("conv-mul", "(mul ?m ?cv ?s)", conv_mul_any),
        rule("conv-add", "(add ?m ?cv ?t)", conv_add_any),
        // matmul(x, W) + b → gemm with bias epilogue
        rule("matmul-bias", "(add ?a (matmul ?mm ?x ?w) ?b)", matmul_bias),
        // softmax(scale·q·kᵀ [+ mask])·v → attention(q, k, v [, mask]): every form exporters emit
        rule("attention", "(matmul ?m2 (softmax ?sm (matmul ?m1 ?q ?kt)) ?v)", attention_rule),
        rule("attention-mul", "(matmul ?m2 (softmax ?sm (mul ?ml (matmul ?m1 ?q ?kt) ?s)) ?v)", attention_rule),
        rule("attention-div", "(matmul ?m2 (softmax ?sm (div ?isdiv (matmul ?m1 ?q ?kt) ?s)) ?v)", attention_rule),
        rule("attention-mask", "(matmul ?m2 (softmax ?sm (add ?ad (matmul ?m1 ?q ?kt) ?mask)) ?v)", attention_rule),
        rule("attention-mul-mask", "(matmul ?m2 (softmax ?sm (add ?ad (mul ?ml (matmul ?m1 ?q ?kt) ?s) ?mask)) ?v)", attention_rule),
        rule("attention-div-mask", "(matmul ?m2 (softmax ?sm (add ?ad (div ?isdiv (matmul ?m1 ?q ?kt) ?s) ?mask)) ?v)", attention_rule),
        // PyTorch ≥ 2.1 scales both operands by √scale
        rule("attention-split-scale", "(matmul ?m2 (softmax ?sm (matmul ?m1 (mul ?mq ?q ?s1) (mul ?mk ?kt ?s2))) ?v)", attention_rule),
        // every conv also holds its concrete algorithms; the cost model picks
        rule("conv-algorithms", "(conv ?c ?x ?w)", conv_algorithms),
        rule("conv-algorithms-bias", "(conv ?c ?x ?w ?b)", conv_algorithms),
        rule("conv-residual", "(add ?ad ?cv ?r)", conv_residual),
        rule("conv-relu", "(relu ?r ?cv)", conv_relu_any),
        rule("conv-pool", "(max_pool ?p ?cv)", conv_pool),
        rule("conv-blocked", "(conv_impl ?c ?x ?w)", conv_blocked),
        rule("conv-blocked-bias", "(conv_impl ?c ?x ?w ?b)", conv_blocked),
        rule("conv-blocked-residual", "(conv_impl ?c ?x ?w ?b ?r)", conv_blocked),
        rule("blocked-roundtrip", "(to_blocked ?t (from_blocked ?f ?y))", blocked_roundtrip),
        rule("gemm-tilings", "(matmul ?g ?a ?b)", gemm_tilings),
        rule("gemm-tilings-2", "(gemm ?g ?a ?b)", gemm_tilings),
        rule("gemm-tilings-3", "(gemm ?g ?a ?b ?c)", gemm_tilings),
        rule("gemm-tilings-4", "(gemm ?g ?a ?b ?c ?r)", gemm_tilings),
        rule("transpose-transpose", "(transpose ?t2 (transpose ?t1 ?x))", transpose_transpose),
        rule("transpose-identity", "(transpose ?t ?x)", transpose_identity),
        rule("reshape-transpose", "(reshape ?r (transpose ?t ?y))", reshape_of_transpose),
        rule("reshape-reshape", "(reshape ?r2 (reshape ?r1 ?x))", reshape_reshape),
        rule("reshape-identity", "(reshape ?r ?x)", reshape_identity),
        rule("mul-one", "(mul ?o ?x ?k)", drop_identity),
        rule("add-zero", "(add ?o ?x ?k)", drop_identity),
        rule("div-one", "(div ?o ?x ?k)", drop_identity),
        rule("sub-zero", "(sub ?o ?x ?k)", drop_identity),
        // GEMM epilogues: residual add and relu (also behind the reshapes
        // matmul-bias leaves around a batched matmul)
        rule("gemm-residual", "(add ?ad ?gm ?r)", gemm_residual),
        rule("gemm-residual-reshape", "(add ?ad (reshape ?rs ?gm) ?r)", gemm_residual),
        rule("gemm-relu", "(relu ?u ?gm)", gemm_relu),
        rule("gemm-relu-reshape", "(relu ?u (reshape ?rs ?gm))", gemm_relu),
    ]
    .into_iter()
    .chain(transpose_rules())
    .collect()
}

/// Finds a conv node (with or without bias) in class ?cv and delegates.
fn with_conv(
    eg: &mut EG,
    c: Id,
    s: &Subst,
    f: fn(&mut EG, Id, &Subst) -> Option<Id>,
) -> Option<Id> {
    let cv = v(s, "?cv");
    let convs: Vec<Vec<Id>> = eg[cv]
        .nodes
        .iter()
        .filter_map(|n| match n {
            Nnc::Op("conv", ch) => Some(ch.clone()),
            _ => None,
        })
        .collect();
    for ch in convs {
        let mut s2 = s.clone();
        s2.insert("?c".parse().unwrap(), ch[0]);
        s2.insert("?x".parse().unwrap(), ch[1]);
        s2.insert("?w".parse().unwrap(), ch[2]);
        if let Some(&b) = ch.get(3) {
            s2.insert("?b".parse().unwrap(), b);
        }
        if let Some(r) = f(eg, c, &s2) {
            return Some(r);
        }
    }
    None
}

fn conv_mul_any(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    value(eg, v(s, "?s"))?;
    with_conv(eg, c, s, conv_mul)
}

fn conv_add_any(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let t = v(s, "?t");
    value(eg, t)?;
    with_conv(eg, c, s, conv_add)
}

/// Applies conv_relu to every unfused conv_impl node of class ?cv, so each
/// algorithm keeps a fused variant (fusing only the first one left the
/// cost model choosing between a fused algorithm and a better unfused one).
fn conv_relu_any(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let cv = v(s, "?cv");
    let attrs: Vec<Id> = eg[cv]
        .nodes
        .iter()
        .filter_map(|n| match n {
            Nnc::Op("conv_impl", ch) => Some(ch[0]),
            _ => None,
        })
        .collect();
    let mut first = None;
    for a in attrs {
        let mut s2 = s.clone();
        s2.insert("?c".parse().unwrap(), a);
        if let Some(r) = conv_relu(eg, c, &s2) {
            match first {
                None => first = Some(r),
                Some(f) => {
                    eg.union(f, r);
                }
            }
        }
    }
    first
}

/// conv_impl(x, w, b) + r → conv_impl(x, w, b, r) for every unfused
/// im2col/pointwise algorithm of the conv (r of the result's shape): the
/// residual goes into the GEMMs' accumulator instead of a separate pass.
fn conv_residual(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let r = v(s, "?r");
    let out = ty(eg, c)?;
    if ty(eg, r)? != out {
        return None;
    }
    let convs: Vec<(Op, Vec<Id>)> = eg[v(s, "?cv")]
        .nodes
        .iter()
        .filter_map(|n| match n {
            Nnc::Op("conv_impl", ch) if ch.len() <= 4 => match attr_of(eg, ch[0]) {
                Some(
                    o @ Op::ConvImpl {
                        relu: false,
                        algo,
                        pool: None,
                        ..
                    },
                ) if *algo != ConvAlgo::Depthwise => Some((o.clone(), ch[1..].to_vec())),
                _ => None,
            },
            _ => None,
        })
        .collect();
    // conv + conv (ResNet's downsampling blocks): only the conv with the
    // larger weight takes the other as its residual. Which one is chosen
    // changes rounding, so it must not depend on the target's cost model
    // (AArch64 and x86-64 builds stay bit-identical).
    let weight = |eg: &EG, class: Id| -> Option<usize> {
        eg[class].nodes.iter().find_map(|n| match n {
            Nnc::Op("conv_impl" | "conv", ch)
                if !matches!(attr_of(eg, ch[0]), Some(Op::ConvImpl { relu: true, .. })) =>
            {
                eg[ch[2]].data.ty.as_ref().map(|t| t.numel())
            }
            _ => None,
        })
    };
    if let (Some(mine), Some(other)) = (weight(eg, v(s, "?cv")), weight(eg, r)) {
        if mine < other {
            return None;
        }
    }
    let mut first = None;
    for (o, mut args) in convs {
        if args.len() == 2 {
            let m = ty(eg, args[1])?.shape[0];
            args.push(add_const(eg, Tensor::f32(vec![m], vec![0.0; m]).ok()?));
        }
        args.push(r);
        let new = add_op(eg, &o, &args);
        if !same_type(eg, c, new) {
            continue;
        }
        match first {
            None => first = Some(new),
            Some(f) => {
                eg.union(f, new);
            }
        }
    }
    first
}

/// The gemm nodes of class `gm` without a relu epilogue: (op, args).
fn gemms(eg: &EG, gm: Id) -> Vec<(Op, Vec<Id>)> {
    let mut out: Vec<(Op, Vec<Id>)> = eg[gm]
        .nodes
        .iter()
        .filter_map(|n| match n {
            Nnc::Op("gemm", ch) => match attr_of(eg, ch[0]) {
                Some(o @ Op::Gemm { relu: false, .. }) => Some((o.clone(), ch[1..].to_vec())),
                _ => None,
            },
            _ => None,
        })
        .collect();
    out.sort_by_key(|(_, a)| a.clone());
    out
}

fn with_relu(o: &Op) -> Op {
    match o {
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
            ..
        } => Op::Gemm {
            alpha: *alpha,
            beta: *beta,
            trans_a: *trans_a,
            trans_b: *trans_b,
            relu: true,
        },
        o => o.clone(),
    }
}

/// Wraps `new` (a [M, N] gemm) back into the shape of class `c` when the
/// match went through a reshape.
fn reshaped(eg: &mut EG, c: Id, new: Id, through_reshape: bool) -> Option<Id> {
    let new = if through_reshape {
        let shape = ty(eg, c)?.shape;
        add_op(eg, &Op::Reshape { shape }, &[new])
    } else {
        new
    };
    same_type(eg, c, new).then_some(new)
}

/// relu(gemm(a, b[, c[, r]])) → gemm(a, b[, c[, r]]; relu): the clamp runs in the epilogue.
fn gemm_relu(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let through = s.get("?rs".parse().ok()?).is_some();
    let (o, args) = gemms(eg, v(s, "?gm")).into_iter().next()?;
    let new = add_op(eg, &with_relu(&o), &args);
    reshaped(eg, c, new, through)
}

/// gemm(a, b) + r → gemm(a, b, r; beta = 1), and gemm(a, b, c) + r →
/// gemm(a, b, c, r): the residual is added in the epilogue instead of a
/// separate pass over the result. Through a reshape, r is reshaped to [M, N].
fn gemm_residual(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let through = s.get("?rs".parse().ok()?).is_some();
    let mut r = v(s, "?r");
    let rt = ty(eg, r)?;
    let out = ty(eg, c)?;
    if rt.dtype != crate::ir::DType::F32 {
        return None;
    }
    let (o, mut args) = gemms(eg, v(s, "?gm"))
        .into_iter()
        .find(|(_, a)| a.len() < 4)?;
    // gemm + gemm: as for convs, the larger B takes the other as residual,
    // whatever the target (the choice changes rounding).
    let b_size = |eg: &EG, a: &[Id]| eg[a[1]].data.ty.as_ref().map_or(0, |t| t.numel());
    if let Some((_, other)) = gemms(eg, r).into_iter().next() {
        if b_size(eg, &args) < b_size(eg, &other) {
            return None;
        }
    }
    let gt = ty(eg, v(s, "?gm"))?;
    if through {
        // Only a full residual can be reshaped to the GEMM's [M, N].
        if rt.shape != out.shape {
            return None;
        }
        r = add_op(
            eg,
            &Op::Reshape {
                shape: gt.shape.clone(),
            },
            &[r],
        );
    }
    let o = match (o, args.len()) {
        (
            Op::Gemm {
                alpha,
                trans_a,
                trans_b,
                ..
            },
            2,
        ) => Op::Gemm {
            alpha,
            beta: 1.0.into(),
            trans_a,
            trans_b,
            relu: false,
        },
        (o, _) => o,
    };
    args.push(r);
    let new = add_op(eg, &o, &args);
    reshaped(eg, c, new, through)
}

fn transpose_perm(eg: &EG, s: &Subst, var: &str) -> Option<Vec<usize>> {
    match op(eg, s, var)? {
        Op::Transpose { perm } => Some(perm),
        _ => None,
    }
}

/// u(transpose(x, p)) → transpose(u(x), p) for elementwise u, so transposes
/// meet (and cancel or merge) across elementwise chains.
fn transpose_unary(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let perm = transpose_perm(eg, s, "?t")?;
    let u = op(eg, s, "?u")?;
    let inner = add_op(eg, &u, &[v(s, "?x")]);
    let new = add_op(eg, &Op::Transpose { perm }, &[inner]);
    same_type(eg, c, new).then_some(new)
}

/// transpose(x, p) ∘ transpose(y, p) → transpose(x ∘ y, p) for elementwise ∘.
fn transpose_binary(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let p = transpose_perm(eg, s, "?t1")?;
    if transpose_perm(eg, s, "?t2")? != p {
        return None;
    }
    let b = op(eg, s, "?o")?;
    let inner = add_op(eg, &b, &[v(s, "?x"), v(s, "?y")]);
    let new = add_op(eg, &Op::Transpose { perm: p }, &[inner]);
    same_type(eg, c, new).then_some(new)
}

/// transpose(x, p) ∘ k → transpose(x ∘ transpose(k, p⁻¹), p) for constant k
/// (k is first padded to full rank; the inverse transpose folds at compile time).
fn transpose_const(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let p = transpose_perm(eg, s, "?t")?;
    let k = value(eg, v(s, "?k"))?;
    if k.shape.len() > p.len() {
        return None;
    }
    let mut full = vec![1; p.len() - k.shape.len()];
    full.extend(&k.shape);
    let mut inv = vec![0; p.len()];
    for (i, &d) in p.iter().enumerate() {
        inv[d] = i;
    }
    let kr = eval::eval_op(&Op::Reshape { shape: full }, &[&k]).ok()?;
    let kt = eval::eval_op(&Op::Transpose { perm: inv }, &[&kr]).ok()?;
    let kt = add_const(eg, kt);
    let b = op(eg, s, "?o")?;
    let args = if s.get("?kfirst".parse().ok()?).is_some() {
        [kt, v(s, "?x")]
    } else {
        [v(s, "?x"), kt]
    };
    let inner = add_op(eg, &b, &args);
    let new = add_op(eg, &Op::Transpose { perm: p }, &[inner]);
    same_type(eg, c, new).then_some(new)
}

/// Elementwise ops transposes move through (f32 or type-preserving).
const TRANSPOSE_UNARY: &[&str] = &[
    "relu",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "sqrt",
    "erf",
    "neg",
    "abs",
    "reciprocal",
    "floor",
    "ceil",
    "gelu",
    "silu",
    "leaky_relu",
    "elu",
    "selu",
    "hard_sigmoid",
    "hard_swish",
    "clip",
    "round",
    "sign",
    "cast",
];
const TRANSPOSE_BINARY: &[&str] = &["add", "sub", "mul", "div", "pow", "max", "min"];

/// The transpose-pushing rules, one per elementwise op (patterns match op names).
fn transpose_rules() -> Vec<Rewrite<Nnc, super::lang::Tables>> {
    let mut r = Vec::new();
    for u in TRANSPOSE_UNARY {
        r.push(rule(
            &format!("transpose-through-{u}"),
            &format!("({u} ?u (transpose ?t ?x))"),
            transpose_unary,
        ));
    }
    for b in TRANSPOSE_BINARY {
        r.push(rule(
            &format!("transpose-through-{b}"),
            &format!("({b} ?o (transpose ?t1 ?x) (transpose ?t2 ?y))"),
            transpose_binary,
        ));
        r.push(rule(
            &format!("transpose-through-{b}-const"),
            &format!("({b} ?o (transpose ?t ?x) ?k)"),
            transpose_const,
        ));
        if !matches!(*b, "add" | "mul") {
            r.push(rule(
                &format!("transpose-through-const-{b}"),
                &format!("({b} ?o ?kfirst (transpose ?t ?x))"),
                transpose_const_first,
            ));
        }
    }
    r
}

/// reshape(transpose(y, p), s) → transpose(reshape(y, s'), p') when the
/// reshape only inserts or drops size-1 dims: the transpose moves past it
/// (so it can meet another transpose), y's unit dims moving to the end.
fn reshape_of_transpose(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let Op::Reshape { shape } = op(eg, s, "?r")? else {
        return None;
    };
    let p = transpose_perm(eg, s, "?t")?;
    let y = v(s, "?y");
    let ys = ty(eg, y)?.shape;
    let xs: Vec<usize> = p.iter().map(|&d| ys[d]).collect();
    let big = |v: &[usize]| v.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if big(&xs) != big(&shape) {
        return None;
    }
    // y's non-unit dims in order, then unit dims up to the new rank.
    let ybig: Vec<usize> = (0..ys.len()).filter(|&d| ys[d] != 1).collect();
    let mut yshape: Vec<usize> = ybig.iter().map(|&d| ys[d]).collect();
    if yshape.len() > shape.len() {
        return None;
    }
    let mut next_unit = yshape.len();
    yshape.resize(shape.len(), 1);
    // The non-unit dims of x (in order), as positions among y's non-unit dims.
    let mut src = p
        .iter()
        .filter(|&&d| ys[d] != 1)
        .map(|d| ybig.iter().position(|b| b == d).expect("non-unit"));
    let mut perm = Vec::with_capacity(shape.len());
    for &d in &shape {
        if d != 1 {
            perm.push(src.next()?);
        } else {
            perm.push(next_unit);
            next_unit += 1;
        }
    }
    let inner = add_op(eg, &Op::Reshape { shape: yshape }, &[y]);
    let new = add_op(eg, &Op::Transpose { perm }, &[inner]);
    same_type(eg, c, new).then_some(new)
}

/// transpose_const with the constant as the left operand (for sub, div, …).
fn transpose_const_first(eg: &mut EG, c: Id, s: &Subst) -> Option<Id> {
    let mut s2 = s.clone();
    s2.insert("?k".parse().unwrap(), v(s, "?kfirst"));
    transpose_const(eg, c, &s2)
}
