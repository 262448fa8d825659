//! Reference evaluator: a slow, deliberately plain interpreter for every IR op.
//!
//! It does two jobs: compile-time constant folding of shape and weight-only
//! subgraphs (so int64 results must be exact; integer arithmetic wraps like
//! the generated code instead of panicking), and serving as the oracle the
//! generated kernels are tested against (so f32 math runs in f64 where cheap
//! and is rounded once at the end). It never panics on bad input: argument
//! types are checked with [`Op::infer`] first and every failure is an `Err`.

use super::{
    broadcast_shapes, contiguous_strides, BinaryOp, DType, Graph, Op, PadMode, PoolKind, ReduceOp,
    Tensor, TensorData, TensorType, UnaryOp, ValueKind, Window,
};
use std::f64::consts::{FRAC_2_SQRT_PI, PI, SQRT_2};
use std::sync::Arc;
use TensorData::{Bool, F32, I64};

/// Evaluates `op` on constant arguments.
pub fn eval_op(op: &Op, args: &[&Tensor]) -> Result<Tensor, String> {
    for (i, t) in args.iter().enumerate() {
        let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(t.numel()) {
            return Err(format!(
                "{}: argument {i} has shape {:?} but {} elements",
                op.name(),
                t.shape,
                t.numel()
            ));
        }
    }
    let tys: Vec<TensorType> = args.iter().map(|t| t.ty()).collect();
    let ty = op
        .infer(&tys.iter().collect::<Vec<_>>())
        .map_err(|e| format!("{}: {e}", op.name()))?;
    if ty.checked_bytes().is_none() {
        return Err(format!("{}: result type {ty} is too large", op.name()));
    }
    let data = eval_data(op, args, &ty.shape).map_err(|e| format!("{}: {e}", op.name()))?;
    if data.dtype() != ty.dtype || data.len() != ty.numel() {
        return Err(format!(
            "{}: internal error: evaluator produced the wrong type (expected {ty})",
            op.name()
        ));
    }
    Ok(Tensor {
        shape: ty.shape,
        data,
    })
}

/// Evaluates a whole graph on `inputs` (by position) and returns its outputs
/// in order. Every value's computed type is checked against the graph's.
pub fn eval_graph(g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    if inputs.len() != g.inputs.len() {
        return Err(format!(
            "graph takes {} inputs, got {}",
            g.inputs.len(),
            inputs.len()
        ));
    }
    let mut vals: Vec<Arc<Tensor>> = Vec::with_capacity(g.values.len());
    for (i, v) in g.values.iter().enumerate() {
        let here = || format!("value %{i} ({})", v.name);
        let t = match &v.kind {
            ValueKind::Input(k) => Arc::new(
                inputs
                    .get(*k)
                    .ok_or_else(|| format!("{}: no input {k}", here()))?
                    .clone(),
            ),
            ValueKind::Const(t) => Arc::clone(t),
            ValueKind::Op { op, args } => {
                let a = args
                    .iter()
                    .map(|id| vals.get(id.index()).map(|t| &**t))
                    .collect::<Option<Vec<&Tensor>>>()
                    .ok_or_else(|| format!("{}: operand not defined before use", here()))?;
                Arc::new(eval_op(op, &a).map_err(|e| format!("{}: {e}", here()))?)
            }
        };
        if t.ty() != v.ty {
            return Err(format!(
                "{}: has type {} but the graph records {}",
                here(),
                t.ty(),
                v.ty
            ));
        }
        vals.push(t);
    }
    g.outputs
        .iter()
        .map(|o| {
            vals.get(o.value.index())
                .map(|t| (**t).clone())
                .ok_or_else(|| format!("output {} is missing", o.name))
        })
        .collect()
}

/// The op's result data; `args` are type-checked and `out` is the result shape.
fn eval_data(op: &Op, args: &[&Tensor], out: &[usize]) -> Result<TensorData, String> {
    let a = args[0];
    Ok(match op {
        Op::Tiled { op, .. } => eval_data(op, args, out)?,
        Op::ToBlocked { cb } => {
            let (n, c, h, w) = (a.shape[0], a.shape[1], a.shape[2], a.shape[3]);
            let t = Tensor::f32(vec![n, c / cb, *cb, h * w], f32s(a)?.to_vec())?;
            eval_op(
                &Op::Transpose {
                    perm: vec![0, 1, 3, 2],
                },
                &[&t],
            )?
            .data
        }
        Op::FromBlocked => {
            let s = &a.shape;
            let t = Tensor::f32(vec![s[0], s[1], s[2] * s[3], s[4]], f32s(a)?.to_vec())?;
            eval_op(
                &Op::Transpose {
                    perm: vec![0, 1, 3, 2],
                },
                &[&t],
            )?
            .data
        }
        Op::ConvBlocked { window, relu, .. } => {
            let x = eval_op(&Op::FromBlocked, &[a])?;
            let conv = Op::ConvImpl {
                window: window.clone(),
                group: 1,
                algo: super::ConvAlgo::Im2col { chunk_rows: 1 },
                relu: *relu,
                pool: None,
            };
            let r = match args.get(3) {
                Some(r) => Some(eval_op(&Op::FromBlocked, &[r])?),
                None => None,
            };
            let mut cargs: Vec<&Tensor> = vec![&x];
            cargs.extend(&args[1..args.len().min(3)]);
            cargs.extend(r.as_ref());
            let y = eval_op(&conv, &cargs)?;
            eval_op(&Op::ToBlocked { cb: a.shape[4] }, &[&y])?.data
        }
        Op::Unary(u) => unary(*u, &a.data)?,
        Op::Binary(b) => binary(*b, a, args[1], out)?,
        Op::Where => {
            // Select from x ++ y: an index below x.numel() is x's, the rest y's.
            let cond = a.as_bool().ok_or("condition must be bool")?;
            let (x, y) = (args[1], args[2]);
            let ic = broadcast_map(&a.shape, out).into_iter();
            let ixy = broadcast_map(&x.shape, out)
                .into_iter()
                .zip(broadcast_map(&y.shape, out));
            let map: Vec<_> = ic
                .zip(ixy)
                .map(|(c, (i, j))| Some(if cond[c] { i } else { x.numel() + j }))
                .collect();
            take(&concat_data(&[&x.data, &y.data])?, &map, 0.0)
        }
        Op::Cast { to } => cast(&a.data, *to),
        Op::Attention {
            scale,
            causal,
            softcap,
            views,
        } => {
            let (scale, softcap) = (scale.get() as f64, softcap.get() as f64);
            match views.as_deref() {
                None => attention(args, scale, *causal, softcap, out)?,
                Some(w) => attention_viewed(args, w, scale, *causal, softcap, out)?,
            }
        }
        Op::MatMul => matmul(a, args[1])?,
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
            relu,
        } => {
            let y = gemm(
                &args[..args.len().min(3)],
                alpha.get() as f64,
                beta.get() as f64,
                *trans_a,
                *trans_b,
                out,
            )?;
            // Epilogues: + residual, then relu (the order the kernel applies them).
            let mut t = Tensor {
                shape: out.to_vec(),
                data: y,
            };
            if let Some(r) = args.get(3) {
                t = eval_op(&Op::Binary(BinaryOp::Add), &[&t, r])?;
            }
            if *relu {
                t = eval_op(&Op::Unary(UnaryOp::Relu), &[&t])?;
            }
            t.data
        }
        Op::Fused { expr } => expr.eval(args, out)?.data,
        Op::Conv { window, group } => conv(args, window, *group, out)?,
        Op::ConvImpl {
            window,
            group,
            relu,
            pool: fused_pool,
            ..
        } => {
            // With a fused pool `out` is the pooled shape: the conv's own
            // output shape comes from its window.
            let mut cshape = vec![out[0], args[1].shape[0]];
            for i in 0..window.spatial_rank() {
                cshape.push(window.out_size(i, args[0].shape[i + 2])?);
            }
            let mut y = conv(&args[..args.len().min(3)], window, *group, &cshape)?;
            if let (Some(r), TensorData::F32(v)) = (args.get(3), &mut y) {
                for (a, b) in v.iter_mut().zip(f32s(r)?) {
                    *a += b;
                }
            }
            let y = match y {
                TensorData::F32(v) if *relu => TensorData::F32(
                    v.into_iter()
                        .map(|x| if x < 0.0 { 0.0 } else { x })
                        .collect(),
                ),
                d => d,
            };
            match fused_pool {
                Some(p) => {
                    let t = Tensor {
                        shape: cshape,
                        data: y,
                    };
                    pool(&t, PoolKind::Max, p, out)?
                }
                None => y,
            }
        }
        Op::Pool { kind, window } => pool(a, *kind, window, out)?,
        Op::Softmax { axis, log } => softmax(a, *axis, *log)?,
        Op::LayerNorm { axis, epsilon } => {
            let (x, norm) = (f32s(a)?, &a.shape[*axis..]);
            let inner: usize = norm.iter().product();
            let param = |t: &'_ Tensor| broadcast_map(&t.shape, norm);
            let scale = (f32s(args[1])?, param(args[1]));
            let bias = match args.get(2) {
                Some(b) => Some((f32s(b)?, param(b))),
                None => None,
            };
            let mut y = Vec::with_capacity(x.len());
            for row in x.chunks(inner.max(1)) {
                for (j, v) in normalize(row, epsilon.get()).into_iter().enumerate() {
                    let b = bias.as_ref().map_or(0.0, |(b, m)| b[m[j]] as f64);
                    y.push((v * scale.0[scale.1[j]] as f64 + b) as f32);
                }
            }
            F32(y)
        }
        Op::InstanceNorm { epsilon } => {
            let (x, scale, bias) = (f32s(a)?, f32s(args[1])?, f32s(args[2])?);
            let (c, plane) = (a.shape[1], a.shape[2..].iter().product::<usize>());
            let mut y = Vec::with_capacity(x.len());
            for (r, row) in x.chunks(plane.max(1)).enumerate() {
                let (s, b) = (scale[r % c] as f64, bias[r % c] as f64);
                y.extend(
                    normalize(row, epsilon.get())
                        .into_iter()
                        .map(|v| (v * s + b) as f32),
                );
            }
            F32(y)
        }
        // Empty `axes` reduces nothing (the frontend resolves ONNX's "all").
        Op::Reduce { axes, .. } if axes.is_empty() => a.data.clone(),
        Op::Reduce { op, axes, .. } => reduce(a, *op, axes)?,
        Op::ArgMax {
            axis, select_last, ..
        } => argmax(a, *axis, *select_last),
        Op::Reshape { .. } => a.data.clone(),
        Op::Transpose { perm } => {
            let st = contiguous_strides(&a.shape);
            take(
                &a.data,
                &index_map(out, |o| {
                    Some(o.iter().zip(perm).map(|(&i, &p)| i * st[p]).sum())
                }),
                0.0,
            )
        }
        Op::Concat { axis } => {
            // For each outer index, each argument contributes a contiguous chunk.
            let inner: usize = a.shape[axis + 1..].iter().product();
            let outer: usize = a.shape[..*axis].iter().product();
            let mut map = Vec::with_capacity(out.iter().product());
            for o in 0..outer {
                let mut base = 0;
                for t in args {
                    let chunk = t.shape[*axis] * inner;
                    map.extend((0..chunk).map(|i| Some(base + o * chunk + i)));
                    base += t.numel();
                }
            }
            take(
                &concat_data(&args.iter().map(|t| &t.data).collect::<Vec<_>>())?,
                &map,
                0.0,
            )
        }
        Op::Slice { dims } => {
            let st = contiguous_strides(&a.shape);
            let at = |o: &[usize]| {
                let pos = dims
                    .iter()
                    .zip(o)
                    .map(|(d, &i)| (d.start as i64 + i as i64 * d.step) as usize);
                Some(pos.zip(&st).map(|(p, s)| p * s).sum())
            };
            take(&a.data, &index_map(out, at), 0.0)
        }
        Op::Gather { axis } => gather(a, args[1], *axis)?,
        Op::GatherElements { axis } => gather_elements(a, args[1], *axis)?,
        Op::Expand { .. } => take(
            &a.data,
            &broadcast_map(&a.shape, out)
                .into_iter()
                .map(Some)
                .collect::<Vec<_>>(),
            0.0,
        ),
        Op::Tile { .. } => {
            let st = contiguous_strides(&a.shape);
            let at = |o: &[usize]| {
                Some(
                    o.iter()
                        .zip(&a.shape)
                        .zip(&st)
                        .map(|((&i, &d), s)| i % d * s)
                        .sum(),
                )
            };
            take(&a.data, &index_map(out, at), 0.0)
        }
        Op::Pad { pads, mode, value } => pad(a, pads, *mode, value.get(), out)?,
    })
}

