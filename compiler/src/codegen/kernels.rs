//! The one place that maps an IR op to a kernel: support check, scratch
//! size, and emission. Adding an op to codegen means adding an arm here and,
//! if it is a new family, a module beside this one.

use super::attention::{self, AttnGeom};
use super::conv::{self, ConvGeom};
use super::dwconv;
use super::elementwise::{self, Expr, Layout};
use super::gemm::{self, Bias, GemmSpec, Strides};
use super::kb::Kb;
use super::movement;
use super::pool::{self, PoolGeom};
use super::reduce::{self, Affine, Orc};
use super::typed;
use crate::ir::{contiguous_strides, AttnViews, ConvAlgo, View};
use crate::ir::{
    BinaryOp, DType, FusedExpr, Graph, Op, PadMode, PoolKind, TensorType, UnaryOp, ValueId,
    ValueKind,
};
use cranelift_codegen::ir::types::I32;
use cranelift_codegen::ir::{InstBuilder, Value};

/// The op (without the optimizer's GEMM tiling, see [`gemm_tile`]) and its argument types.
fn op_and_args(g: &Graph, id: ValueId) -> (&Op, Vec<&TensorType>) {
    match &g.value(id).kind {
        ValueKind::Op { op, args } => (op.base(), args.iter().map(|&a| g.ty(a)).collect()),
        _ => unreachable!("kernels are only built for op values"),
    }
}

/// The GEMM blocking the optimizer chose for this MatMul/Gemm, if any.
fn gemm_tile(g: &Graph, id: ValueId) -> Option<crate::ir::GemmTile> {
    match &g.value(id).kind {
        ValueKind::Op {
            op: Op::Tiled { tile, .. },
            ..
        } => Some(*tile),
        _ => None,
    }
}

fn float_binary(b: BinaryOp) -> bool {
    use BinaryOp::*;
    matches!(b, Add | Sub | Mul | Div | Pow | Max | Min)
}

/// Elementwise work outside the f32 vector kernels: int64/bool data, casts,
/// `where`, and f32 fmod.
fn use_typed(op: &Op, args: &[&TensorType], out: &TensorType) -> bool {
    let all_f32 = args.iter().all(|t| t.dtype == DType::F32) && out.dtype == DType::F32;
    let vector = all_f32
        && match op {
            Op::Unary(u) => *u != UnaryOp::Not,
            Op::Binary(b) => float_binary(*b),
            _ => false,
        };
    let types: Vec<DType> = args.iter().map(|t| t.dtype).collect();
    !vector && typed::supports(op, &types, out.dtype)
}

