//! Resize (opsets 10–19) and Upsample, lowered axis by axis — resizing is
//! separable, as ONNX's reference computes it: each resized axis becomes a
//! Gather with compile-time source indices (nearest), or one Gather per
//! filter tap blended with compile-time weights (linear, cubic, antialiased
//! filters, `exclude_outside`), all computed like ONNX's reference from the
//! output coordinates the coordinate transformation mode gives.

use crate::builder::Ctx;
use crate::node::{Node, Result};
use nnc_compiler::ir::{BinaryOp, DType, Op, Tensor, ValueId};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    /// Cubic convolution with coefficient `a`.
    Cubic(f64),
}

/// How one output position of one axis reads the input: the value is
/// `Σ coeff·x[index]`, or the extrapolation value when `outside`.
struct Tap {
    points: Vec<(usize, f64)>,
    outside: bool,
}

struct AxisSpec<'a> {
    coord: &'a str,
    nearest: &'a str,
    mode: Mode,
    antialias: bool,
    exclude_outside: bool,
    scale: f64,
    input: usize,
    output: usize,
    roi: (f64, f64),
}

/// Interpolation weights for the fractional position `ratio` ∈ (0, 1]
/// (`onnx.reference.ops.op_resize`'s coefficient functions).
fn coeffs(n: &Node, a: &AxisSpec, ratio: f64) -> Result<Vec<f64>> {
    let norm = |v: Vec<f64>| {
        let s: f64 = v.iter().sum();
        v.into_iter().map(|x| x / s).collect::<Vec<_>>()
    };
    Ok(match a.mode {
        Mode::Nearest => {
            let hi = if ratio.fract() == 0.0 {
                true
            } else {
                match a.nearest {
                    "round_prefer_floor" => ratio > 0.5,
                    "round_prefer_ceil" => ratio >= 0.5,
                    "floor" => false,
                    "ceil" => true,
                    other => return Err(n.unsupported_attr("nearest_mode", format!("{other:?}"))),
                }
            };
            if hi {
                vec![0.0, 1.0]
            } else {
                vec![1.0, 0.0]
            }
        }
        Mode::Linear if !a.antialias => vec![1.0 - ratio, ratio],
        Mode::Linear => {
            let s = a.scale.min(1.0);
            let start = (-1.0 / s).floor() as i64 + 1;
            let footprint = 2 - 2 * start;
            norm(
                (start..start + footprint)
                    .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                    .collect(),
            )
        }
        Mode::Cubic(ca) if !a.antialias => {
            let r = ratio;
            vec![
                ((ca * (r + 1.0) - 5.0 * ca) * (r + 1.0) + 8.0 * ca) * (r + 1.0) - 4.0 * ca,
                ((ca + 2.0) * r - (ca + 3.0)) * r * r + 1.0,
                ((ca + 2.0) * (1.0 - r) - (ca + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
                ((ca * ((1.0 - r) + 1.0) - 5.0 * ca) * ((1.0 - r) + 1.0) + 8.0 * ca)
                    * ((1.0 - r) + 1.0)
                    - 4.0 * ca,
            ]
        }
        Mode::Cubic(ca) => {
            let s = a.scale.min(1.0);
            let k = |x: f64| {
                let x = x.abs();
                let (x2, x3) = (x * x, x * x * x);
                if x <= 1.0 {
                    (ca + 2.0) * x3 - (ca + 3.0) * x2 + 1.0
                } else if x < 2.0 {
                    ca * x3 - 5.0 * ca * x2 + 8.0 * ca * x - 4.0 * ca
                } else {
                    0.0
                }
            };
            let i_start = (-2.0 / s).floor() as i64 + 1;
            let i_end = 2 - i_start;
            norm(
                (i_start..i_end)
                    .map(|i| k(s * (i as f64 - ratio)))
                    .collect(),
            )
        }
    })
}

/// Source taps of every output position along one axis, following
/// `onnx.reference.ops.op_resize._interpolate_1d_along_axis` (f64 math).
fn taps(n: &Node, a: &AxisSpec) -> Result<Vec<Tap>> {
    let (inp, scale) = (a.input as f64, a.scale);
    let out_w = scale * inp;
    let mut v = Vec::with_capacity(a.output);
    for y in 0..a.output {
        let y = y as f64;
        let mut outside = false;
        let x = match a.coord {
            "align_corners" => {
                if out_w == 1.0 {
                    0.0
                } else {
                    y * (inp - 1.0) / (out_w - 1.0)
                }
            }
            "asymmetric" => y / scale,
            "tf_crop_and_resize" => {
                let (r0, r1) = a.roi;
                let x = if out_w == 1.0 {
                    (r1 - r0) * (inp - 1.0) / 2.0
                } else {
                    y * (r1 - r0) * (inp - 1.0) / (out_w - 1.0)
                };
                let x = x + r0 * (inp - 1.0);
                outside = x < 0.0 || x > inp - 1.0;
                x
            }
            "pytorch_half_pixel" => {
                if out_w == 1.0 {
                    -0.5
                } else {
                    (y + 0.5) / scale - 0.5
                }
            }
            "half_pixel" => (y + 0.5) / scale - 0.5,
            "half_pixel_symmetric" => {
                let adjustment = a.output as f64 / out_w;
                let center = inp / 2.0;
                let offset = center * (1.0 - adjustment);
                offset + (y + 0.5) / scale - 0.5
            }
            other => {
                return Err(
                    n.unsupported_attr("coordinate_transformation_mode", format!("{other:?}"))
                )
            }
        };
        if !x.is_finite() {
            return Err(n.err(format!(
                "coordinate transformation gives {x} for output index {y}"
            )));
        }
        // The pixel left of x is preferred: an exact integer has ratio 1.
        let fl = x.floor();
        let ratio = if x == fl { 1.0 } else { x - fl };
        let mut c = coeffs(n, a, ratio)?;
        let k = c.len() as i64;
        let pad = (k + 1) / 2;
        let xp = x + pad as f64;
        let p = xp.floor();
        let frac = xp - p;
        let off = if k % 2 == 0 {
            if frac == 0.0 {
                -(k / 2)
            } else {
                -(k / 2) + 1
            }
        } else if frac <= 0.5 {
            -((k - 1) / 2)
        } else {
            -((k - 1) / 2) + 1
        };
        let first = p as i64 + off - pad;
        let idx: Vec<i64> = (0..k).map(|i| first + i).collect();
        if a.exclude_outside {
            for (w, &i) in c.iter_mut().zip(&idx) {
                if i < 0 || i >= a.input as i64 {
                    *w = 0.0;
                }
            }
            let s: f64 = c.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            c.iter_mut().for_each(|w| *w /= s);
        }
        let hi = a.input as i64 - 1;
        v.push(Tap {
            points: idx
                .iter()
                .zip(c)
                .map(|(&i, w)| (i.clamp(0, hi) as usize, w))
                .collect(),
            outside,
        });
    }
    Ok(v)
}

pub(super) fn resize(c: &mut Ctx<'_>, n: &Node) -> Result<Vec<ValueId>> {
    let x = c.input(n, 0)?;
    let xs = c.shape(x);
    let r = xs.len();
    if c.ty(x).dtype != DType::F32 {
        return Err(n.err(format!(
            "input of type {} is not supported (only float is supported)",
            c.ty(x).dtype
        )));
    }
    let upsample = n.op == "Upsample";
    let old = upsample || n.opset < 11;
    let mode = match n.attr_string("mode", "nearest")?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        "cubic" if !old => Mode::Cubic(n.attr_float("cubic_coeff_a", -0.75)? as f64),
        other => return Err(n.unsupported_attr("mode", format!("{other:?}"))),
    };
    let coord = if old {
        "asymmetric".to_string()
    } else {
        n.attr_string("coordinate_transformation_mode", "half_pixel")?
    };
    let nearest = if old {
        "floor".to_string()
    } else {
        n.attr_string("nearest_mode", "round_prefer_floor")?
    };
    let antialias = n.attr_bool("antialias", false)?;
    if antialias && mode == Mode::Nearest {
        return Err(n.unsupported_attr("antialias", "1 with mode \"nearest\""));
    }
    let exclude_outside = n.attr_bool("exclude_outside", false)?;
    let extrapolation = n.attr_float("extrapolation_value", 0.0)?;
    let policy = n.attr_string("keep_aspect_ratio_policy", "stretch")?;
    let axes = match n.attr_ints("axes")? {
        Some(a) => n.axes(a, r)?,
        None => (0..r).collect(),
    };
    // Operands: Upsample (X, scales) from opset 9 (attribute before);
    // Resize-10 (X, scales); Resize-11+ (X, roi, scales, sizes).
    let (roi, scales, sizes) = if upsample && n.opset < 9 {
        let s = n
            .attr_floats("scales")?
            .ok_or_else(|| n.err("attribute 'scales' is missing"))?;
        (
            None,
            Some(s.iter().map(|&v| v as f64).collect::<Vec<_>>()),
            None,
        )
    } else if old {
        (None, const_f64s(c, n, 1, "scales")?, None)
    } else {
        (
            const_f64s(c, n, 1, "roi")?,
            const_f64s(c, n, 2, "scales")?,
            c.const_ints(n, 3, "sizes")?,
        )
    };
    let scales = scales.filter(|s| !s.is_empty());
    let sizes = sizes.filter(|s| !s.is_empty());
    let na = axes.len();
    let mut scale = vec![1.0f64; r];
    let mut out = xs.clone();
    match (&scales, &sizes) {
        (Some(s), None) => {
            if s.len() != na {
                return Err(n.err(format!("scales has {} entries for {na} axes", s.len())));
            }
            for (i, &a) in axes.iter().enumerate() {
                if !(s[i] > 0.0 && s[i].is_finite()) {
                    return Err(n.err(format!("scale {} must be positive", s[i])));
                }
                scale[a] = s[i];
                // numpy's astype(int) of the product: truncation.
                out[a] = (s[i] * xs[a] as f64) as usize;
            }
        }
        (None, Some(s)) => {
            if s.len() != na {
                return Err(n.err(format!("sizes has {} entries for {na} axes", s.len())));
            }
            if s.iter().any(|&v| v < 0) {
                return Err(n.err(format!("sizes {s:?} must be non-negative")));
            }
            for (i, &a) in axes.iter().enumerate() {
                out[a] = s[i] as usize;
                scale[a] = s[i] as f64 / xs[a] as f64;
            }
            if policy != "stretch" {
                let pick = axes.iter().map(|&a| scale[a]);
                let s = match policy.as_str() {
                    "not_larger" => pick.fold(f64::INFINITY, f64::min),
                    "not_smaller" => pick.fold(f64::NEG_INFINITY, f64::max),
                    other => {
                        return Err(
                            n.unsupported_attr("keep_aspect_ratio_policy", format!("{other:?}"))
                        )
                    }
                };
                for &a in &axes {
                    scale[a] = s;
                    out[a] = (s * xs[a] as f64 + 0.5) as usize;
                }
            }
        }
        (Some(_), Some(_)) => return Err(n.err("only one of 'scales' and 'sizes' may be given")),
        (None, None) => return Err(n.err("one of 'scales' and 'sizes' is needed")),
    }
    if old && mode == Mode::Nearest {
        // Upsample / Resize-10 nearest: every definition agrees on integer
        // upscaling (out[i] = in[floor(i / s)]); other factors differ.
        if let Some(&s) = scale.iter().find(|&&s| s < 1.0 || s.fract() != 0.0) {
            return Err(n.err(format!(
                "nearest resizing by the non-integer scale {s} is not supported before opset 11"
            )));
        }
    }
    let roi: Vec<(f64, f64)> = match (&roi, coord.as_str()) {
        (Some(v), "tf_crop_and_resize") => {
            let (full, k) = if v.len() == 2 * r {
                (true, r)
            } else if v.len() == 2 * na {
                (false, na)
            } else {
                return Err(n.err(format!("roi has {} entries for rank {r}", v.len())));
            };
            let mut rr = vec![(0.0, 1.0); r];
            for (i, &a) in axes.iter().enumerate() {
                let j = if full { a } else { i };
                rr[a] = (v[j], v[j + k]);
            }
            rr
        }
        (None, "tf_crop_and_resize") => return Err(n.err("tf_crop_and_resize needs input 'roi'")),
        _ => vec![(0.0, 1.0); r],
    };
    let mut y = x;
    for &a in &axes {
        let trivial_roi = roi[a] == (0.0, 1.0) || coord != "tf_crop_and_resize";
        if (scale[a] - 1.0).abs() <= 1e-9 && out[a] == xs[a] && trivial_roi {
            continue;
        }
        if xs[a] == 0 {
            return Err(n.err(format!("cannot resize the empty axis {a}")));
        }
        let spec = AxisSpec {
            coord: &coord,
            nearest: &nearest,
            mode,
            antialias,
            exclude_outside,
            scale: scale[a],
            input: xs[a],
            output: out[a],
            roi: roi[a],
        };
        let t = taps(n, &spec)?;
        y = resize_axis(c, n, y, a, &t, extrapolation)?;
    }
    Ok(vec![y])
}

/// One axis: a Gather per tap position with the taps' indices, blended
/// by their weights (a single Gather when every output reads one input).
fn resize_axis(
    c: &mut Ctx<'_>,
    n: &Node,
    x: ValueId,
    axis: usize,
    taps: &[Tap],
    extrapolation: f32,
) -> Result<ValueId> {
    let r = c.ty(x).rank();
    let len = taps.len();
    let k = taps.first().map_or(0, |t| t.points.len());
    let idx = |c: &mut Ctx<'_>, v: Vec<i64>| -> Result<ValueId> {
        let t = Tensor::i64(vec![len], v).map_err(|e| n.err(e))?;
        Ok(c.constant(n, t))
    };
    // Weights broadcast along the dims after `axis`.
    let mut wshape = vec![len];
    wshape.resize(r - axis, 1);
    let single = taps.iter().all(|t| {
        t.points.iter().filter(|p| p.1 != 0.0).count() <= 1
            && t.points.iter().all(|p| p.1 == 0.0 || p.1 == 1.0)
    });
    let y = if single {
        let i = taps.iter().map(|t| {
            t.points
                .iter()
                .find(|p| p.1 != 0.0)
                .map_or(t.points[0].0, |p| p.0) as i64
        });
        let i = idx(c, i.collect())?;
        c.op(n, Op::Gather { axis }, &[x, i])?
    } else {
        let mut acc: Option<ValueId> = None;
        for j in 0..k {
            if taps.iter().all(|t| t.points[j].1 == 0.0) {
                continue;
            }
            let i = idx(c, taps.iter().map(|t| t.points[j].0 as i64).collect())?;
            let g = c.op(n, Op::Gather { axis }, &[x, i])?;
            let w = Tensor::f32(
                wshape.clone(),
                taps.iter().map(|t| t.points[j].1 as f32).collect(),
            )
            .map_err(|e| n.err(e))?;
            let w = c.constant(n, w);
            let term = c.binary(n, BinaryOp::Mul, g, w)?;
            acc = Some(match acc {
                None => term,
                Some(a) => c.binary(n, BinaryOp::Add, a, term)?,
            });
        }
        match acc {
            Some(a) => a,
            None => {
                let z = c.scalar(n, DType::F32, 0.0);
                let mut shape = c.shape(x);
                shape[axis] = len;
                c.op(n, Op::Expand { shape }, &[z])?
            }
        }
    };
    if !taps.iter().any(|t| t.outside) {
        return Ok(y);
    }
    let mask = Tensor::bool(wshape.clone(), taps.iter().map(|t| t.outside).collect())
        .map_err(|e| n.err(e))?;
    let mask = c.constant(n, mask);
    let e = c.scalar(n, DType::F32, extrapolation as f64);
    c.op(n, Op::Where, &[mask, e, y])
}

/// A constant float (or integer) input as f64s.
fn const_f64s(c: &Ctx<'_>, n: &Node, i: usize, what: &str) -> Result<Option<Vec<f64>>> {
    let Some(t) = c.const_input(n, i, what)? else {
        return Ok(None);
    };
    Ok(Some(match t.as_f32() {
        Some(v) => v.iter().map(|&x| x as f64).collect(),
        None => t
            .to_i64_vec()
            .ok_or_else(|| n.err(format!("input '{what}' must be numeric")))?
            .into_iter()
            .map(|x| x as f64)
            .collect(),
    }))
}