// ---------------------------------------------------------------------------
// Index helpers: every data-movement op is "compute a source index per output
// element, then gather", which keeps them dtype-generic and easy to check.

/// Calls `f` with every index of `shape` in row-major order (once for rank 0).
fn each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Source index (or `None` = fill value) for every element of `shape`.
fn index_map(shape: &[usize], mut f: impl FnMut(&[usize]) -> Option<usize>) -> Vec<Option<usize>> {
    let mut v = Vec::with_capacity(shape.iter().product());
    each_index(shape, |i| v.push(f(i)));
    v
}

/// For each element of `out`, the flat index of the element of a tensor of
/// shape `input` that numpy broadcasting reads (`input` broadcasts to `out`).
fn broadcast_map(input: &[usize], out: &[usize]) -> Vec<usize> {
    let st = contiguous_strides(input);
    let off = out.len().saturating_sub(input.len());
    let bst: Vec<usize> = (0..out.len())
        .map(|d| {
            if d < off || input[d - off] == 1 {
                0
            } else {
                st[d - off]
            }
        })
        .collect();
    let mut v = Vec::with_capacity(out.iter().product());
    each_index(out, |o| {
        v.push(o.iter().zip(&bst).map(|(i, s)| i * s).sum())
    });
    v
}

/// Gathers `d[i]` for each index; `None` gives `fill` converted to the dtype.
fn take(d: &TensorData, idx: &[Option<usize>], fill: f32) -> TensorData {
    fn pick<T: Copy>(v: &[T], idx: &[Option<usize>], fill: T) -> Vec<T> {
        idx.iter().map(|i| i.map_or(fill, |i| v[i])).collect()
    }
    match d {
        F32(v) => F32(pick(v, idx, fill)),
        I64(v) => I64(pick(v, idx, fill as i64)),
        Bool(v) => Bool(pick(v, idx, fill != 0.0)),
    }
}