/// Whether codegen can build this value's kernel; the error names what is
/// missing so the CLI can refuse by name.
pub fn check(g: &Graph, id: ValueId) -> Result<(), String> {
    let (op, args) = op_and_args(g, id);
    let out = g.ty(id);
    let all_f32 = args.iter().all(|t| t.dtype == DType::F32) && out.dtype == DType::F32;
    let need_f32 = |what: &str| -> Result<(), String> {
        if all_f32 {
            Ok(())
        } else {
            Err(format!(
                "{what} on non-f32 data computed at run time is not supported"
            ))
        }
    };
    if use_typed(op, &args, out) {
        return Ok(());
    }
    match op {
        Op::Unary(UnaryOp::Not) => Err("'not' on run-time bool data is not supported".into()),
        Op::Unary(u) => need_f32(u.name()),
        Op::Binary(b) if float_binary(*b) => need_f32(b.name()),
        Op::Binary(b) => Err(format!(
            "'{}' on data computed at run time is not supported",
            b.name()
        )),
        Op::ArgMax { .. } if args[0].dtype == DType::F32 => Ok(()),
        Op::Where | Op::Cast { .. } | Op::ArgMax { .. } => Err(format!(
            "'{}' on {} data computed at run time is not supported",
            op.name(),
            args[0].dtype
        )),
        Op::MatMul | Op::Gemm { .. } => need_f32(op.name()),
        Op::Tiled { .. } => unreachable!("op_and_args strips the tiling"),
        Op::ToBlocked { .. } | Op::FromBlocked => need_f32(op.name()),
        Op::ConvBlocked { .. }
            if g.as_const(value_arg(g, id, 1)).is_none()
                || (args.len() > 2 && g.as_const(value_arg(g, id, 2)).is_none()) =>
        {
            Err(
                "conv_blocked needs constant filters and bias (they are packed at compile time)"
                    .into(),
            )
        }
        Op::ConvBlocked { .. } if args[0].shape[4] != super::x86::dconv::CB => Err(format!(
            "conv_blocked has a kernel for {}-channel blocks only",
            super::x86::dconv::CB
        )),
        Op::ConvBlocked { .. } => Ok(()),
        Op::ConvImpl {
            group,
            algo: ConvAlgo::Depthwise,
            ..
        } if !(args[0].shape[1] == *group && args[1].shape[0] == *group) => {
            Err("depthwise algorithm on a conv that is not depthwise".into())
        }
        Op::ConvImpl {
            algo: ConvAlgo::Depthwise,
            ..
        } if args.len() == 4 => Err("depthwise conv with a fused residual".into()),
        Op::ConvImpl {
            window,
            group,
            algo: ConvAlgo::Winograd { .. },
            pool,
            ..
        } if window.spatial_rank() != 2
            || !super::winograd::applicable(&conv_impl_geom(
                window,
                *group,
                pool.as_deref(),
                &args,
                out,
            ))
            || g.as_const(value_arg(g, id, 1)).is_none() =>
        {
            Err(
                "winograd needs a 2-D 3×3 stride-1 single-group conv with constant weights \
                 (and at most a fused 2×2 stride-2 max pool)"
                    .into(),
            )
        }
        Op::ConvImpl {
            window,
            algo,
            pool: Some(_),
            ..
        } if !matches!(algo, ConvAlgo::Im2col { .. } | ConvAlgo::Winograd { .. })
            || window.spatial_rank() != 2
            || args.len() == 4 =>
        {
            Err("fused pool needs a 2-D im2col or winograd conv without residual".into())
        }
        Op::Conv { window, .. } | Op::ConvImpl { window, .. } | Op::Pool { window, .. } => {
            need_f32(op.name())?;
            if window.spatial_rank() > 2 {
                return Err(format!(
                    "{} with {} spatial dims is not supported (1-D and 2-D are)",
                    op.name(),
                    window.spatial_rank()
                ));
            }
            Ok(())
        }
        Op::Softmax { .. } | Op::InstanceNorm { .. } => need_f32(op.name()),
        Op::LayerNorm { axis, .. } => {
            need_f32("layer_norm")?;
            let n: usize = args[0].shape[*axis..].iter().product();
            if args[1..].iter().any(|t| t.numel() != n) {
                return Err(
                    "layer_norm with broadcast scale/bias computed at run time is not supported"
                        .into(),
                );
            }
            Ok(())
        }
        Op::Reduce { axes, .. } => {
            need_f32("reduce")?;
            if !axes.is_empty()
                && axes.iter().max().unwrap() - axes.iter().min().unwrap() + 1 != axes.len()
            {
                return Err(format!(
                    "reduce over non-adjacent axes {axes:?} is not supported"
                ));
            }
            Ok(())
        }
        Op::Pad { mode, .. } => {
            if *mode != PadMode::Constant {
                return Err(format!("pad mode {mode:?} is not supported"));
            }
            if out.dtype != DType::F32 {
                return Err("pad on non-f32 run-time data is not supported".into());
            }
            Ok(())
        }
        Op::Reshape { .. } | Op::Transpose { .. } | Op::Concat { .. } | Op::Slice { .. } => Ok(()),
        Op::Gather { .. } | Op::Expand { .. } | Op::Tile { .. } => Ok(()),
        Op::GatherElements { .. } => Ok(()),
        Op::Attention { .. } => need_f32("attention"),
        Op::Fused { .. } => need_f32("fused"),
    }
}

