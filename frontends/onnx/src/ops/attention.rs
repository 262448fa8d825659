//! ONNX Attention (opsets 23–25) onto the fused IR op [`Op::Attention`]:
//! 3-D inputs are split into heads, the keys transposed, boolean masks made
//! additive, and the structural masks (causal with an offset, sliding
//! window, `nonpad_kv_seqlen` padding) built as compile-time constant biases.
//! Rows left without any visible key produce zeros, as the spec says.

use crate::builder::Ctx;
use crate::node::{Node, Result};
use nnc_compiler::ir::{BinaryOp, DType, Op, PadMode, ReduceOp, SliceDim, Tensor, ValueId};

const NEG_INF: f32 = f32::NEG_INFINITY;

pub(super) fn attention(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    for (i, what) in [(4, "past_key"), (5, "past_value")] {
        if c.opt_input(n, i)?.is_some() {
            return Err(n.err(format!(
                "input '{what}' (a KV cache updated inside the op) is not supported"
            )));
        }
    }
    for (i, what) in [
        (1, "present_key"),
        (2, "present_value"),
        (3, "qk_matmul_output"),
    ] {
        if !n.output_name(i).is_empty() {
            return Err(n.err(format!("output '{what}' is not supported")));
        }
    }
    let (q, k, v) = (c.input(n, 0)?, c.input(n, 1)?, c.input(n, 2)?);
    for (x, what) in [(q, "Q"), (k, "K"), (v, "V")] {
        if c.ty(x).dtype != DType::F32 {
            return Err(n.err(format!(
                "{what} of type {} is not supported (only float is supported)",
                c.ty(x).dtype
            )));
        }
    }
    let rank = c.ty(q).rank();
    if c.ty(k).rank() != rank || c.ty(v).rank() != rank || !(rank == 3 || rank == 4) {
        return Err(n.err(format!(
            "Q, K, V must all be 3-D or all 4-D, got shapes {:?}, {:?}, {:?}",
            c.shape(q),
            c.shape(k),
            c.shape(v)
        )));
    }
    let (q, k, v) = if rank == 3 {
        let heads = |name: &str| -> Result<usize> {
            match n.attr_int_opt(name)? {
                Some(h) if h > 0 => Ok(h as usize),
                Some(h) => Err(n.err(format!("attribute '{name}' = {h} must be positive"))),
                None => Err(n.err(format!("3-D inputs need attribute '{name}'"))),
            }
        };
        let (hq, hkv) = (heads("q_num_heads")?, heads("kv_num_heads")?);
        (
            split_heads(c, n, q, hq, "Q")?,
            split_heads(c, n, k, hkv, "K")?,
            split_heads(c, n, v, hkv, "V")?,
        )
    } else {
        (q, k, v)
    };
    let (qs, ks, vs) = (c.shape(q), c.shape(k), c.shape(v));
    let (b, hq, lq, d) = (qs[0], qs[1], qs[2], qs[3]);
    let (hkv, lk) = (ks[1], ks[2]);
    if ks[0] != b || vs[0] != b || ks[3] != d || vs[1] != hkv || vs[2] != lk {
        return Err(n.err(format!(
            "Q {qs:?}, K {ks:?} and V {vs:?} disagree (expected [B, H, L, D] with equal B, K/V heads and lengths, and equal D for Q and K)"
        )));
    }
    if hkv == 0 || !hq.is_multiple_of(hkv) {
        return Err(n.err(format!(
            "{hq} query heads are not a multiple of {hkv} key/value heads"
        )));
    }
    let scale = match n.attr_float_opt("scale")? {
        Some(s) => s,
        None => (1.0 / (d as f64).sqrt()) as f32,
    };
    let softcap = n.attr_float("softcap", 0.0)?;
    if softcap < 0.0 {
        return Err(n.err(format!("attribute 'softcap' = {softcap} must be >= 0")));
    }
    let causal = n.attr_bool("is_causal", false)?;
    let window = |name: &str| -> Result<Option<usize>> {
        match n.attr_int(name, -1)? {
            -1 => Ok(None),
            w if w >= 0 => Ok(Some(w as usize)),
            w => Err(n.err(format!("attribute '{name}' = {w} must be -1 or >= 0"))),
        }
    };
    let (left, right) = (window("left_window_size")?, window("right_window_size")?);
    let nonpad = match c.const_ints(n, 6, "nonpad_kv_seqlen")? {
        None => None,
        Some(v) if v.len() == b => Some(v),
        Some(v) => {
            return Err(n.err(format!(
                "input 'nonpad_kv_seqlen' has {} entries for batch size {b}",
                v.len()
            )))
        }
    };

    // The user mask as an additive f32 bias, padded with -inf up to Lk.
    let mut bias = match c.opt_input(n, 3)? {
        None => None,
        Some(m) => {
            let m = match c.ty(m).dtype {
                DType::Bool => {
                    let zero = c.scalar(n, DType::F32, 0.0);
                    let ninf = c.scalar(n, DType::F32, NEG_INF as f64);
                    c.op(n, Op::Where, &[m, zero, ninf])?
                }
                DType::F32 => m,
                t => {
                    return Err(n.err(format!(
                        "attn_mask of type {t} is not supported (bool or float are)"
                    )))
                }
            };
            let ms = c.shape(m);
            let last = ms.last().copied().unwrap_or(1);
            let m = if ms.is_empty() || last >= lk {
                m
            } else {
                let r = ms.len();
                let mut pads = vec![0i64; 2 * r];
                pads[2 * r - 1] = (lk - last) as i64;
                c.op(
                    n,
                    Op::Pad {
                        pads,
                        mode: PadMode::Constant,
                        value: NEG_INF.into(),
                    },
                    &[m],
                )?
            };
            Some(m)
        }
    };
    // Structural bias: causal frontier, window and padding, per batch entry
    // when nonpad_kv_seqlen gives per-batch offsets.
    let fused_causal = causal
        && bias.is_none()
        && nonpad.is_none()
        && left.is_none()
        && right.is_none()
        && lq == lk;
    if (causal && !fused_causal) || left.is_some() || right.is_some() || nonpad.is_some() {
        let nb = if nonpad.is_some() { b } else { 1 };
        let mut s = Vec::with_capacity(nb * lq * lk);
        for bi in 0..nb {
            let (offset, valid) = match &nonpad {
                Some(v) => (v[bi] - lq as i64, v[bi]),
                None => (0, lk as i64),
            };
            for i in 0..lq as i64 {
                for j in 0..lk as i64 {
                    let p = i + offset;
                    let ok = (!causal || j <= p)
                        && left.is_none_or(|w| p - j <= w as i64)
                        && right.is_none_or(|w| j - p <= w as i64)
                        && j < valid;
                    s.push(if ok { 0.0 } else { NEG_INF });
                }
            }
        }
        let shape = if nonpad.is_some() {
            vec![nb, 1, lq, lk]
        } else {
            vec![lq, lk]
        };
        let t = Tensor::f32(shape, s).map_err(|e| n.err(e))?;
        let sv = c.constant(n, t);
        bias = Some(match bias {
            None => sv,
            Some(m) => c.binary(n, BinaryOp::Add, m, sv)?,
        });
    }
    // Rows whose bias is -inf everywhere give 0 (not NaN): detect them on the
    // bias, make their bias finite, and zero their output.
    let dead = match bias {
        None => None,
        Some(m) => {
            let r = c.ty(m).rank();
            let mx = c.op(
                n,
                Op::Reduce {
                    op: ReduceOp::Max,
                    axes: vec![r - 1],
                    keepdims: true,
                },
                &[m],
            )?;
            let ninf = c.scalar(n, DType::F32, NEG_INF as f64);
            let dead = c.binary(n, BinaryOp::Equal, mx, ninf)?;
            let none_dead = c
                .as_const(dead)
                .is_some_and(|t| t.as_bool().is_some_and(|v| v.iter().all(|&x| !x)));
            if none_dead {
                None
            } else {
                let zero = c.scalar(n, DType::F32, 0.0);
                bias = Some(c.op(n, Op::Where, &[dead, zero, m])?);
                Some(dead)
            }
        }
    };
    let kt = c.op(
        n,
        Op::Transpose {
            perm: vec![0, 1, 3, 2],
        },
        &[k],
    )?;
    let mut args = vec![q, kt, v];
    args.extend(bias);
    let op = Op::Attention {
        scale: scale.into(),
        causal: fused_causal,
        softcap: softcap.into(),
        views: None,
    };
    let mut y = c.op(n, op, &args)?;
    if let Some(dead) = dead {
        let zero = c.scalar(n, DType::F32, 0.0);
        y = c.op(n, Op::Where, &[dead, zero, y])?;
    }
    if rank == 3 {
        let ys = c.shape(y);
        let t = c.op(
            n,
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[y],
        )?;
        y = c.reshape(n, t, vec![ys[0], ys[2], ys[1] * ys[3]])?;
    }
    Ok(vec![y])
}