/// Flat concatenation of same-dtype data.
fn concat_data(parts: &[&TensorData]) -> Result<TensorData, String> {
    fn cat<'a, T: Clone + 'a>(
        parts: &[&'a TensorData],
        get: impl Fn(&'a TensorData) -> Option<&'a Vec<T>>,
    ) -> Option<Vec<T>> {
        let mut v = Vec::new();
        for p in parts {
            v.extend_from_slice(get(p)?);
        }
        Some(v)
    }
    let r = match parts.first() {
        Some(F32(_)) => cat(parts, |d| if let F32(v) = d { Some(v) } else { None }).map(F32),
        Some(I64(_)) => cat(parts, |d| if let I64(v) = d { Some(v) } else { None }).map(I64),
        Some(Bool(_)) => cat(parts, |d| if let Bool(v) = d { Some(v) } else { None }).map(Bool),
        None => None,
    };
    r.ok_or_else(|| "operands differ in dtype".into())
}

/// `(outer, len, inner)` sizes around `axis`.
fn split3(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

fn f32s(t: &Tensor) -> Result<&[f32], String> {
    t.as_f32()
        .ok_or_else(|| format!("expected f32 data, got {}", t.dtype()))
}

// ---------------------------------------------------------------------------
// Elementwise ops.

fn cast(d: &TensorData, to: DType) -> TensorData {
    // f32 → i64 truncates toward zero; NaN and out-of-range values give
    // i64::MIN like onnxruntime and numpy on x86 (ONNX leaves them undefined).
    // → bool is `x != 0`.
    const LIM: f32 = 9_223_372_036_854_775_808.0; // 2^63
    match (d, to) {
        (F32(v), DType::F32) => F32(v.clone()),
        (F32(v), DType::I64) => I64(v
            .iter()
            .map(|&x| {
                if (-LIM..LIM).contains(&x) {
                    x as i64
                } else {
                    i64::MIN
                }
            })
            .collect()),
        (F32(v), DType::Bool) => Bool(v.iter().map(|&x| x != 0.0).collect()),
        (I64(v), DType::F32) => F32(v.iter().map(|&x| x as f32).collect()),
        (I64(v), DType::I64) => I64(v.clone()),
        (I64(v), DType::Bool) => Bool(v.iter().map(|&x| x != 0).collect()),
        (Bool(v), DType::F32) => F32(v.iter().map(|&x| x as u8 as f32).collect()),
        (Bool(v), DType::I64) => I64(v.iter().map(|&x| x as i64).collect()),
        (Bool(v), DType::Bool) => Bool(v.clone()),
    }
}

fn unary(u: UnaryOp, d: &TensorData) -> Result<TensorData, String> {
    Ok(match (d, u) {
        (Bool(v), UnaryOp::Not) => Bool(v.iter().map(|&b| !b).collect()),
        (I64(v), UnaryOp::Neg) => I64(v.iter().map(|x| x.wrapping_neg()).collect()),
        (I64(v), UnaryOp::Abs) => I64(v.iter().map(|x| x.wrapping_abs()).collect()),
        (F32(v), _) if u != UnaryOp::Not => {
            F32(v.iter().map(|&x| unary_f32(u, x as f64) as f32).collect())
        }
        _ => return Err(format!("{} does not take {}", u.name(), d.dtype())),
    })
}

/// One f32 unary function, computed in f64. NaN propagates everywhere
/// (Relu, Clip and the hard activations included, as in onnxruntime).
fn unary_f32(u: UnaryOp, x: f64) -> f64 {
    use UnaryOp::*;
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let clamp01 = |y: f64| if y.is_nan() { y } else { y.clamp(0.0, 1.0) };
    match u {
        Relu => {
            if x > 0.0 || x.is_nan() {
                x
            } else {
                0.0
            }
        }
        Sigmoid => sigmoid(x),
        Tanh => x.tanh(),
        Exp => x.exp(),
        Log => x.ln(),
        Sqrt => x.sqrt(),
        Erf => erf(x),
        Neg => -x,
        Abs => x.abs(),
        Reciprocal => 1.0 / x,
        Floor => x.floor(),
        Ceil => x.ceil(),
        // 0.5·x·(1 + erf(x/√2)) written with erfc to stay accurate for x ≪ 0.
        Gelu => 0.5 * x * erfc(-x / SQRT_2),
        Silu => x * sigmoid(x),
        LeakyRelu { alpha } => {
            if x < 0.0 {
                alpha.get() as f64 * x
            } else {
                x
            }
        }
        Elu { alpha } => {
            if x < 0.0 {
                alpha.get() as f64 * x.exp_m1()
            } else {
                x
            }
        }
        Selu { alpha, gamma } => {
            gamma.get() as f64
                * if x > 0.0 {
                    x
                } else {
                    alpha.get() as f64 * x.exp_m1()
                }
        }
        HardSigmoid { alpha, beta } => clamp01(alpha.get() as f64 * x + beta.get() as f64),
        HardSwish => x * clamp01(x / 6.0 + 0.5),
        // min(max(x, lo), hi) like numpy: hi wins when lo > hi.
        Clip { min, max } => {
            if x.is_nan() {
                x
            } else {
                x.max(min.get() as f64).min(max.get() as f64)
            }
        }
        Round => x.round_ties_even(),
        Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x // ±0 and NaN
            }
        }
        Not => f64::NAN, // bool only; rejected by `unary`
    }
}

fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, out: &[usize]) -> Result<TensorData, String> {
    let (ia, ib) = (broadcast_map(&a.shape, out), broadcast_map(&b.shape, out));
    let zip = |f: &mut dyn FnMut(usize, usize) -> Result<(), String>| -> Result<(), String> {
        ia.iter().zip(&ib).try_for_each(|(&i, &j)| f(i, j))
    };
    // Runs `f` over broadcast pairs collecting the results.
    macro_rules! map2 {
        ($x:expr, $y:expr, $f:expr) => {{
            let mut v = Vec::with_capacity(ia.len());
            zip(&mut |i, j| Ok(v.push($f($x[i], $y[j])?)))?;
            v
        }};
    }
    Ok(match (&a.data, &b.data) {
        (F32(x), F32(y)) if op.is_comparison() => Bool(map2!(x, y, |p, q| compare(op, p, q))),
        (F32(x), F32(y)) => F32(map2!(x, y, |p, q| f32_binary(op, p, q))),
        (I64(x), I64(y)) if op.is_comparison() => Bool(map2!(x, y, |p, q| compare(op, p, q))),
        (I64(x), I64(y)) => I64(map2!(x, y, |p, q| i64_binary(op, p, q))),
        (Bool(x), Bool(y)) if op.is_comparison() => Bool(map2!(x, y, |p, q| compare(op, p, q))),
        (Bool(x), Bool(y)) => Bool(map2!(x, y, |p, q| logical(op, p, q))),
        _ => return Err("operand types differ".into()),
    })
}

fn compare<T: PartialOrd>(op: BinaryOp, p: T, q: T) -> Result<bool, String> {
    use BinaryOp::*;
    Ok(match op {
        Equal => p == q,
        Less => p < q,
        Greater => p > q,
        LessOrEqual => p <= q,
        GreaterOrEqual => p >= q,
        _ => return Err(format!("{} is not a comparison", op.name())),
    })
}

fn logical(op: BinaryOp, p: bool, q: bool) -> Result<bool, String> {
    Ok(match op {
        BinaryOp::And => p & q,
        BinaryOp::Or => p | q,
        BinaryOp::Xor => p ^ q,
        _ => return Err(format!("{} does not take bool", op.name())),
    })
}

/// f32 arithmetic. +−×÷ are correctly rounded in f32 already; Pow goes
/// through f64. Max/Min propagate NaN like onnxruntime (unlike `f32::max`).
fn f32_binary(op: BinaryOp, p: f32, q: f32) -> Result<f32, String> {
    use BinaryOp::*;
    Ok(match op {
        Add => p + q,
        Sub => p - q,
        Mul => p * q,
        Div => p / q,
        Pow => (p as f64).powf(q as f64) as f32,
        Max | Min if p.is_nan() => p,
        Max | Min if q.is_nan() => q,
        Max => p.max(q),
        Min => p.min(q),
        Fmod => p % q, // Rust's % on floats is C fmod (sign of dividend)
        _ => return Err(format!("{} is not defined on f32", op.name())),
    })
}

/// Exact int64 arithmetic, wrapping on overflow; division by zero is an error.
fn i64_binary(op: BinaryOp, p: i64, q: i64) -> Result<i64, String> {
    use BinaryOp::*;
    if matches!(op, Div | Mod | Fmod) && q == 0 {
        return Err(format!("integer {} by zero", op.name()));
    }
    Ok(match op {
        Add => p.wrapping_add(q),
        Sub => p.wrapping_sub(q),
        Mul => p.wrapping_mul(q),
        Div => p.wrapping_div(q), // truncates toward zero
        Fmod => p.wrapping_rem(q),
        Mod => {
            // Python-style: the remainder takes the divisor's sign.
            let r = p.wrapping_rem(q);
            if r != 0 && (r < 0) != (q < 0) {
                r + q
            } else {
                r
            }
        }
        Pow => ipow(p, q)?,
        Max => p.max(q),
        Min => p.min(q),
        _ => return Err(format!("{} is not defined on i64", op.name())),
    })
}

/// Integer power by squaring (wrapping). A negative exponent gives what
/// onnxruntime's `(int64)pow(b, e)` gives: 1/b^|e| truncated.
fn ipow(b: i64, e: i64) -> Result<i64, String> {
    if e < 0 {
        return match b {
            0 => Err("integer 0 raised to a negative power".into()),
            1 => Ok(1),
            -1 => Ok(if e % 2 == 0 { 1 } else { -1 }),
            _ => Ok(0),
        };
    }
    let (mut r, mut b, mut e) = (1i64, b, e as u64);
    while e > 0 {
        if e & 1 == 1 {
            r = r.wrapping_mul(b);
        }
        b = b.wrapping_mul(b);
        e >>= 1;
    }
    Ok(r)
}