fn conv_geom(
    window: &crate::ir::Window,
    group: usize,
    x: &TensorType,
    w: &TensorType,
    y: &TensorType,
) -> ConvGeom {
    let two = window.spatial_rank() == 2;
    let (h, kh, oh) = if two {
        (x.shape[2], w.shape[2], y.shape[2])
    } else {
        (1, 1, 1)
    };
    let last = x.rank() - 1;
    let sp = |v: &[usize], d: usize| -> [usize; 2] {
        if two {
            [v[0], v[1]]
        } else {
            [d, v[0]]
        }
    };
    ConvGeom {
        n: x.shape[0],
        c: x.shape[1],
        h,
        w: x.shape[last],
        m: w.shape[0],
        kh,
        kw: w.shape[last],
        oh,
        ow: y.shape[last],
        stride: sp(&window.strides, 1),
        dil: sp(&window.dilations, 1),
        pad: sp(&window.pads[..window.spatial_rank()], 0),
        group,
        chunk_rows: usize::MAX, // whole output: one im2col block
        accumulate: false,
        pool: None,
    }
}

/// The geometry of a conv_impl: with a fused pool, of the conv's own
/// (unpooled) output, the pool window over it.
fn conv_impl_geom(
    window: &crate::ir::Window,
    group: usize,
    pool: Option<&crate::ir::Window>,
    args: &[&TensorType],
    y: &TensorType,
) -> ConvGeom {
    let Some(pw) = pool else {
        return conv_geom(window, group, args[0], args[1], y);
    };
    let conv = Op::Conv {
        window: window.clone(),
        group,
    };
    let cy = conv.infer(&args[..2]).expect("checked conv");
    let mut g = conv_geom(window, group, args[0], args[1], &cy);
    g.pool = Some(window_pool(pw, &cy, y, PoolKind::Max));
    g
}

/// Temporary bytes the kernel needs beside its result.
pub fn scratch_bytes(g: &Graph, id: ValueId) -> usize {
    let (op, args) = op_and_args(g, id);
    match op {
        Op::Conv { window, group } => {
            conv_geom(window, *group, args[0], args[1], g.ty(id)).total_scratch_bytes()
        }
        Op::ConvImpl {
            window,
            group,
            algo,
            pool,
            ..
        } => match algo {
            ConvAlgo::Im2col { chunk_rows } => {
                let mut geom = conv_impl_geom(window, *group, pool.as_deref(), &args, g.ty(id));
                geom.chunk_rows = *chunk_rows;
                geom.total_scratch_bytes()
            }
            ConvAlgo::Winograd { tile_rows } => {
                let geom = conv_impl_geom(window, *group, pool.as_deref(), &args, g.ty(id));
                super::winograd::Wino::new(&geom, *tile_rows).total_scratch_bytes()
            }
            ConvAlgo::Pointwise | ConvAlgo::Depthwise => 0,
        },
        Op::Gemm { trans_b: true, .. } => args[1].bytes(),
        Op::Attention { .. } => attn_geom(op, &args, g.ty(id)).scratch_bytes(),
        _ => 0,
    }
}

fn window_pool(
    window: &crate::ir::Window,
    x: &TensorType,
    y: &TensorType,
    kind: PoolKind,
) -> PoolGeom {
    let two = window.spatial_rank() == 2;
    let r = window.spatial_rank();
    let last = x.rank() - 1;
    let sp = |v: &[usize], d: usize| -> [usize; 2] {
        if two {
            [v[0], v[1]]
        } else {
            [d, v[0]]
        }
    };
    PoolGeom {
        planes: x.shape[0] * x.shape[1],
        h: if two { x.shape[2] } else { 1 },
        w: x.shape[last],
        oh: if two { y.shape[2] } else { 1 },
        ow: y.shape[last],
        k: sp(&window.kernel, 1),
        stride: sp(&window.strides, 1),
        dil: sp(&window.dilations, 1),
        pad_begin: sp(&window.pads[..r], 0),
        pad_end: sp(&window.pads[r..], 0),
        max: kind == PoolKind::Max,
        count_include_pad: matches!(
            kind,
            PoolKind::Avg {
                count_include_pad: true
            }
        ),
    }
}