/// [B, L, H·D] → [B, H, L, D].
fn split_heads(c: &mut Ctx<'_>, n: &Node, x: ValueId, heads: usize, what: &str) -> Result<ValueId> {
    let s = c.shape(x);
    if !s[2].is_multiple_of(heads) {
        return Err(n.err(format!(
            "{what} hidden size {} is not a multiple of {heads} heads",
            s[2]
        )));
    }
    let r = c.reshape(n, x, vec![s[0], s[1], heads, s[2] / heads])?;
    c.op(
        n,
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        &[r],
    )
}

/// RotaryEmbedding (opset 23): rotates the first `rotary_embedding_dim`
/// features of each head by the cos/sin caches (gathered by position ids),
/// as halves or interleaved pairs.
pub(super) fn rotary_embedding(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let (cos, sin) = (c.input(n, 1)?, c.input(n, 2)?);
    let pos = c.opt_input(n, 3)?;
    let xs = c.shape(x);
    if c.ty(x).dtype != DType::F32 || !(xs.len() == 3 || xs.len() == 4) {
        return Err(n.err(format!(
            "input {xs:?} of type {} is not supported (3-D or 4-D float is)",
            c.ty(x).dtype
        )));
    }
    // Work on [B, H, S, D] (4-D) or [B, S, H, D] (3-D split into heads).
    let (x4, b, s) = if xs.len() == 4 {
        (x, xs[0], xs[2])
    } else {
        let h = n.attr_int("num_heads", 0)?;
        if h <= 0 || !xs[2].is_multiple_of(h as usize) {
            return Err(n.err(format!(
                "3-D input {xs:?} needs num_heads dividing its last dim"
            )));
        }
        let h = h as usize;
        (
            c.reshape(n, x, vec![xs[0], xs[1], h, xs[2] / h])?,
            xs[0],
            xs[1],
        )
    };
    let x4s = c.shape(x4);
    let d = x4s[3];
    let rot = match n.attr_int("rotary_embedding_dim", 0)? {
        0 => d,
        r if r > 0 && r as usize <= d && r % 2 == 0 => r as usize,
        r => {
            return Err(n.err(format!(
                "rotary_embedding_dim {r} does not fit head size {d}"
            )))
        }
    };
    let half = rot / 2;
    let interleaved = n.attr_bool("interleaved", false)?;
    let caches = [cos, sin].map(|t| -> Result<ValueId> {
        let t = match pos {
            Some(p) => c.op(n, Op::Gather { axis: 0 }, &[t, p])?,
            None => t,
        };
        if c.shape(t) != [b, s, half] {
            return Err(n.err(format!(
                "cos/sin cache gives shape {:?}, expected [{b}, {s}, {half}]",
                c.shape(t)
            )));
        }
        let shape = if xs.len() == 4 {
            vec![b, 1, s, half]
        } else {
            vec![b, s, 1, half]
        };
        c.reshape(n, t, shape)
    });
    let [cos, sin] = caches;
    let (cos, sin) = (cos?, sin?);
    let last = |c: &mut Ctx<'_>, v: ValueId, start: usize, step: i64, count: usize| {
        let vs = c.shape(v);
        let mut dims: Vec<SliceDim> = vs
            .iter()
            .map(|&len| SliceDim {
                start: 0,
                step: 1,
                count: len,
            })
            .collect();
        dims[3] = SliceDim { start, step, count };
        c.op(n, Op::Slice { dims }, &[v])
    };
    let (x1, x2) = if interleaved {
        (last(c, x4, 0, 2, half)?, last(c, x4, 1, 2, half)?)
    } else {
        (last(c, x4, 0, 1, half)?, last(c, x4, half, 1, half)?)
    };
    let cx1 = c.binary(n, BinaryOp::Mul, cos, x1)?;
    let sx2 = c.binary(n, BinaryOp::Mul, sin, x2)?;
    let real = c.binary(n, BinaryOp::Sub, cx1, sx2)?;
    let sx1 = c.binary(n, BinaryOp::Mul, sin, x1)?;
    let cx2 = c.binary(n, BinaryOp::Mul, cos, x2)?;
    let imag = c.binary(n, BinaryOp::Add, sx1, cx2)?;
    let mut rs = c.shape(real);
    let rotated = if interleaved {
        rs.push(1);
        let r5 = c.reshape(n, real, rs.clone())?;
        let i5 = c.reshape(n, imag, rs)?;
        let cat = c.op(n, Op::Concat { axis: 4 }, &[r5, i5])?;
        let mut flat = x4s.clone();
        flat[3] = rot;
        c.reshape(n, cat, flat)?
    } else {
        c.op(n, Op::Concat { axis: 3 }, &[real, imag])?
    };
    let y = if rot < d {
        let pass = last(c, x4, rot, 1, d - rot)?;
        c.op(n, Op::Concat { axis: 3 }, &[rotated, pass])?
    } else {
        rotated
    };
    Ok(vec![c.reshape(n, y, xs)?])
}