// ---------------------------------------------------------------------------
// Linear algebra, convolution, pooling.

fn matmul(a: &Tensor, b: &Tensor) -> Result<TensorData, String> {
    // Promote 1-D operands to matrices; the result shape (from `infer`) drops
    // the promoted dims again, which does not change the data layout.
    let sa = if a.shape.len() == 1 {
        vec![1, a.shape[0]]
    } else {
        a.shape.clone()
    };
    let sb = if b.shape.len() == 1 {
        vec![b.shape[0], 1]
    } else {
        b.shape.clone()
    };
    let (ra, rb) = (sa.len() - 2, sb.len() - 2);
    let (m, k, n) = (sa[ra], sa[ra + 1], sb[rb + 1]);
    let batch = broadcast_shapes(&sa[..ra], &sb[..rb])?;
    let pairs: Vec<(usize, usize)> = broadcast_map(&sa[..ra], &batch)
        .into_iter()
        .zip(broadcast_map(&sb[..rb], &batch))
        .collect();
    fn mm<T: Copy, A: Copy>(
        (x, y): (&[T], &[T]),
        pairs: &[(usize, usize)],
        (m, k, n): (usize, usize, usize),
        zero: A,
        fma: impl Fn(A, T, T) -> A,
        fin: impl Fn(A) -> T,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(pairs.len() * m * n);
        for &(ba, bb) in pairs {
            let (xa, yb) = (&x[ba * m * k..], &y[bb * k * n..]);
            for i in 0..m {
                for j in 0..n {
                    out.push(fin(
                        (0..k).fold(zero, |acc, p| fma(acc, xa[i * k + p], yb[p * n + j]))
                    ));
                }
            }
        }
        out
    }
    let dims = (m, k, n);
    Ok(match (&a.data, &b.data) {
        (F32(x), F32(y)) => F32(mm(
            (x, y),
            &pairs,
            dims,
            0f64,
            |s, p, q| s + p as f64 * q as f64,
            |s| s as f32,
        )),
        (I64(x), I64(y)) => I64(mm(
            (x, y),
            &pairs,
            dims,
            0i64,
            |s, p, q| s.wrapping_add(p.wrapping_mul(q)),
            |s| s,
        )),
        _ => return Err("matmul needs two f32 or two i64 operands".into()),
    })
}

/// Reference attention: softmax(scale·q·kᵀ + mask)·v in f64, with batch
/// broadcasting and grouped heads as [`Op::Attention`] defines them.
fn attention(
    args: &[&Tensor],
    scale: f64,
    causal: bool,
    softcap: f64,
    out: &[usize],
) -> Result<TensorData, String> {
    let (q, k, v) = (f32s(args[0])?, f32s(args[1])?, f32s(args[2])?);
    let mask = match args.get(3) {
        Some(m) => Some(f32s(m)?),
        None => None,
    };
    let r = out.len();
    let qs = &args[0].shape;
    let ks = &args[1].shape;
    let (lq, d, lk, dv) = (qs[r - 2], qs[r - 1], ks[r - 1], out[r - 1]);
    let batch = &qs[..r - 2];
    let mut scores_shape = batch.to_vec();
    scores_shape.extend([lq, lk]);
    let mask_map = args.get(3).map(|m| broadcast_map(&m.shape, &scores_shape));
    let nb: usize = batch.iter().product();
    let mut y = vec![0f32; nb * lq * dv];
    for b in 0..nb {
        // Batch index of k/v: per dim, equal, broadcast (1), or grouped (dim -3).
        let mut rem = b;
        let mut kb = 0usize;
        let mut kstride = 1usize;
        for i in (0..r - 2).rev() {
            let qi = rem % qs[i];
            rem /= qs[i];
            let ki = if ks[i] == qs[i] {
                qi
            } else if ks[i] == 1 {
                0
            } else {
                qi / (qs[i] / ks[i])
            };
            kb += ki * kstride;
            kstride *= ks[i];
        }
        for i in 0..lq {
            let qrow = &q[(b * lq + i) * d..][..d];
            let mut s = vec![f64::NEG_INFINITY; lk];
            for (j, sj) in s.iter_mut().enumerate() {
                if causal && j > i + lk.saturating_sub(lq) {
                    continue;
                }
                // kᵀ is [D, Lk]: column j holds key j.
                let kt = &k[kb * d * lk..][..d * lk];
                let mut dot: f64 = qrow
                    .iter()
                    .enumerate()
                    .map(|(t, &a)| a as f64 * kt[t * lk + j] as f64)
                    .sum::<f64>()
                    * scale;
                if softcap > 0.0 {
                    dot = softcap * (dot / softcap).tanh();
                }
                if let (Some(m), Some(map)) = (mask, &mask_map) {
                    dot += m[map[(b * lq + i) * lk + j]] as f64;
                }
                *sj = dot;
            }
            let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s
                .iter()
                .map(|&x| {
                    if mx == f64::NEG_INFINITY {
                        0.0
                    } else {
                        (x - mx).exp()
                    }
                })
                .collect();
            let sum: f64 = e.iter().sum();
            for c in 0..dv {
                let acc: f64 = (0..lk)
                    .map(|j| e[j] * v[(kb * lk + j) * dv + c] as f64)
                    .sum();
                y[(b * lq + i) * dv + c] = if sum > 0.0 {
                    (acc / sum) as f32
                } else {
                    f32::NAN
                };
            }
        }
    }
    Ok(TensorData::F32(y))
}

/// Attention through views: gathers the logical operands, runs the plain
/// reference, and scatters the result into the result buffer.
fn attention_viewed(
    args: &[&Tensor],
    w: &crate::ir::AttnViews,
    scale: f64,
    causal: bool,
    softcap: f64,
    out: &[usize],
) -> Result<TensorData, String> {
    let mut ops: Vec<Tensor> = Vec::with_capacity(3);
    for (i, view) in [&w.q, &w.kt, &w.v].into_iter().enumerate() {
        ops.push(match view {
            None => args[i].clone(),
            Some(v) => {
                let x = f32s(args[i])?;
                let d = (0..v.numel()).map(|j| x[v.at(j)]).collect();
                Tensor::f32(v.shape.clone(), d)?
            }
        });
    }
    let mut refs: Vec<&Tensor> = ops.iter().collect();
    refs.extend(args.get(3).copied());
    let Some((_, ov)) = &w.out else {
        return attention(&refs, scale, causal, softcap, out);
    };
    let TensorData::F32(y) = attention(&refs, scale, causal, softcap, &ov.shape)? else {
        unreachable!("attention is f32")
    };
    let mut r = vec![0f32; out.iter().product()];
    for (j, x) in y.into_iter().enumerate() {
        r[ov.at(j)] = x;
    }
    Ok(TensorData::F32(r))
}

fn gemm(
    args: &[&Tensor],
    alpha: f64,
    beta: f64,
    ta: bool,
    tb: bool,
    out: &[usize],
) -> Result<TensorData, String> {
    let (a, b) = (f32s(args[0])?, f32s(args[1])?);
    let (m, n) = (out[0], out[1]);
    let k = args[0].shape[if ta { 0 } else { 1 }];
    // onnxruntime skips C entirely when beta == 0 (so NaN/inf in C vanish).
    let c = match args.get(2) {
        Some(c) if beta != 0.0 => Some((f32s(c)?, broadcast_map(&c.shape, out))),
        _ => None,
    };
    let mut y = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|p| {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    av as f64 * bv as f64
                })
                .sum();
            let cv = c
                .as_ref()
                .map_or(0.0, |(c, map)| beta * c[map[i * n + j]] as f64);
            y.push((alpha * dot + cv) as f32);
        }
    }
    Ok(F32(y))
}

/// Offset within one (N, C) plane of the input element that kernel tap `k`
/// of the window for output index `o` (`[n, c, spatial...]`) reads, or `None`
/// if the tap lands in padding (or past the input, under ceil_mode).
fn tap(w: &Window, o: &[usize], k: &[usize], xs: &[usize]) -> Option<usize> {
    let mut off = 0;
    for i in 0..k.len() {
        let p = (o[i + 2] * w.strides[i] + k[i] * w.dilations[i]).checked_sub(w.pads[i])?;
        if p >= xs[i + 2] {
            return None;
        }
        off = off * xs[i + 2] + p;
    }
    Some(off)
}