/// Emits the kernel body; returns the i32 status value (0 = ok).
pub fn emit(
    k: &mut Kb,
    g: &Graph,
    id: ValueId,
    a: &[Value],
    out: Value,
    scratch: Option<Value>,
) -> Value {
    let (op, args) = op_and_args(g, id);
    let y = g.ty(id);
    let esize = y.dtype.size();
    let zero = k.b.ins().iconst(I32, 0);
    if use_typed(op, &args, y) {
        let shapes: Vec<Vec<usize>> = args.iter().map(|t| t.shape.clone()).collect();
        let types: Vec<DType> = args.iter().map(|t| t.dtype).collect();
        typed::emit(k, op, &shapes, &types, &y.shape, y.dtype, a, out);
        return zero;
    }
    match op {
        Op::Unary(u) => {
            let l = Layout::new(&y.shape, &[args[0].shape.clone()]);
            elementwise::emit(k, &Expr::unary(*u, Expr::Input(0)), &l, a, out);
        }
        Op::Binary(b) => {
            let l = Layout::new(&y.shape, &[args[0].shape.clone(), args[1].shape.clone()]);
            // A constant scalar exponent becomes part of the expression (x², √x …).
            let rhs = match (b, g.as_const(value_arg(g, id, 1))) {
                (BinaryOp::Pow, Some(t)) if t.numel() == 1 => Expr::Const(t.as_f32().unwrap()[0]),
                _ => Expr::Input(1),
            };
            elementwise::emit(k, &Expr::binary(*b, Expr::Input(0), rhs), &l, a, out);
        }
        Op::Tiled { .. } => unreachable!("op_and_args strips the tiling"),
        Op::ToBlocked { cb } => super::blocked::to_blocked(k, &args[0].shape, *cb, a[0], out),
        Op::FromBlocked => super::blocked::from_blocked(k, &args[0].shape, a[0], out),
        Op::ConvBlocked { window, relu, tile } => {
            let spec = super::blocked::spec(
                window,
                &args[0].shape,
                &args[1].shape,
                &y.shape,
                *relu,
                args.len() == 4,
                *tile,
            );
            let w_id = value_arg(g, id, 1);
            let w = g
                .as_const(w_id)
                .and_then(|t| t.as_f32())
                .expect("checked: constant filters");
            let b_id = (args.len() > 2).then(|| value_arg(g, id, 2));
            let bias = b_id.map(|b| {
                g.as_const(b)
                    .and_then(|t| t.as_f32())
                    .expect("checked: constant bias")
            });
            let key = format!("v{} v{:?}", w_id.index(), b_id.map(|b| b.index()));
            let done = super::blocked::emit(
                k,
                &spec,
                y.shape[0],
                a[0],
                w,
                bias,
                &key,
                a.get(3).copied(),
                out,
            );
            assert!(
                done,
                "conv_blocked: no assembled AVX-512 kernel for {spec:?} (the optimizer offers \
                 this op only where it assembles)"
            );
        }
        Op::MatMul => {
            let cb = const_b(g, id, false);
            let tile = gemm_tile(g, id);
            matmul(k, args[0], args[1], y, a[0], a[1], out, cb.as_ref(), tile)
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
            relu,
        } => {
            let (sa, sb) = (&args[0].shape, &args[1].shape);
            let (m, kk) = if *trans_a {
                (sa[1], sa[0])
            } else {
                (sa[0], sa[1])
            };
            let n = y.shape[1];
            let mut bias = args.get(2).map(|c| {
                let bs = broadcast_strides(&c.shape, &[m, n]);
                Bias {
                    strides: Strides {
                        row: bs[0],
                        col: bs[1],
                    },
                    beta: beta.get(),
                }
            });
            // C and a residual R: the kernel takes one addend, so first
            // out = beta·C + R in one elementwise pass, then out += A·B
            // (the emitter allows bias == C).
            let mut bias_arg = a.get(2).copied();
            if args.len() == 4 {
                let l = Layout::new(&y.shape, &[args[2].shape.clone(), args[3].shape.clone()]);
                let e = match beta.get() {
                    // beta = 0 ignores C (also its NaNs), as without R
                    0.0 => Expr::Input(1),
                    1.0 => Expr::binary(BinaryOp::Add, Expr::Input(0), Expr::Input(1)),
                    b => Expr::binary(
                        BinaryOp::Add,
                        Expr::binary(BinaryOp::Mul, Expr::Input(0), Expr::Const(b)),
                        Expr::Input(1),
                    ),
                };
                elementwise::emit(k, &e, &l, &a[2..4], out);
                bias = Some(Bias {
                    strides: Strides { row: n, col: 1 },
                    beta: 1.0,
                });
                bias_arg = Some(out);
            }
            let spec = GemmSpec {
                tile: gemm_tile(g, id),
                m,
                n,
                k: kk,
                a: if *trans_a {
                    Strides { row: 1, col: m }
                } else {
                    Strides { row: kk, col: 1 }
                },
                b_row: n,
                c_row: n,
                alpha: alpha.get(),
                bias: if beta.get() == 0.0 && args.len() < 4 {
                    None
                } else {
                    bias
                },
                relu: *relu,
            };
            let bias_ptr = if spec.bias.is_some() { bias_arg } else { None };
            // Constant B: the assembled kernel reads it pre-packed (the
            // transpose happens at compile time).
            let done = const_b(g, id, *trans_b)
                .as_ref()
                .is_some_and(|cb| gemm::emit_const_b(k, &spec, a[0], cb, out, bias_ptr));
            if !done {
                // An empty B (K = 0 or N = 0) is never read, and the planner
                // gives a zero-byte scratch request no buffer: skip the transpose.
                let bptr = if *trans_b && args[1].numel() > 0 {
                    // B is stored [N, K]: transpose into scratch so rows are contiguous.
                    let s = scratch.expect("scratch for transposed B");
                    movement::transpose(k, sb, &[1, 0], a[1], s, 4);
                    s
                } else {
                    a[1]
                };
                gemm::emit(k, &spec, a[0], bptr, out, bias_ptr);
            }
        }
        Op::Conv { window, group } => {
            let geom = conv_geom(window, *group, args[0], args[1], y);
            let (x, w, b) = (a[0], a[1], a.get(2).copied());
            conv::emit(k, &geom, x, w, b, out, scratch, false, None);
        }
        Op::Pool { kind, window } => {
            pool::emit(k, &window_pool(window, args[0], y, *kind), a[0], out)
        }
        Op::Softmax { axis, log } => {
            reduce::softmax(k, Orc::new(&y.shape, *axis, *axis + 1), *log, a[0], out)
        }
        Op::LayerNorm { axis, epsilon } => {
            let rows: usize = y.shape[..*axis].iter().product();
            let n: usize = y.shape[*axis..].iter().product();
            reduce::normalize(
                k,
                rows,
                n,
                epsilon.get(),
                Affine::PerElement,
                a[0],
                a[1],
                a.get(2).copied(),
                out,
            );
        }
        Op::InstanceNorm { epsilon } => {
            let rows = y.shape[0] * y.shape[1];
            let n: usize = y.shape[2..].iter().product();
            reduce::normalize(
                k,
                rows,
                n,
                epsilon.get(),
                Affine::PerRow {
                    channels: y.shape[1],
                },
                a[0],
                a[1],
                Some(a[2]),
                out,
            );
        }
        Op::Reduce { op, axes, .. } => {
            if axes.is_empty() {
                movement::copy(k, out, a[0], y.numel(), 4);
            } else {
                let lo = *axes.iter().min().unwrap();
                let hi = *axes.iter().max().unwrap() + 1;
                reduce::reduce(k, *op, Orc::new(&args[0].shape, lo, hi), a[0], out);
            }
        }
        Op::Reshape { .. } => movement::copy(k, out, a[0], y.numel(), esize),
        Op::Transpose { perm } => movement::transpose(k, &args[0].shape, perm, a[0], out, esize),
        Op::Concat { axis } => {
            let shapes: Vec<Vec<usize>> = args.iter().map(|t| t.shape.clone()).collect();
            movement::concat(k, &shapes, *axis, a, out, esize);
        }
        Op::Slice { dims } => {
            let st = args[0].strides();
            let base: i64 = dims
                .iter()
                .zip(&st)
                .map(|(d, &s)| d.start as i64 * s as i64)
                .sum();
            let src = k.offset(a[0], base * esize as i64);
            let counts: Vec<usize> = dims.iter().map(|d| d.count).collect();
            let strides: Vec<i64> = dims
                .iter()
                .zip(&st)
                .map(|(d, &s)| d.step * s as i64)
                .collect();
            movement::strided_copy(
                k,
                &counts,
                &strides,
                src,
                &movement::dense(&counts),
                out,
                esize,
            );
        }
        Op::Expand { shape } => {
            let bs: Vec<i64> = broadcast_strides(&args[0].shape, shape)
                .iter()
                .map(|&s| s as i64)
                .collect();
            movement::strided_copy(k, shape, &bs, a[0], &movement::dense(shape), out, esize);
        }
        Op::Tile { repeats } => movement::tile(k, &args[0].shape, repeats, a[0], out, esize),
        Op::Pad { pads, value, .. } => {
            movement::fill_f32(k, out, y.numel(), value.get());
            let r = y.rank();
            let ins = &args[0].shape;
            let (mut src_off, mut dst_off) = (0i64, 0i64);
            let (sst, dst_st) = (args[0].strides(), y.strides());
            let mut counts = Vec::with_capacity(r);
            for d in 0..r {
                let (pb, pe) = (pads[d], pads[d + r]);
                let in_start = (-pb).max(0);
                let out_start = pb.max(0);
                let cnt = ins[d] as i64 - in_start - (-pe).max(0);
                counts.push(cnt.max(0) as usize);
                src_off += in_start * sst[d] as i64;
                dst_off += out_start * dst_st[d] as i64;
            }
            if counts.iter().all(|&c| c > 0) {
                let s = k.offset(a[0], 4 * src_off);
                let d = k.offset(out, 4 * dst_off);
                let si: Vec<i64> = sst.iter().map(|&x| x as i64).collect();
                let so: Vec<i64> = dst_st.iter().map(|&x| x as i64).collect();
                movement::strided_copy(k, &counts, &si, s, &so, d, 4);
            }
        }
        Op::Gather { axis } => {
            let status = k.var(I32, zero);
            movement::gather(
                k,
                &args[0].shape,
                *axis,
                args[1].numel(),
                a[0],
                a[1],
                out,
                esize,
                status,
            );
            return k.get(status);
        }
        Op::ConvImpl {
            window,
            group,
            algo,
            relu,
            pool,
        } => {
            let mut geom = conv_impl_geom(window, *group, pool.as_deref(), &args, y);
            // A fused residual: out = r + bias first (one elementwise pass),
            // then the conv's GEMMs accumulate into out.
            let mut bias = a.get(2).copied();
            if args.len() == 4 {
                let mut bs = vec![args[2].numel()];
                bs.resize(y.rank() - 1, 1);
                let l = Layout::new(&y.shape, &[args[3].shape.clone(), bs]);
                let e = Expr::binary(BinaryOp::Add, Expr::Input(0), Expr::Input(1));
                elementwise::emit(k, &e, &l, &[a[3], a[2]], out);
                geom.accumulate = true;
                bias = None;
            }
            match algo {
                ConvAlgo::Depthwise => dwconv::emit(k, &geom, a[0], a[1], bias, out, *relu),
                ConvAlgo::Im2col { chunk_rows } => {
                    geom.chunk_rows = *chunk_rows;
                    let wc = const_b(g, id, true);
                    conv::emit(k, &geom, a[0], a[1], bias, out, scratch, *relu, wc.as_ref());
                }
                ConvAlgo::Pointwise => {
                    conv::emit(k, &geom, a[0], a[1], bias, out, None, *relu, None)
                }
                ConvAlgo::Winograd { tile_rows } => {
                    let wc = const_b(g, id, true).expect("checked: constant weights");
                    let s = scratch.expect("planner allocates the winograd scratch");
                    super::winograd::emit(k, &geom, *tile_rows, a[0], &wc, bias, out, s, *relu);
                }
            }
        }
        Op::GatherElements { axis } => {
            let status = k.var(I32, zero);
            super::indexing::gather_elements(
                k,
                &args[0].shape,
                &args[1].shape,
                *axis,
                a[0],
                a[1],
                out,
                esize,
                status,
            );
            return k.get(status);
        }
        Op::Fused { expr } => {
            let shapes: Vec<Vec<usize>> = args.iter().map(|t| t.shape.clone()).collect();
            let l = Layout::new(&y.shape, &shapes);
            elementwise::emit(k, &fused_expr(expr), &l, a, out);
        }
        Op::Attention { .. } => {
            let geom = attn_geom(op, &args, y);
            let s = scratch.expect("planner allocates the score block");
            attention::emit(k, &geom, a[0], a[1], a[2], a.get(3).copied(), out, s);
        }
        Op::ArgMax {
            axis, select_last, ..
        } => {
            reduce::argmax(
                k,
                Orc::new(&args[0].shape, *axis, *axis + 1),
                *select_last,
                a[0],
                out,
            );
        }
        Op::Where | Op::Cast { .. } => unreachable!("refused by check()"),
    }
    zero
}