fn conv(args: &[&Tensor], w: &Window, group: usize, out: &[usize]) -> Result<TensorData, String> {
    let (x, wt) = (f32s(args[0])?, f32s(args[1])?);
    let bias = args.get(2).map(|b| f32s(b)).transpose()?;
    let (xs, ws) = (&args[0].shape, &args[1].shape);
    let (cpg, mpg) = (ws[1], ws[0] / group);
    let (plane, wker) = (
        xs[2..].iter().product::<usize>(),
        ws[2..].iter().product::<usize>(),
    );
    let mut y = Vec::with_capacity(out.iter().product());
    each_index(out, |o| {
        let m = o[1];
        let mut acc = bias.map_or(0.0, |b| b[m] as f64);
        for c in 0..cpg {
            let xbase = (o[0] * xs[1] + (m / mpg) * cpg + c) * plane;
            let mut wi = (m * cpg + c) * wker; // kernel taps run in row-major order
            each_index(&w.kernel, |k| {
                if let Some(off) = tap(w, o, k, xs) {
                    acc += x[xbase + off] as f64 * wt[wi] as f64;
                }
                wi += 1;
            });
        }
        y.push(acc as f32);
    });
    Ok(F32(y))
}

fn pool(a: &Tensor, kind: PoolKind, w: &Window, out: &[usize]) -> Result<TensorData, String> {
    let (x, xs, n) = (f32s(a)?, &a.shape, w.spatial_rank());
    let plane: usize = xs[2..].iter().product();
    let mut y = Vec::with_capacity(out.iter().product());
    each_index(out, |o| {
        let base = (o[0] * xs[1] + o[1]) * plane;
        let (mut max, mut sum, mut real, mut padded) = (f64::NEG_INFINITY, 0.0, 0usize, 0usize);
        each_index(&w.kernel, |k| {
            // count_include_pad counts taps inside the padded extent only:
            // ceil_mode windows hanging past the end padding are clipped.
            let in_padded = (0..n).all(|i| {
                o[i + 2] * w.strides[i] + k[i] * w.dilations[i]
                    < xs[i + 2] + w.pads[i] + w.pads[i + n]
            });
            padded += in_padded as usize;
            if let Some(off) = tap(w, o, k, xs) {
                let v = x[base + off] as f64;
                real += 1;
                sum += v;
                if v.is_nan() || v > max {
                    max = v; // NaN sticks: once max is NaN nothing compares greater
                }
            }
        });
        y.push(match kind {
            // A window entirely in padding gives onnxruntime's initial value.
            PoolKind::Max if real == 0 => f32::MIN,
            PoolKind::Max => max as f32,
            PoolKind::Avg { count_include_pad } => {
                (sum / (if count_include_pad { padded } else { real }) as f64) as f32
            }
        });
    });
    Ok(F32(y))
}

// ---------------------------------------------------------------------------
// Normalization and reductions.

fn softmax(a: &Tensor, axis: usize, log: bool) -> Result<TensorData, String> {
    let x = f32s(a)?;
    let (outer, len, inner) = split3(&a.shape, axis);
    let mut y = vec![0f32; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            // Subtract the max for stability (f64::max skips NaN; NaN still
            // propagates through the sum).
            let max = (0..len)
                .map(|j| x[at(j)] as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..len).map(|j| (x[at(j)] as f64 - max).exp()).sum();
            for j in 0..len {
                let d = x[at(j)] as f64 - max;
                y[at(j)] = if log { d - sum.ln() } else { d.exp() / sum } as f32;
            }
        }
    }
    Ok(F32(y))
}

/// (x − mean) / sqrt(var + eps) over `row`, population variance, in f64.
fn normalize(row: &[f32], eps: f32) -> Vec<f64> {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps as f64).sqrt();
    row.iter().map(|&v| (v as f64 - mean) * inv).collect()
}

fn reduce(a: &Tensor, op: ReduceOp, axes: &[usize]) -> Result<TensorData, String> {
    // Output position of every input element: strides of the keepdims
    // shape with the reduced dims zeroed (keepdims doesn't change layout).
    let kept: Vec<usize> = a
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let mut ost = contiguous_strides(&kept);
    for &ax in axes {
        ost[ax] = 0;
    }
    let mut dst = Vec::with_capacity(a.numel());
    each_index(&a.shape, |i| {
        dst.push(i.iter().zip(&ost).map(|(i, s)| i * s).sum::<usize>())
    });
    let n_out: usize = kept.iter().product();
    let count: usize = a
        .shape
        .iter()
        .enumerate()
        .filter(|(i, _)| axes.contains(i))
        .map(|(_, &d)| d)
        .product();
    fn fold<T: Copy, A: Copy>(
        x: &[T],
        dst: &[usize],
        n: usize,
        init: A,
        f: impl Fn(A, T, usize) -> A,
    ) -> Vec<A> {
        let mut acc = vec![init; n];
        for (&v, &d) in x.iter().zip(dst) {
            acc[d] = f(acc[d], v, d);
        }
        acc
    }
    let x = match &a.data {
        I64(x) => {
            let f: fn(i64, i64, usize) -> i64 = match op {
                ReduceOp::Sum => |s, v, _| s.wrapping_add(v),
                ReduceOp::Prod => |s, v, _| s.wrapping_mul(v),
                ReduceOp::Max => |s, v, _| s.max(v),
                ReduceOp::Min => |s, v, _| s.min(v),
                _ => return Err(format!("reduce {} needs f32", op.name())),
            };
            let init = match op {
                ReduceOp::Prod => 1,
                ReduceOp::Max => i64::MIN,
                ReduceOp::Min => i64::MAX,
                _ => 0,
            };
            return Ok(I64(fold(x, &dst, n_out, init, f)));
        }
        F32(x) => x,
        Bool(_) => return Err("reduce does not take bool".into()),
    };
    let nan_max = |s: f64, v: f32, _| {
        if v.is_nan() || v as f64 > s {
            v as f64
        } else {
            s
        }
    };
    let nan_min = |s: f64, v: f32, _| {
        if v.is_nan() || (v as f64) < s {
            v as f64
        } else {
            s
        }
    };
    let sum = |g: fn(f64) -> f64| fold(x, &dst, n_out, 0.0, |s, v, _| s + g(v as f64));
    let r: Vec<f64> = match op {
        ReduceOp::Sum => sum(|v| v),
        ReduceOp::Mean => sum(|v| v).into_iter().map(|s| s / count as f64).collect(),
        ReduceOp::L1 => sum(f64::abs),
        ReduceOp::SumSquare => sum(|v| v * v),
        ReduceOp::L2 => sum(|v| v * v).into_iter().map(f64::sqrt).collect(),
        ReduceOp::Prod => fold(x, &dst, n_out, 1.0, |s, v, _| s * v as f64),
        ReduceOp::Max => fold(x, &dst, n_out, f64::NEG_INFINITY, nan_max),
        ReduceOp::Min => fold(x, &dst, n_out, f64::INFINITY, nan_min),
        ReduceOp::LogSumExp => {
            // Shift by the (finite) max for stability; ±inf/NaN maxima need no shift.
            let shift: Vec<f64> = fold(x, &dst, n_out, f64::NEG_INFINITY, nan_max)
                .into_iter()
                .map(|m| if m.is_finite() { m } else { 0.0 })
                .collect();
            let s = fold(x, &dst, n_out, 0.0, |s, v, d| {
                s + (v as f64 - shift[d]).exp()
            });
            s.iter().zip(&shift).map(|(s, m)| s.ln() + m).collect()
        }
    };
    Ok(F32(r.into_iter().map(|v| v as f32).collect()))
}

fn argmax(a: &Tensor, axis: usize, last: bool) -> TensorData {
    let (outer, len, inner) = split3(&a.shape, axis);
    // `gt(p, q)`: p ranks above q. With `last`, ties move the pick forward.
    fn run<T: Copy>(
        x: &[T],
        (outer, len, inner): (usize, usize, usize),
        last: bool,
        gt: fn(T, T) -> bool,
    ) -> Vec<i64> {
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| x[(o * len + j) * inner + i];
                let mut best = 0;
                for j in 1..len {
                    if gt(at(j), at(best)) || (last && !gt(at(best), at(j))) {
                        best = j;
                    }
                }
                out.push(best as i64);
            }
        }
        out
    }
    let dims = (outer, len, inner);
    I64(match &a.data {
        // NaN ranks above everything, as in numpy.
        F32(x) => run(x, dims, last, |p, q| (p.is_nan() && !q.is_nan()) || p > q),
        I64(x) => run(x, dims, last, |p, q| p > q),
        Bool(x) => run(x, dims, last, |p, q| p & !q),
    })
}

// ---------------------------------------------------------------------------
// Data movement with index arithmetic.

fn gather(a: &Tensor, idx: &Tensor, axis: usize) -> Result<TensorData, String> {
    let ix = idx.as_i64().ok_or("gather indices must be i64")?;
    let (outer, dim, inner) = split3(&a.shape, axis);
    let norm = ix
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            if (0..dim as i64).contains(&j) {
                Ok(j as usize)
            } else {
                Err(format!(
                    "gather index {i} is out of range for axis {axis} of size {dim}"
                ))
            }
        })
        .collect::<Result<Vec<usize>, String>>()?;
    let mut map = Vec::with_capacity(outer * norm.len() * inner);
    for o in 0..outer {
        for &j in &norm {
            map.extend((0..inner).map(|i| Some((o * dim + j) * inner + i)));
        }
    }
    Ok(take(&a.data, &map, 0.0))
}

fn gather_elements(a: &Tensor, idx: &Tensor, axis: usize) -> Result<TensorData, String> {
    let ix = idx.as_i64().ok_or("gather_elements indices must be i64")?;
    let st = contiguous_strides(&a.shape);
    let dim = a.shape[axis] as i64;
    let mut map = Vec::with_capacity(ix.len());
    let mut k = 0;
    let mut bad = None;
    each_index(&idx.shape, |o| {
        let i = ix[k];
        k += 1;
        let j = if i < 0 { i + dim } else { i };
        if !(0..dim).contains(&j) {
            bad.get_or_insert(i);
            map.push(None);
            return;
        }
        let off: usize = o
            .iter()
            .enumerate()
            .map(|(d, &p)| if d == axis { j as usize } else { p } * st[d])
            .sum();
        map.push(Some(off));
    });
    if let Some(i) = bad {
        return Err(format!(
            "gather_elements index {i} is out of range for axis {axis} of size {dim}"
        ));
    }
    Ok(take(&a.data, &map, 0.0))
}

/// Pads (or crops, for negative pads). Cropping happens first, as in
/// onnxruntime, so reflect/edge/wrap refer to the cropped tensor.
fn pad(
    a: &Tensor,
    pads: &[i64],
    mode: PadMode,
    value: f32,
    out: &[usize],
) -> Result<TensorData, String> {
    let r = a.shape.len();
    let mut per_dim: Vec<Vec<Option<usize>>> = Vec::with_capacity(r);
    for d in 0..r {
        let (b, e) = (pads[d], pads[d + r]);
        let size = a.shape[d] as i64 + b.min(0) + e.min(0); // extent after cropping
        if size < 0 || (size == 0 && out[d] > 0 && mode != PadMode::Constant) {
            return Err(format!(
                "pads of dim {d} crop more than its extent {}",
                a.shape[d]
            ));
        }
        let src = |i: i64| {
            let q = i - b.max(0); // position in the cropped extent
            let q = if (0..size).contains(&q) {
                Some(q)
            } else {
                match mode {
                    PadMode::Constant => None,
                    PadMode::Edge => Some(q.clamp(0, size - 1)),
                    PadMode::Wrap => Some(q.rem_euclid(size)),
                    PadMode::Reflect if size == 1 => Some(0),
                    PadMode::Reflect => {
                        let period = 2 * (size - 1);
                        let q = q.rem_euclid(period);
                        Some(if q >= size { period - q } else { q })
                    }
                }
            };
            q.map(|q| (q - b.min(0)) as usize)
        };
        per_dim.push((0..out[d] as i64).map(src).collect());
    }
    let st = contiguous_strides(&a.shape);
    let at = |o: &[usize]| {
        o.iter()
            .enumerate()
            .try_fold(0, |acc, (d, &i)| per_dim[d][i].map(|p| acc + p * st[d]))
    };
    Ok(take(&a.data, &index_map(out, at), value))
}

// ---------------------------------------------------------------------------
// erf. Rust's std has none, and the oracle must be far more accurate than f32.

/// erf in f64 to within a few ulps. |x| < 2: the series
/// erf x = 2/√π · e^{−x²} · Σ 2ⁿ x^{2n+1} / (1·3·…·(2n+1)), whose terms are
/// all positive (no cancellation); |x| ≥ 2: 1 − erfc from its continued
/// fraction.
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.0 {
        let x2 = ax * ax;
        let (mut term, mut sum) = (ax, ax);
        let mut n = 0.0;
        while term > sum * 1e-17 && n < 200.0 {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        FRAC_2_SQRT_PI * (-x2).exp() * sum
    } else {
        1.0 - erfc_cf(ax)
    };
    r.copysign(x)
}

/// erfc in f64; precise relative to its (possibly tiny) value for x ≥ 2.
pub fn erfc(x: f64) -> f64 {
    if x >= 2.0 {
        erfc_cf(x)
    } else if x > -2.0 {
        1.0 - erf(x)
    } else {
        2.0 - erfc_cf(-x) // also NaN for NaN
    }
}