fn attn_geom(op: &Op, args: &[&TensorType], y: &TensorType) -> AttnGeom {
    let Op::Attention {
        scale,
        causal,
        softcap,
        views,
    } = op
    else {
        unreachable!()
    };
    let w = views.as_deref();
    let ops = [0, 1, 2].map(|i| args[i].shape.as_slice());
    let [q, kk, v] = AttnViews::logical(w, ops);
    let r = q.len();
    let mask_strides = args.get(3).map(|m| {
        let mut scores = q[..r - 2].to_vec();
        scores.extend([q[r - 2], kk[r - 1]]);
        broadcast_strides(&m.shape, &scores)
    });
    let mut out_shape = q.to_vec();
    out_shape[r - 1] = v[r - 1];
    debug_assert!(w.is_some_and(|w| w.out.is_some()) || out_shape == y.shape);
    // Offset and batch…, row strides of each operand (contiguous when not viewed).
    let strides = |view: Option<&View>, shape: &[usize]| match view {
        Some(v) => (v.offset, (0..r - 1).map(|d| v.stride_or(d, 0)).collect()),
        None => {
            let mut s = contiguous_strides(shape);
            s.pop();
            (0, s)
        }
    };
    // A kᵀ view without unit columns is packed (contiguous) first.
    let kt_view = w.and_then(|w| w.kt.as_ref());
    let kt_pack = kt_view
        .filter(|v| v.stride_or(r - 1, 1) != 1)
        .map(|v| (v.offset, (0..r).map(|d| v.stride_or(d, 0)).collect()));
    let views = [
        strides(w.and_then(|w| w.q.as_ref()), q),
        strides(kt_view.filter(|_| kt_pack.is_none()), kk),
        strides(w.and_then(|w| w.v.as_ref()), v),
        strides(w.and_then(|w| w.out.as_ref()).map(|o| &o.1), &out_shape),
    ];
    AttnGeom {
        q_batch: q[..r - 2].to_vec(),
        kv_batch: kk[..r - 2].to_vec(),
        lq: q[r - 2],
        // kᵀ is [*, D, Lk]
        lk: kk[r - 1],
        d: q[r - 1],
        dv: v[r - 1],
        scale: scale.get(),
        causal: *causal,
        softcap: softcap.get(),
        mask_strides,
        views,
        kt_pack,
    }
}