/// erfc(x) for x ≥ 2 from the continued fraction
/// erfc x = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))),
/// evaluated backwards; 100 terms reach full f64 precision for x ≥ 2.
fn erfc_cf(x: f64) -> f64 {
    let f = (1..=100).rev().fold(x, |f, n| x + n as f64 / 2.0 / f);
    (-x * x).exp() / PI.sqrt() / f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{SliceDim, ValueId};

    fn t64(s: &[usize], v: &[i64]) -> Tensor {
        Tensor::i64(s.to_vec(), v.to_vec()).unwrap()
    }
    fn tf(s: &[usize], v: &[f32]) -> Tensor {
        Tensor::f32(s.to_vec(), v.to_vec()).unwrap()
    }
    fn ev(op: Op, args: &[&Tensor]) -> Tensor {
        eval_op(&op, args).unwrap()
    }
    fn f(t: &Tensor) -> Vec<f32> {
        t.as_f32().unwrap().to_vec()
    }
    fn i(t: &Tensor) -> Vec<i64> {
        t.as_i64().unwrap().to_vec()
    }
    fn win(
        kernel: &[usize],
        strides: &[usize],
        dil: &[usize],
        pads: &[usize],
        ceil_mode: bool,
    ) -> Window {
        let (kernel, strides, dilations, pads) = (
            kernel.to_vec(),
            strides.to_vec(),
            dil.to_vec(),
            pads.to_vec(),
        );
        Window {
            kernel,
            strides,
            dilations,
            pads,
            ceil_mode,
        }
    }
    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn int64_arithmetic() {
        let a = t64(&[4], &[7, -7, 7, -7]);
        let b = t64(&[4], &[2, 2, -2, -2]);
        let bin = |op, a: &Tensor, b: &Tensor| i(&ev(Op::Binary(op), &[a, b]));
        assert_eq!(bin(BinaryOp::Div, &a, &b), [3, -3, -3, 3]);
        assert_eq!(bin(BinaryOp::Mod, &a, &b), [1, 1, -1, -1]);
        assert_eq!(bin(BinaryOp::Fmod, &a, &b), [1, -1, 1, -1]);
        assert_eq!(bin(BinaryOp::Pow, &a, &b), [49, 49, 0, 0]);
        assert_eq!(bin(BinaryOp::Max, &a, &b), [7, 2, 7, -2]);
        assert_eq!(bin(BinaryOp::Mul, &a, &t64(&[], &[2])), [14, -14, 14, -14]);
        let lt = ev(Op::Binary(BinaryOp::Less), &[&a, &b]);
        assert_eq!(lt.as_bool().unwrap(), [false, true, false, true]);
        let err = eval_op(&Op::Binary(BinaryOp::Div), &[&a, &t64(&[], &[0])]).unwrap_err();
        assert!(err.contains("by zero"), "{err}");
        let c = ev(
            Op::Cast { to: DType::I64 },
            &[&tf(&[4], &[2.7, -2.7, 0.0, -0.5])],
        );
        assert_eq!(i(&c), [2, -2, 0, 0]);
        let c = ev(
            Op::Cast { to: DType::Bool },
            &[&tf(&[3], &[0.0, -0.5, f32::NAN])],
        );
        assert_eq!(c.as_bool().unwrap(), [false, true, true]);
        let r = ev(
            Op::Reduce {
                op: ReduceOp::Prod,
                axes: vec![0],
                keepdims: false,
            },
            &[&t64(&[3], &[2, 3, 4])],
        );
        assert_eq!((r.shape.clone(), i(&r)), (vec![], vec![24]));
    }

    #[test]
    fn gather_elements_round_sign() {
        let data = t64(&[2, 3], &[0, 1, 2, 10, 11, 12]);
        let g = ev(
            Op::GatherElements { axis: 1 },
            &[&data, &t64(&[2, 2], &[2, -3, 0, 1])],
        );
        assert_eq!((g.shape.clone(), i(&g)), (vec![2, 2], vec![2, 0, 10, 11]));
        let g = ev(
            Op::GatherElements { axis: 0 },
            &[&data, &t64(&[1, 3], &[1, 0, -1])],
        );
        assert_eq!(i(&g), [10, 1, 12]);
        let err = eval_op(
            &Op::GatherElements { axis: 0 },
            &[&data, &t64(&[1, 1], &[2])],
        )
        .unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        let x = tf(&[6], &[0.5, 1.5, -2.5, 2.6, -0.0, -3.0]);
        assert_eq!(
            f(&ev(Op::Unary(UnaryOp::Round), &[&x])),
            [0.0, 2.0, -2.0, 3.0, 0.0, -3.0]
        );
        assert_eq!(
            f(&ev(Op::Unary(UnaryOp::Sign), &[&x])),
            [1.0, 1.0, -1.0, 1.0, 0.0, -1.0]
        );
    }

    #[test]
    fn gather_slice_concat_where() {
        let data = t64(&[2, 3], &[0, 1, 2, 10, 11, 12]);
        let g = ev(Op::Gather { axis: 1 }, &[&data, &t64(&[2], &[-1, 0])]);
        assert_eq!((g.shape.clone(), i(&g)), (vec![2, 2], vec![2, 0, 12, 10]));
        let g = ev(Op::Gather { axis: 0 }, &[&data, &t64(&[], &[-2])]);
        assert_eq!((g.shape.clone(), i(&g)), (vec![3], vec![0, 1, 2]));
        let err = eval_op(&Op::Gather { axis: 1 }, &[&data, &t64(&[1], &[-4])]).unwrap_err();
        assert!(err.contains("-4"), "{err}");
        let rev = |n| SliceDim {
            start: 2,
            step: -2,
            count: n,
        };
        let s = ev(
            Op::Slice {
                dims: vec![
                    SliceDim {
                        start: 1,
                        step: -1,
                        count: 2,
                    },
                    rev(2),
                ],
            },
            &[&data],
        );
        assert_eq!(i(&s), [12, 10, 2, 0]);
        let c = ev(Op::Concat { axis: 1 }, &[&data, &t64(&[2, 1], &[5, 6])]);
        assert_eq!(i(&c), [0, 1, 2, 5, 10, 11, 12, 6]);
        let cond = Tensor::bool(vec![3], vec![true, false, true]).unwrap();
        let w = ev(Op::Where, &[&cond, &data, &t64(&[], &[-1])]);
        assert_eq!(i(&w), [0, -1, 2, 10, -1, 12]);
    }

    #[test]
    fn movement_ops() {
        let x = tf(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        assert_eq!(
            f(&ev(Op::Transpose { perm: vec![1, 0] }, &[&x])),
            [1., 4., 2., 5., 3., 6.]
        );
        assert_eq!(
            f(&ev(
                Op::Tile {
                    repeats: vec![1, 2]
                },
                &[&x]
            )),
            [1., 2., 3., 1., 2., 3., 4., 5., 6., 4., 5., 6.]
        );
        let e = ev(Op::Expand { shape: vec![2, 2] }, &[&tf(&[2, 1], &[1., 2.])]);
        assert_eq!(f(&e), [1., 1., 2., 2.]);
        let row = tf(&[1, 3], &[1., 2., 3.]);
        let pad = |pads: &[i64], mode| {
            f(&ev(
                Op::Pad {
                    pads: pads.to_vec(),
                    mode,
                    value: 9.0.into(),
                },
                &[&row],
            ))
        };
        assert_eq!(
            pad(&[0, 2, 0, 1], PadMode::Constant),
            [9., 9., 1., 2., 3., 9.]
        );
        assert_eq!(
            pad(&[0, 2, 0, 2], PadMode::Reflect),
            [3., 2., 1., 2., 3., 2., 1.]
        );
        assert_eq!(pad(&[0, 2, 0, 1], PadMode::Edge), [1., 1., 1., 2., 3., 3.]);
        assert_eq!(pad(&[0, 2, 0, 1], PadMode::Wrap), [2., 3., 1., 2., 3., 1.]);
        assert_eq!(pad(&[0, -1, 0, 1], PadMode::Constant), [2., 3., 9.]);
        assert_eq!(pad(&[0, -1, 0, 1], PadMode::Edge), [2., 3., 3.]);
    }

    #[test]
    fn conv_pad_stride_dilation_group() {
        // 1-D, 2 input channels, 2 groups, kernel 2, dilation 2, stride 2, pads [1, 1].
        let x = tf(&[1, 2, 5], &[1., 2., 3., 4., 5., 10., 20., 30., 40., 50.]);
        let w = tf(&[2, 1, 2], &[1., 2., 1., -1.]);
        let b = tf(&[2], &[0.5, 0.0]);
        let op = Op::Conv {
            window: win(&[2], &[2], &[2], &[1, 1], false),
            group: 2,
        };
        // Padded ch0: 0 1 2 3 4 5 0; taps at q = 2·o + {0, 2}: o=0 → (0,2), o=1 → (2,4), o=2 → (4,6).
        let y = ev(op.clone(), &[&x, &w, &b]);
        assert_eq!(y.shape, vec![1, 2, 3]);
        assert_eq!(f(&y), [4.5, 10.5, 4.5, -20., -20., 40.]);
        // 2-D with a 1×1 kernel equals a per-pixel channel mix.
        let op = Op::Conv {
            window: win(&[1, 1], &[1, 1], &[1, 1], &[0; 4], false),
            group: 1,
        };
        let y = ev(
            op,
            &[
                &tf(&[1, 2, 1, 2], &[1., 2., 3., 4.]),
                &tf(&[1, 2, 1, 1], &[1., 10.]),
            ],
        );
        assert_eq!(f(&y), [31., 42.]);
    }

    #[test]
    fn pooling() {
        let x = tf(&[1, 1, 5], &[1., 2., 3., 4., 5.]);
        let avg = |cip, end_pad| {
            let window = win(&[3], &[2], &[1], &[1, end_pad], true);
            f(&ev(
                Op::Pool {
                    kind: PoolKind::Avg {
                        count_include_pad: cip,
                    },
                    window,
                },
                &[&x],
            ))
        };
        // Padded: [p 1 2 3 4 5]; out = ceil((6-3)/2)+1 = 3 windows: [p,1,2], [2,3,4], [4,5,(past end)].
        assert_eq!(avg(true, 0), [1., 3., 4.5]);
        assert_eq!(avg(false, 0), [1.5, 3., 4.5]);
        // With an end pad the last window is [4,5,p]: the pad counts only when asked.
        assert_eq!(avg(true, 1), [1., 3., 3.]);
        assert_eq!(avg(false, 1), [1.5, 3., 4.5]);
        let op = Op::Pool {
            kind: PoolKind::Max,
            window: win(&[2], &[2], &[1], &[1, 1], false),
        };
        assert_eq!(f(&ev(op, &[&tf(&[1, 1, 3], &[-1., -2., -3.])])), [-1., -2.]);
        let op = Op::Pool {
            kind: PoolKind::Max,
            window: win(&[2, 2], &[1, 1], &[1, 1], &[0; 4], false),
        };
        assert_eq!(
            f(&ev(op, &[&tf(&[1, 1, 2, 3], &[1., 5., 2., 4., 3., 6.])])),
            [5., 6.]
        );
    }

    #[test]
    fn softmax_and_norms() {
        let x = tf(&[2, 3], &[1., 2., 3., -1., 0., 100.]);
        let y = f(&ev(
            Op::Softmax {
                axis: 1,
                log: false,
            },
            &[&x],
        ));
        for row in y.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(y[0] < y[1] && y[1] < y[2] && (y[5] - 1.0).abs() < 1e-6);
        let ly = f(&ev(Op::Softmax { axis: 0, log: true }, &[&x]));
        close(&ly[..1], &[(2f32.exp() / (1. + 2f32.exp())).ln()]);
        let ln = ev(
            Op::LayerNorm {
                axis: 1,
                epsilon: 0.0.into(),
            },
            &[&x, &tf(&[1], &[1.])],
        );
        for row in f(&ln).chunks(3) {
            let mean = row.iter().sum::<f32>() / 3.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 3.0;
            assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{row:?}");
        }
        let ln = ev(
            Op::LayerNorm {
                axis: 1,
                epsilon: 0.0.into(),
            },
            &[&x, &tf(&[3], &[1., 2., 3.]), &tf(&[], &[1.])],
        );
        let s = 1.5f32.sqrt();
        close(&f(&ln)[..3], &[1. - s, 1., 1. + 3. * s]);
        let inx = tf(&[1, 2, 2], &[1., 3., 5., 7.]);
        let y = ev(
            Op::InstanceNorm {
                epsilon: 0.0.into(),
            },
            &[&inx, &tf(&[2], &[2., 1.]), &tf(&[2], &[0., 7.])],
        );
        assert_eq!(f(&y), [-2., 2., 6., 8.]);
    }

    #[test]
    fn reductions_and_argmax() {
        let x = tf(&[2, 2], &[1., -2., 3., 4.]);
        let red = |op, axes: &[usize]| {
            f(&ev(
                Op::Reduce {
                    op,
                    axes: axes.to_vec(),
                    keepdims: true,
                },
                &[&x],
            ))
        };
        assert_eq!(red(ReduceOp::Sum, &[0]), [4., 2.]);
        assert_eq!(red(ReduceOp::Mean, &[0, 1]), [1.5]);
        assert_eq!(red(ReduceOp::L1, &[1]), [3., 7.]);
        assert_eq!(red(ReduceOp::L2, &[0]), [10f32.sqrt(), 20f32.sqrt()]);
        assert_eq!(red(ReduceOp::Min, &[1]), [-2., 3.]);
        assert_eq!(red(ReduceOp::SumSquare, &[]), [1., -2., 3., 4.]); // empty axes: unchanged
        close(
            &red(ReduceOp::LogSumExp, &[1]),
            &[
                (1f32.exp() + (-2f32).exp()).ln(),
                (3f32.exp() + 4f32.exp()).ln(),
            ],
        );
        let nan = tf(&[2], &[1., f32::NAN]);
        assert!(f(&ev(
            Op::Reduce {
                op: ReduceOp::Max,
                axes: vec![0],
                keepdims: false
            },
            &[&nan]
        ))[0]
            .is_nan());
        let am = |last| {
            i(&ev(
                Op::ArgMax {
                    axis: 1,
                    keepdims: false,
                    select_last: last,
                },
                &[&t64(&[1, 4], &[1, 5, 5, 2])],
            ))
        };
        assert_eq!((am(false), am(true)), (vec![1], vec![2]));
    }

    #[test]
    fn elementwise_f32() {
        let x = tf(&[4], &[-2., -0.5, 0.5, f32::NAN]);
        let un = |u| f(&ev(Op::Unary(u), &[&x]));
        let relu = un(UnaryOp::Relu);
        assert!(relu[..3] == [0., 0., 0.5] && relu[3].is_nan());
        close(
            &un(UnaryOp::HardSwish)[..3],
            &[-2. * (1. / 6.), -0.5 * (5. / 12.), 0.5 * (7. / 12.)],
        );
        close(
            &un(UnaryOp::Clip {
                min: (-1.0).into(),
                max: 0.25.into(),
            })[..3],
            &[-1., -0.5, 0.25],
        );
        close(
            &un(UnaryOp::Gelu)[..3],
            &[-0.04550026, -0.15426877, 0.34573123],
        );
        close(
            &un(UnaryOp::Selu {
                alpha: 2.0.into(),
                gamma: 3.0.into(),
            })[..3],
            &[6. * (-2f32).exp_m1(), 6. * (-0.5f32).exp_m1(), 1.5],
        );
        let mx = f(&ev(Op::Binary(BinaryOp::Max), &[&x, &tf(&[], &[0.])]));
        assert!(mx[..3] == [0., 0., 0.5] && mx[3].is_nan());
        close(
            &f(&ev(
                Op::Binary(BinaryOp::Pow),
                &[&tf(&[2], &[2., 9.]), &tf(&[2], &[-1., 0.5])],
            )),
            &[0.5, 3.],
        );
    }

    #[test]
    fn erf_known_values() {
        for (x, want) in [
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (-3.0, -0.9999779095030014),
            (0.01, 0.011283415555849618),
            (1e-10, 1.1283791670955126e-10),
        ] {
            assert!(
                (erf(x) - want).abs() <= 1e-15 * want.abs(),
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
        assert!((erfc(5.0) / 1.537459794428035e-12 - 1.0).abs() < 1e-13);
        assert_eq!((erf(f64::INFINITY), erf(-40.0), erf(0.0)), (1.0, -1.0, 0.0));
        assert!(erf(f64::NAN).is_nan());
    }

    #[test]
    fn matmul_and_gemm() {
        // [2,1,2,2] × [3,2,1] → [2,3,2,1]
        let a = tf(&[2, 1, 2, 2], &[1., 0., 0., 1., 2., 0., 0., 2.]);
        let b = tf(&[3, 2, 1], &[1., 2., 3., 4., 5., 6.]);
        let y = ev(Op::MatMul, &[&a, &b]);
        assert_eq!(y.shape, vec![2, 3, 2, 1]);
        assert_eq!(f(&y), [1., 2., 3., 4., 5., 6., 2., 4., 6., 8., 10., 12.]);
        let v = ev(
            Op::MatMul,
            &[&t64(&[2], &[1, 2]), &t64(&[2, 2], &[1, 2, 3, 4])],
        );
        assert_eq!((v.shape.clone(), i(&v)), (vec![2], vec![7, 10]));
        let op = Op::Gemm {
            alpha: 2.0.into(),
            beta: 0.5.into(),
            trans_a: true,
            trans_b: false,
            relu: false,
        };
        let g = ev(
            op,
            &[
                &tf(&[2, 1], &[1., 2.]),
                &tf(&[2, 2], &[1., 2., 3., 4.]),
                &tf(&[2], &[10., 20.]),
            ],
        );
        assert_eq!(f(&g), [19., 30.]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let bogus = Tensor {
            shape: vec![3],
            data: F32(vec![1.0]),
        };
        assert!(eval_op(&Op::Unary(UnaryOp::Exp), &[&bogus]).is_err());
        assert!(eval_op(&Op::MatMul, &[&tf(&[2], &[1., 2.]), &t64(&[2], &[1, 2])]).is_err());
        assert!(eval_op(
            &Op::Binary(BinaryOp::Mod),
            &[&t64(&[], &[i64::MIN]), &t64(&[], &[-1])]
        )
        .is_ok());
    }

    #[test]
    fn whole_graph() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![2]));
        let c = g.add_const("c", tf(&[2], &[1., 2.]));
        let y = g.add_op("y", Op::Binary(BinaryOp::Mul), &[x, c]).unwrap();
        let z = g.add_op("z", Op::Unary(UnaryOp::Neg), &[y]).unwrap();
        g.add_output("z", z);
        g.add_output("y", y);
        let out = eval_graph(&g, &[tf(&[2], &[3., 4.])]).unwrap();
        assert_eq!((f(&out[0]), f(&out[1])), (vec![-3., -8.], vec![3., 8.]));
        assert!(eval_graph(&g, &[tf(&[3], &[3., 4., 5.])]).is_err());
        assert_eq!(y, ValueId(2));
    }
}