/// The IR's fused program as the elementwise emitter's expression.
fn fused_expr(e: &FusedExpr) -> Expr {
    match e {
        FusedExpr::Input(i) => Expr::Input(*i),
        FusedExpr::Const(c) => Expr::Const(c.get()),
        FusedExpr::Unary(u, a) => Expr::unary(*u, fused_expr(a)),
        FusedExpr::Binary(b, x, y) => Expr::binary(*b, fused_expr(x), fused_expr(y)),
    }
}

fn value_arg(g: &Graph, id: ValueId, i: usize) -> ValueId {
    match &g.value(id).kind {
        ValueKind::Op { args, .. } => args[i],
        _ => unreachable!(),
    }
}

/// Element strides of `shape` broadcast against `out` (0 on broadcast dims).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let own = crate::ir::contiguous_strides(shape);
    (0..r)
        .map(|d| {
            if d + shape.len() < r {
                0
            } else {
                let sd = d + shape.len() - r;
                if shape[sd] == 1 && out[d] != 1 {
                    0
                } else {
                    own[sd]
                }
            }
        })
        .collect()
}

/// B (argument 1) of a MatMul/Gemm when it is an f32 constant.
fn const_b(g: &Graph, id: ValueId, transposed: bool) -> Option<gemm::ConstB<'_>> {
    let b_id = value_arg(g, id, 1);
    let data = g.as_const(b_id)?.as_f32()?;
    Some(gemm::ConstB {
        key: format!("v{}", b_id.index()),
        data,
        transposed,
    })
}

/// Batched, broadcasting matmul: loops over the batch dims and runs one
/// GEMM per batch entry (one GEMM over all rows when B is shared and A's
/// batch entries are contiguous).
#[allow(clippy::too_many_arguments)]
fn matmul(
    k: &mut Kb,
    at: &TensorType,
    bt: &TensorType,
    yt: &TensorType,
    a: Value,
    b: Value,
    y: Value,
    cb: Option<&gemm::ConstB>,
    tile: Option<crate::ir::GemmTile>,
) {
    let a2: Vec<usize> = if at.rank() == 1 {
        vec![1, at.shape[0]]
    } else {
        at.shape.clone()
    };
    let b2: Vec<usize> = if bt.rank() == 1 {
        vec![bt.shape[0], 1]
    } else {
        bt.shape.clone()
    };
    let (m, kk) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let n = b2[b2.len() - 1];
    let batch =
        crate::ir::broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2]).expect("verified");
    let _ = yt;
    let sa = broadcast_strides(&a2[..a2.len() - 2], &batch);
    let sb = broadcast_strides(&b2[..b2.len() - 2], &batch);
    let spec = GemmSpec {
        tile,
        m,
        n,
        k: kk,
        a: Strides { row: kk, col: 1 },
        b_row: n,
        c_row: n,
        alpha: 1.0,
        bias: None,
        relu: false,
    };
    let nb: usize = batch.iter().product();
    let bst = crate::ir::contiguous_strides(&batch);
    if nb == 1 || (sb.iter().all(|&s| s == 0) && sa == bst) {
        let spec = GemmSpec { m: m * nb, ..spec };
        if !cb.is_some_and(|cb| gemm::emit_const_b(k, &spec, a, cb, y, None)) {
            gemm::emit(k, &spec, a, b, y, None);
        }
        return;
    }
    // One GEMM per batch entry (entries split over threads when large).
    gemm::emit_batched(k, &spec, &batch, &sa, &sb, &bst, a, b, y);
}
