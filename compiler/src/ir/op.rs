//! IR operations and their shape/type inference.
//!
//! Ops carry fully resolved, static attributes: the frontend turns ONNX
//! attributes *and* constant-input attributes (Reshape's shape, Slice's
//! starts, Split's sizes, …) into these fields, so later stages never look at
//! ONNX again. Every op has exactly one result; multi-output ONNX ops are
//! split into several IR values by the frontend.

use super::tensor::{DType, F32Bits, TensorType};
use super::view::View;
use std::fmt;

/// Elementwise functions of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnaryOp {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Erf,
    Neg,
    Abs,
    Reciprocal,
    Floor,
    Ceil,
    /// Exact GELU: x·Φ(x).
    Gelu,
    /// x·sigmoid(x).
    Silu,
    LeakyRelu {
        alpha: F32Bits,
    },
    Elu {
        alpha: F32Bits,
    },
    Selu {
        alpha: F32Bits,
        gamma: F32Bits,
    },
    HardSigmoid {
        alpha: F32Bits,
        beta: F32Bits,
    },
    HardSwish,
    Clip {
        min: F32Bits,
        max: F32Bits,
    },
    /// Logical not (bool → bool).
    Not,
    /// Round to the nearest integer, ties to even.
    Round,
    /// −1, 0 or 1 by the sign of x (NaN stays NaN).
    Sign,
}

impl UnaryOp {
    pub fn name(&self) -> &'static str {
        use UnaryOp::*;
        match self {
            Relu => "relu",
            Sigmoid => "sigmoid",
            Tanh => "tanh",
            Exp => "exp",
            Log => "log",
            Sqrt => "sqrt",
            Erf => "erf",
            Neg => "neg",
            Abs => "abs",
            Reciprocal => "reciprocal",
            Floor => "floor",
            Ceil => "ceil",
            Gelu => "gelu",
            Silu => "silu",
            LeakyRelu { .. } => "leaky_relu",
            Elu { .. } => "elu",
            Selu { .. } => "selu",
            HardSigmoid { .. } => "hard_sigmoid",
            HardSwish => "hard_swish",
            Clip { .. } => "clip",
            Not => "not",
            Round => "round",
            Sign => "sign",
        }
    }
}

/// Elementwise functions of two tensors with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Division; on int64 it truncates toward zero (ONNX Div).
    Div,
    Pow,
    Max,
    Min,
    /// ONNX Mod with fmod=0: the result takes the divisor's sign (int64 only).
    Mod,
    /// ONNX Mod with fmod=1 (C fmod).
    Fmod,
    Equal,
    Less,
    Greater,
    LessOrEqual,
    GreaterOrEqual,
    And,
    Or,
    Xor,
}

impl BinaryOp {
    pub fn name(&self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Pow => "pow",
            Max => "max",
            Min => "min",
            Mod => "mod",
            Fmod => "fmod",
            Equal => "equal",
            Less => "less",
            Greater => "greater",
            LessOrEqual => "less_or_equal",
            GreaterOrEqual => "greater_or_equal",
            And => "and",
            Or => "or",
            Xor => "xor",
        }
    }

    pub fn is_comparison(&self) -> bool {
        use BinaryOp::*;
        matches!(self, Equal | Less | Greater | LessOrEqual | GreaterOrEqual)
    }

    pub fn is_logical(&self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    /// sqrt(sum(x²))
    L2,
    /// sum(|x|)
    L1,
    SumSquare,
    /// log(sum(exp(x)))
    LogSumExp,
}

impl ReduceOp {
    pub fn name(&self) -> &'static str {
        use ReduceOp::*;
        match self {
            Sum => "sum",
            Mean => "mean",
            Max => "max",
            Min => "min",
            Prod => "prod",
            L2 => "l2",
            L1 => "l1",
            SumSquare => "sum_square",
            LogSumExp => "log_sum_exp",
        }
    }
}

/// How a convolution is computed. The optimizer adds every applicable
/// algorithm (with its tiling) to a conv's e-class and the cost model picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConvAlgo {
    /// Unfold `chunk_rows` output rows at a time (im2col), then GEMM; the
    /// chunk keeps the unfolded block cache-resident.
    Im2col { chunk_rows: usize },
    /// 1×1, stride 1, no padding: a GEMM on the input itself.
    Pointwise,
    /// One filter per channel (group = channels = filters), computed directly.
    Depthwise,
    /// Winograd F(2×2, 3×3) (3×3, stride 1, one group): `tile_rows` rows of
    /// 2×2 output tiles at a time are transformed, multiplied as 16 GEMMs
    /// with the compile-time-transformed weights, and transformed back —
    /// 2.25× fewer multiplies than im2col.
    Winograd { tile_rows: usize },
}

/// The GEMM blocking the optimizer chose for a MatMul/Gemm ([`Op::Tiled`]):
/// a register tile of `mr` rows × `nv` vectors of columns, and `mc` rows of
/// A per cache block (reread from L2 for every column panel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemmTile {
    pub mr: usize,
    pub nv: usize,
    pub mc: usize,
}

impl fmt::Display for GemmTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}v,mc={}", self.mr, self.nv, self.mc)
    }
}

/// The tiling the optimizer chose for a direct blocked conv
/// ([`Op::ConvBlocked`]): a register tile of `rw` output pixels of a row ×
/// `nb` 16-channel output blocks, and `kc` input blocks per chunk (a chunk's
/// weights are reused from L1 by every output row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirectTile {
    pub rw: usize,
    pub nb: usize,
    pub kc: usize,
}

impl fmt::Display for DirectTile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}px×{}blk,kc={}", self.rw, self.nb, self.kc)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PoolKind {
    Max,
    /// Average; `count_include_pad` decides whether padding counts in the divisor.
    Avg {
        count_include_pad: bool,
    },
}

/// Spatial window geometry shared by Conv and pooling. All vectors have one
/// entry per spatial dim; `pads` is `[begin..., end...]` as in ONNX, already
/// resolved from `auto_pad` (and, for pooling, `ceil_mode` extends `end` pads
/// virtually: see [`Window::out_size`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
    pub ceil_mode: bool,
}

impl Window {
    pub fn spatial_rank(&self) -> usize {
        self.kernel.len()
    }

    /// Output extent of spatial dim `i` for input extent `input`.
    pub fn out_size(&self, i: usize, input: usize) -> Result<usize, String> {
        let n = self.spatial_rank();
        let padded = input + self.pads[i] + self.pads[i + n];
        let eff_k = self.dilations[i] * (self.kernel[i] - 1) + 1;
        if padded < eff_k {
            return Err(format!(
                "window of effective size {eff_k} does not fit padded input extent {padded} (dim {i})"
            ));
        }
        let s = self.strides[i];
        let mut out = if self.ceil_mode {
            (padded - eff_k).div_ceil(s) + 1
        } else {
            (padded - eff_k) / s + 1
        };
        // ONNX/PyTorch: with ceil_mode the last window must start inside the
        // input or left padding.
        if self.ceil_mode && (out - 1) * s >= input + self.pads[i] {
            out -= 1;
        }
        Ok(out)
    }

    fn validate(&self) -> Result<(), String> {
        let n = self.kernel.len();
        if self.strides.len() != n || self.dilations.len() != n || self.pads.len() != 2 * n {
            return Err("window attributes have inconsistent lengths".into());
        }
        if self.kernel.contains(&0) || self.strides.contains(&0) || self.dilations.contains(&0) {
            return Err("kernel, strides and dilations must be positive".into());
        }
        Ok(())
    }
}

/// One IR operation. Inputs are positional; optional trailing inputs are
/// simply absent (e.g. Conv with or without bias).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `where(cond, x, y)` with broadcasting.
    Where,
    Cast {
        to: DType,
    },
    /// numpy `matmul`: batched, broadcasting, 1-D operands promoted.
    MatMul,
    /// `alpha·op(A)·op(B) + beta·C`, C (optional) unidirectionally broadcast.
    /// A fourth input R (only after C) is a residual added with weight 1, and
    /// `relu` clamps the sum: both are epilogues fused by the optimizer so
    /// the GEMM's result is written once.
    Gemm {
        alpha: F32Bits,
        beta: F32Bits,
        trans_a: bool,
        trans_b: bool,
        relu: bool,
    },
    /// N-d convolution, NCHW; inputs X, W, optional bias B.
    Conv {
        window: Window,
        group: usize,
    },
    /// A convolution with its algorithm chosen (produced by the optimizer;
    /// same semantics and inputs as `Conv`).
    /// `relu` fuses a following Relu into the kernel's epilogue; a fourth
    /// input (after the bias) is a residual of the result's shape added
    /// before it (`relu(conv(x, w, b) + r)`, ResNet's block tail).
    /// `pool` fuses a following max pool (2-D, no residual): the result is
    /// `max_pool(relu?(conv))`, and the conv output never goes to memory;
    /// with im2col, `chunk_rows` then counts *pooled* rows per chunk.
    ConvImpl {
        window: Window,
        group: usize,
        algo: ConvAlgo,
        relu: bool,
        pool: Option<Box<Window>>,
    },
    /// A MatMul or Gemm (`op`, same inputs and semantics) with the GEMM
    /// blocking chosen by the optimizer's cost model.
    Tiled {
        tile: GemmTile,
        op: Box<Op>,
    },
    /// NCHW → channel-blocked NCHWc: `[N, C, H, W]` becomes
    /// `[N, C/cb, H, W, cb]` (channel `c` at block `c / cb`, lane `c % cb`;
    /// C a multiple of `cb`). The layout of the direct conv kernels, where
    /// one pixel's channel block is one vector.
    ToBlocked {
        cb: usize,
    },
    /// Channel-blocked → NCHW, the inverse of [`Op::ToBlocked`].
    FromBlocked,
    /// 2-D convolution on channel-blocked tensors, computed directly (no
    /// unfold): X `[N, C/cb, H, W, cb]`, W `[M, C, kh, kw]` (ordinary
    /// filters, constant; the kernel packs them), bias `[M]`, and a
    /// residual in the result's layout (only after a bias); result
    /// `[N, M/cb, OH, OW, cb]` = blocked(relu?(conv(x, W) + b + r)).
    /// `tile`: the kernel's tiling (None: its own rule).
    ConvBlocked {
        window: Window,
        relu: bool,
        tile: Option<DirectTile>,
    },
    /// N-d pooling, NCHW.
    Pool {
        kind: PoolKind,
        window: Window,
    },
    /// Softmax (or log-softmax) over one axis (opset ≥ 13 semantics; the
    /// frontend rewrites the older 2-D coercion with reshapes).
    Softmax {
        axis: usize,
        log: bool,
    },
    /// Normalizes over dims `axis..`; inputs X, scale, optional bias.
    LayerNorm {
        axis: usize,
        epsilon: F32Bits,
    },
    /// Per-(N, C) normalization over spatial dims; inputs X, scale, bias.
    InstanceNorm {
        epsilon: F32Bits,
    },
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keepdims: bool,
    },
    /// Index of the max (first occurrence, or last with `select_last`) → i64.
    ArgMax {
        axis: usize,
        keepdims: bool,
        select_last: bool,
    },
    /// Same data, new shape (element count preserved).
    Reshape {
        shape: Vec<usize>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Concat {
        axis: usize,
    },
    /// Per-dimension (start, step, count) with count ≥ 0; negative steps allowed.
    Slice {
        dims: Vec<SliceDim>,
    },
    /// numpy `take` along `axis`; indices are i64 (negative wrap).
    Gather {
        axis: usize,
    },
    /// ONNX GatherElements: inputs data and i64 indices of the same rank;
    /// `out[i] = data[i with dim axis replaced by indices[i]]` (negative
    /// indices wrap once). The result has the indices' shape, whose dims
    /// other than `axis` must not exceed data's.
    GatherElements {
        axis: usize,
    },
    /// Broadcast to `shape`.
    Expand {
        shape: Vec<usize>,
    },
    Tile {
        repeats: Vec<usize>,
    },
    /// Scaled dot-product attention, fused: `softmax(scale·q·kᵀ + mask)·v`
    /// with optional causal masking and logit soft-capping
    /// (`softcap·tanh(s/softcap)` when softcap > 0). Inputs q [*, Lq, D],
    /// kᵀ [*, D, Lk] (keys already transposed, as exporters produce them),
    /// v [*, Lk, Dv], optional additive mask broadcastable to [*, Lq, Lk].
    /// The head dim (-3) of k/v may divide q's (grouped-query attention);
    /// other batch dims match or are 1. The kernel streams over key blocks
    /// with an online softmax: no Lq×Lk matrix is materialized.
    /// `views` (set by the optimizer) reads operands and writes the result
    /// through strided views instead; the shapes above are then the views'.
    Attention {
        scale: F32Bits,
        causal: bool,
        softcap: F32Bits,
        views: Option<Box<AttnViews>>,
    },
    /// A chain of f32 elementwise ops run as one loop (built by the
    /// optimizer's fusion pass); inputs broadcast to the result shape.
    Fused {
        expr: super::fused::FusedExpr,
    },
    /// Constant padding (mode constant) with `pads = [begin..., end...]`
    /// (may be negative = cropping); reflect/edge by `mode`.
    Pad {
        pads: Vec<i64>,
        mode: PadMode,
        value: F32Bits,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// Where a fused attention reads q, kᵀ, v and writes its result when the
/// optimizer absorbed the re-indexing copies around it; `None` = the operand
/// (or result) itself, contiguous. Views have unit column stride, except
/// kᵀ's, which the kernel then packs once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AttnViews {
    pub q: Option<View>,
    pub kt: Option<View>,
    pub v: Option<View>,
    /// The result buffer's shape and the logical output's view into it
    /// (a bijection: every result element is written exactly once).
    pub out: Option<(Vec<usize>, View)>,
}

impl AttnViews {
    /// Logical shapes of q, kᵀ, v given the operands' shapes.
    pub fn logical<'a>(views: Option<&'a AttnViews>, args: [&'a [usize]; 3]) -> [&'a [usize]; 3] {
        let Some(w) = views else { return args };
        let pick = |v: &'a Option<View>, a: &'a [usize]| v.as_ref().map_or(a, |v| &v.shape[..]);
        [
            pick(&w.q, args[0]),
            pick(&w.kt, args[1]),
            pick(&w.v, args[2]),
        ]
    }
}

/// How one dimension is sliced: elements `start + i·step` for `i < count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SliceDim {
    pub start: usize,
    pub step: i64,
    pub count: usize,
}

impl Op {
    /// Short lowercase name used in the text form and in errors.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Where => "where",
            Op::Cast { .. } => "cast",
            Op::MatMul => "matmul",
            Op::Gemm { .. } => "gemm",
            Op::Conv { .. } => "conv",
            Op::ConvImpl { .. } => "conv_impl",
            Op::Tiled { .. } => "tiled",
            Op::ToBlocked { .. } => "to_blocked",
            Op::FromBlocked => "from_blocked",
            Op::ConvBlocked { .. } => "conv_blocked",
            Op::Pool {
                kind: PoolKind::Max,
                ..
            } => "max_pool",
            Op::Pool {
                kind: PoolKind::Avg { .. },
                ..
            } => "avg_pool",
            Op::Softmax { log: false, .. } => "softmax",
            Op::Softmax { log: true, .. } => "log_softmax",
            Op::LayerNorm { .. } => "layer_norm",
            Op::InstanceNorm { .. } => "instance_norm",
            Op::Reduce { .. } => "reduce",
            Op::ArgMax { .. } => "argmax",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Slice { .. } => "slice",
            Op::Gather { .. } => "gather",
            Op::GatherElements { .. } => "gather_elements",
            Op::Expand { .. } => "expand",
            Op::Tile { .. } => "tile",
            Op::Pad { .. } => "pad",
            Op::Attention { .. } => "attention",
            Op::Fused { .. } => "fused",
        }
    }

    /// Attribute text for the IR printer (empty if none).
    pub fn attrs(&self) -> String {
        match self {
            Op::Unary(u) => match u {
                UnaryOp::LeakyRelu { alpha } | UnaryOp::Elu { alpha } => format!("alpha={alpha}"),
                UnaryOp::Selu { alpha, gamma } => format!("alpha={alpha} gamma={gamma}"),
                UnaryOp::HardSigmoid { alpha, beta } => format!("alpha={alpha} beta={beta}"),
                UnaryOp::Clip { min, max } => format!("min={min} max={max}"),
                _ => String::new(),
            },
            Op::Cast { to } => format!("to={to}"),
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
                relu,
            } => {
                let r = if *relu { " relu=true" } else { "" };
                format!("alpha={alpha} beta={beta} trans_a={trans_a} trans_b={trans_b}{r}")
            }
            Op::Fused { expr } => format!("expr={expr}"),
            Op::ToBlocked { cb } => format!("cb={cb}"),
            Op::FromBlocked => String::new(),
            Op::ConvBlocked { window, relu, tile } => {
                let r = if *relu { " relu=true" } else { "" };
                let t = tile.map(|t| format!(" tile={t}")).unwrap_or_default();
                format!("{}{r}{t}", window_attrs(window))
            }
            Op::Tiled { tile, op } => {
                let a = op.attrs();
                let sep = if a.is_empty() { "" } else { " " };
                format!("op={} tile={tile}{sep}{a}", op.name())
            }
            Op::Conv { window, group } => format!("{} group={group}", window_attrs(window)),
            Op::ConvImpl {
                window,
                group,
                algo,
                relu,
                pool,
            } => {
                let a = match algo {
                    ConvAlgo::Im2col { chunk_rows } => format!("im2col(rows={chunk_rows})"),
                    ConvAlgo::Pointwise => "pointwise".into(),
                    ConvAlgo::Depthwise => "depthwise".into(),
                    ConvAlgo::Winograd { tile_rows } => format!("winograd(tile_rows={tile_rows})"),
                };
                let r = if *relu { " relu=true" } else { "" };
                let p = match pool {
                    Some(p) => format!(" max_pool=({})", window_attrs(p)),
                    None => String::new(),
                };
                format!("{} group={group} algo={a}{r}{p}", window_attrs(window))
            }
            Op::Pool { kind, window } => match kind {
                PoolKind::Max => window_attrs(window),
                PoolKind::Avg { count_include_pad } => {
                    format!(
                        "{} count_include_pad={count_include_pad}",
                        window_attrs(window)
                    )
                }
            },
            Op::Softmax { axis, .. } => format!("axis={axis}"),
            Op::LayerNorm { axis, epsilon } => format!("axis={axis} epsilon={epsilon}"),
            Op::InstanceNorm { epsilon } => format!("epsilon={epsilon}"),
            Op::Reduce { op, axes, keepdims } => {
                format!("op={} axes={axes:?} keepdims={keepdims}", op.name())
            }
            Op::ArgMax {
                axis,
                keepdims,
                select_last,
            } => {
                format!("axis={axis} keepdims={keepdims} select_last={select_last}")
            }
            Op::Reshape { shape } => format!("shape={shape:?}"),
            Op::Transpose { perm } => format!("perm={perm:?}"),
            Op::Concat { axis } => format!("axis={axis}"),
            Op::Slice { dims } => {
                let parts: Vec<String> = dims
                    .iter()
                    .map(|d| format!("{}:{}:{}", d.start, d.step, d.count))
                    .collect();
                format!("dims=[{}]", parts.join(","))
            }
            Op::Gather { axis } | Op::GatherElements { axis } => format!("axis={axis}"),
            Op::Expand { shape } => format!("shape={shape:?}"),
            Op::Tile { repeats } => format!("repeats={repeats:?}"),
            Op::Pad { pads, mode, value } => format!("pads={pads:?} mode={mode:?} value={value}"),
            Op::Attention {
                scale,
                causal,
                softcap,
                views,
            } => {
                let mut s = format!("scale={scale} causal={causal} softcap={softcap}");
                if let Some(w) = views {
                    for (n, v) in [("q", &w.q), ("kt", &w.kt), ("v", &w.v)] {
                        if let Some(v) = v {
                            s += &format!(" {n}_view={v}");
                        }
                    }
                    if let Some((_, v)) = &w.out {
                        s += &format!(" out_view={v}");
                    }
                }
                s
            }
            Op::Binary(_) | Op::Where | Op::MatMul => String::new(),
        }
    }

    /// The op without its implementation choice ([`Op::Tiled`]'s MatMul or
    /// Gemm): what kernels and analyses match on.
    pub fn base(&self) -> &Op {
        match self {
            Op::Tiled { op, .. } => op,
            o => o,
        }
    }

    /// Accepted input counts (inclusive range).
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Unary(_) | Op::Cast { .. } | Op::Pool { .. } | Op::Softmax { .. } => (1, 1),
            Op::Reduce { .. } | Op::ArgMax { .. } | Op::Reshape { .. } | Op::Transpose { .. } => {
                (1, 1)
            }
            Op::Slice { .. } | Op::Expand { .. } | Op::Tile { .. } | Op::Pad { .. } => (1, 1),
            Op::Binary(_) | Op::MatMul | Op::Gather { .. } | Op::GatherElements { .. } => (2, 2),
            Op::Where | Op::InstanceNorm { .. } => (3, 3),
            Op::Conv { .. } | Op::LayerNorm { .. } => (2, 3),
            Op::ConvImpl { .. } => (2, 4),
            Op::Gemm { .. } => (2, 4),
            Op::Tiled { op, .. } => op.arity(),
            Op::ToBlocked { .. } | Op::FromBlocked => (1, 1),
            Op::ConvBlocked { .. } => (2, 4),
            Op::Fused { expr } => (expr.arity(), expr.arity()),
            Op::Concat { .. } => (1, usize::MAX),
            Op::Attention { .. } => (3, 4),
        }
    }

    /// Result type from argument types, or a message saying what is wrong.
    pub fn infer(&self, args: &[&TensorType]) -> Result<TensorType, String> {
        let (lo, hi) = self.arity();
        if args.len() < lo || args.len() > hi {
            return Err(format!(
                "{} takes {lo}..={hi} inputs, got {}",
                self.name(),
                args.len()
            ));
        }
        let a = args[0];
        let f32_only = |what: &str| -> Result<(), String> {
            for (i, t) in args.iter().enumerate() {
                if t.dtype != DType::F32 {
                    return Err(format!(
                        "{what}: input {i} is {}, only f32 is supported",
                        t.dtype
                    ));
                }
            }
            Ok(())
        };
        match self {
            Op::Unary(UnaryOp::Not) => {
                expect_dtype(a, DType::Bool, "not")?;
                Ok(a.clone())
            }
            Op::Unary(UnaryOp::Neg | UnaryOp::Abs) => {
                if a.dtype == DType::Bool {
                    return Err(format!("{} does not take bool", self.name()));
                }
                Ok(a.clone())
            }
            Op::Unary(_) => {
                f32_only(self.name())?;
                Ok(a.clone())
            }
            Op::Binary(b) => {
                let (x, y) = (args[0], args[1]);
                if x.dtype != y.dtype {
                    return Err(format!(
                        "{}: operand types differ ({} vs {})",
                        b.name(),
                        x.dtype,
                        y.dtype
                    ));
                }
                let shape = broadcast_shapes(&x.shape, &y.shape)?;
                let dtype = if b.is_comparison() {
                    DType::Bool
                } else if b.is_logical() {
                    expect_dtype(x, DType::Bool, b.name())?;
                    DType::Bool
                } else {
                    if x.dtype == DType::Bool {
                        return Err(format!("{} does not take bool", b.name()));
                    }
                    if matches!(b, BinaryOp::Mod) && x.dtype == DType::F32 {
                        return Err("mod with fmod=0 is defined for integers only".into());
                    }
                    x.dtype
                };
                Ok(TensorType::new(dtype, shape))
            }
            Op::Where => {
                expect_dtype(args[0], DType::Bool, "where condition")?;
                if args[1].dtype != args[2].dtype {
                    return Err("where: x and y types differ".into());
                }
                let s = broadcast_shapes(&args[0].shape, &args[1].shape)?;
                let s = broadcast_shapes(&s, &args[2].shape)?;
                Ok(TensorType::new(args[1].dtype, s))
            }
            Op::Cast { to } => Ok(TensorType::new(*to, a.shape.clone())),
            Op::Tiled { op, .. } => op.infer(args),
            Op::ToBlocked { cb } => {
                f32_only("to_blocked")?;
                let s = &a.shape;
                if s.len() != 4 || *cb == 0 || !s[1].is_multiple_of(*cb) {
                    return Err(format!(
                        "to_blocked needs [N, C, H, W] with C a multiple of {cb}, got {s:?}"
                    ));
                }
                Ok(TensorType::new(
                    a.dtype,
                    vec![s[0], s[1] / cb, s[2], s[3], *cb],
                ))
            }
            Op::FromBlocked => {
                f32_only("from_blocked")?;
                let s = &a.shape;
                if s.len() != 5 {
                    return Err(format!("from_blocked needs [N, Cb, H, W, cb], got {s:?}"));
                }
                Ok(TensorType::new(
                    a.dtype,
                    vec![s[0], s[1] * s[4], s[2], s[3]],
                ))
            }
            Op::ConvBlocked { window, .. } => {
                f32_only("conv_blocked")?;
                let (x, w) = (&args[0].shape, &args[1].shape);
                if x.len() != 5 || w.len() != 4 || window.spatial_rank() != 2 {
                    return Err(format!(
                        "conv_blocked needs a blocked 2-D input and [M, C, kh, kw] filters, got {x:?} and {w:?}"
                    ));
                }
                let cb = x[4];
                if x[1] * cb != w[1] || w[0] % cb != 0 || window.kernel[..] != w[2..] {
                    return Err(format!(
                        "conv_blocked: input {x:?} and filters {w:?} disagree (block {cb})"
                    ));
                }
                window.validate()?;
                let shape = vec![
                    x[0],
                    w[0] / cb,
                    window.out_size(0, x[2])?,
                    window.out_size(1, x[3])?,
                    cb,
                ];
                if args.get(2).is_some_and(|b| b.shape != [w[0]]) {
                    return Err("conv_blocked: bias must be [M]".into());
                }
                if args.get(3).is_some_and(|r| r.shape != shape) {
                    return Err("conv_blocked: residual must have the result's shape".into());
                }
                Ok(TensorType::new(DType::F32, shape))
            }
            Op::MatMul => {
                if args[0].dtype != args[1].dtype || args[0].dtype == DType::Bool {
                    return Err("matmul needs two f32 or two i64 operands".into());
                }
                Ok(TensorType::new(
                    a.dtype,
                    matmul_shape(&args[0].shape, &args[1].shape)?,
                ))
            }
            Op::Gemm {
                trans_a, trans_b, ..
            } => {
                f32_only("gemm")?;
                let (sa, sb) = (&args[0].shape, &args[1].shape);
                if sa.len() != 2 || sb.len() != 2 {
                    return Err(format!("gemm needs 2-D A and B, got {sa:?} and {sb:?}"));
                }
                let (m, ka) = if *trans_a {
                    (sa[1], sa[0])
                } else {
                    (sa[0], sa[1])
                };
                let (kb, n) = if *trans_b {
                    (sb[1], sb[0])
                } else {
                    (sb[0], sb[1])
                };
                if ka != kb {
                    return Err(format!(
                        "gemm inner dimensions differ: A gives K={ka}, B gives K={kb}"
                    ));
                }
                for c in &args[2..] {
                    let bc = broadcast_shapes(&c.shape, &[m, n])?;
                    if bc != [m, n] {
                        return Err(format!(
                            "gemm C/R of shape {:?} does not broadcast to [{m}, {n}]",
                            c.shape
                        ));
                    }
                }
                Ok(TensorType::new(DType::F32, vec![m, n]))
            }
            Op::Fused { expr } => expr.infer(args),
            Op::ConvImpl {
                window,
                group,
                pool,
                ..
            } => {
                let y = Op::Conv {
                    window: window.clone(),
                    group: *group,
                }
                .infer(&args[..args.len().min(3)])?;
                if let Some(r) = args.get(3) {
                    if pool.is_some() {
                        return Err("conv with a fused pool takes no residual".into());
                    }
                    if **r != y {
                        return Err(format!("conv residual {r} differs from the result {y}"));
                    }
                }
                match pool {
                    Some(p) => Op::Pool {
                        kind: PoolKind::Max,
                        window: (**p).clone(),
                    }
                    .infer(&[&y]),
                    None => Ok(y),
                }
            }
            Op::Conv { window, group } => {
                f32_only("conv")?;
                window.validate()?;
                let (x, w) = (&args[0].shape, &args[1].shape);
                let n = window.spatial_rank();
                if x.len() != n + 2 || w.len() != n + 2 {
                    return Err(format!(
                        "conv with {n} spatial dims needs rank-{} X and W, got {x:?} and {w:?}",
                        n + 2
                    ));
                }
                if *group == 0 || x[1] % group != 0 || w[0] % group != 0 {
                    return Err(format!(
                        "group={group} does not divide channels (in {}, out {})",
                        x[1], w[0]
                    ));
                }
                if w[1] * group != x[1] {
                    return Err(format!(
                        "weight expects {} input channels per group, input has {} channels in {group} group(s)",
                        w[1], x[1]
                    ));
                }
                if w[2..] != window.kernel[..] {
                    return Err(format!(
                        "kernel_shape {:?} disagrees with weight shape {w:?}",
                        window.kernel
                    ));
                }
                if let Some(b) = args.get(2) {
                    if b.shape != [w[0]] {
                        return Err(format!("bias shape {:?} should be [{}]", b.shape, w[0]));
                    }
                }
                let mut out = vec![x[0], w[0]];
                for i in 0..n {
                    out.push(window.out_size(i, x[i + 2])?);
                }
                Ok(TensorType::new(DType::F32, out))
            }
            Op::Pool { window, .. } => {
                f32_only("pool")?;
                window.validate()?;
                let n = window.spatial_rank();
                if a.rank() != n + 2 {
                    return Err(format!(
                        "pool with {n} spatial dims needs a rank-{} input, got {:?}",
                        n + 2,
                        a.shape
                    ));
                }
                let mut out = a.shape[..2].to_vec();
                for i in 0..n {
                    out.push(window.out_size(i, a.shape[i + 2])?);
                }
                Ok(TensorType::new(DType::F32, out))
            }
            Op::Softmax { axis, .. } => {
                f32_only("softmax")?;
                check_axis(*axis, a.rank())?;
                Ok(a.clone())
            }
            Op::LayerNorm { axis, .. } => {
                f32_only("layer_norm")?;
                check_axis(*axis, a.rank())?;
                let norm = &a.shape[*axis..];
                for (i, p) in args[1..].iter().enumerate() {
                    let bc = broadcast_shapes(&p.shape, norm)?;
                    if bc != norm {
                        let what = if i == 0 { "scale" } else { "bias" };
                        return Err(format!(
                            "{what} of shape {:?} does not broadcast to {norm:?}",
                            p.shape
                        ));
                    }
                }
                Ok(a.clone())
            }
            Op::InstanceNorm { .. } => {
                f32_only("instance_norm")?;
                if a.rank() < 3 {
                    return Err("instance_norm needs rank >= 3".into());
                }
                for p in &args[1..] {
                    if p.shape != [a.shape[1]] {
                        return Err(format!(
                            "scale/bias shape {:?} should be [{}]",
                            p.shape, a.shape[1]
                        ));
                    }
                }
                Ok(a.clone())
            }
            Op::Reduce { axes, keepdims, op } => {
                if a.dtype == DType::Bool {
                    return Err("reduce does not take bool".into());
                }
                if a.dtype == DType::I64
                    && !matches!(
                        op,
                        ReduceOp::Sum | ReduceOp::Max | ReduceOp::Min | ReduceOp::Prod
                    )
                {
                    return Err(format!("reduce {} needs f32", op.name()));
                }
                for &ax in axes {
                    check_axis(ax, a.rank())?;
                }
                let mut out = Vec::new();
                for (i, &d) in a.shape.iter().enumerate() {
                    if axes.contains(&i) {
                        if d == 0 && matches!(op, ReduceOp::Max | ReduceOp::Min) {
                            return Err("reduce max/min over an empty axis".into());
                        }
                        if *keepdims {
                            out.push(1);
                        }
                    } else {
                        out.push(d);
                    }
                }
                Ok(TensorType::new(a.dtype, out))
            }
            Op::ArgMax { axis, keepdims, .. } => {
                check_axis(*axis, a.rank())?;
                if a.shape[*axis] == 0 {
                    return Err("argmax over an empty axis".into());
                }
                let mut out = a.shape.clone();
                if *keepdims {
                    out[*axis] = 1;
                } else {
                    out.remove(*axis);
                }
                Ok(TensorType::new(DType::I64, out))
            }
            Op::Reshape { shape } => {
                let new = TensorType::new(a.dtype, shape.clone());
                if new.checked_bytes().is_none() || new.numel() != a.numel() {
                    return Err(format!("cannot reshape {:?} to {shape:?}", a.shape));
                }
                Ok(new)
            }
            Op::Transpose { perm } => {
                let mut seen = vec![false; a.rank()];
                if perm.len() != a.rank() {
                    return Err(format!(
                        "perm {perm:?} has wrong length for rank {}",
                        a.rank()
                    ));
                }
                for &p in perm {
                    if p >= a.rank() || seen[p] {
                        return Err(format!("perm {perm:?} is not a permutation"));
                    }
                    seen[p] = true;
                }
                Ok(TensorType::new(
                    a.dtype,
                    perm.iter().map(|&p| a.shape[p]).collect(),
                ))
            }
            Op::Concat { axis } => {
                check_axis(*axis, a.rank())?;
                let mut out = a.shape.clone();
                out[*axis] = 0;
                for t in args {
                    if t.dtype != a.dtype || t.rank() != a.rank() {
                        return Err("concat inputs differ in type or rank".into());
                    }
                    for d in 0..a.rank() {
                        if d != *axis && t.shape[d] != a.shape[d] {
                            return Err(format!(
                                "concat inputs differ in dim {d}: {:?} vs {:?}",
                                a.shape, t.shape
                            ));
                        }
                    }
                    out[*axis] += t.shape[*axis];
                }
                Ok(TensorType::new(a.dtype, out))
            }
            Op::Slice { dims } => {
                if dims.len() != a.rank() {
                    return Err("slice needs one entry per dim".into());
                }
                for (i, d) in dims.iter().enumerate() {
                    if d.count > 0 {
                        let last = d.start as i64 + (d.count as i64 - 1) * d.step;
                        if d.step == 0
                            || d.start >= a.shape[i]
                            || last < 0
                            || last >= a.shape[i] as i64
                        {
                            return Err(format!("slice of dim {i} out of range"));
                        }
                    }
                }
                Ok(TensorType::new(
                    a.dtype,
                    dims.iter().map(|d| d.count).collect(),
                ))
            }
            Op::GatherElements { axis } => {
                check_axis(*axis, a.rank())?;
                let idx = args[1];
                expect_dtype(idx, DType::I64, "gather_elements indices")?;
                if idx.rank() != a.rank() {
                    return Err(format!(
                        "indices of shape {:?} must have the rank of data {:?}",
                        idx.shape, a.shape
                    ));
                }
                for d in 0..a.rank() {
                    if d != *axis && idx.shape[d] > a.shape[d] {
                        return Err(format!(
                            "indices of shape {:?} exceed data {:?} in dim {d}",
                            idx.shape, a.shape
                        ));
                    }
                }
                if a.shape[*axis] == 0 && idx.numel() > 0 {
                    return Err("gather_elements from an empty axis".into());
                }
                Ok(TensorType::new(a.dtype, idx.shape.clone()))
            }
            Op::Gather { axis } => {
                check_axis(*axis, a.rank())?;
                let idx = args[1];
                expect_dtype(idx, DType::I64, "gather indices")?;
                let mut out = a.shape[..*axis].to_vec();
                out.extend_from_slice(&idx.shape);
                out.extend_from_slice(&a.shape[*axis + 1..]);
                Ok(TensorType::new(a.dtype, out))
            }
            Op::Expand { shape } => {
                let out = broadcast_shapes(&a.shape, shape)?;
                if &out != shape {
                    return Err(format!("cannot expand {:?} to {shape:?}", a.shape));
                }
                Ok(TensorType::new(a.dtype, out))
            }
            Op::Tile { repeats } => {
                if repeats.len() != a.rank() {
                    return Err("tile repeats length differs from rank".into());
                }
                Ok(TensorType::new(
                    a.dtype,
                    a.shape.iter().zip(repeats).map(|(d, r)| d * r).collect(),
                ))
            }
            Op::Attention { views, .. } => {
                f32_only("attention")?;
                let w = views.as_deref();
                let ops = [0, 1, 2].map(|i| args[i].shape.as_slice());
                let [q, kt, v] = AttnViews::logical(w, ops);
                if let Some(w) = w {
                    for (i, view) in [&w.q, &w.kt, &w.v].into_iter().enumerate() {
                        if let Some(view) = view {
                            check_view(view, args[i].numel(), i != 1)?;
                        }
                    }
                }
                let out = attention_shape(q, kt, v, args.get(3).map(|m| m.shape.as_slice()))?;
                match w.and_then(|w| w.out.as_ref()) {
                    None => Ok(TensorType::new(DType::F32, out)),
                    Some((res, view)) => {
                        let n: usize = res.iter().product();
                        if view.shape != out || view.numel() != n {
                            return Err(format!(
                                "attention out view {view} does not cover result {res:?}"
                            ));
                        }
                        check_view(view, n, true)?;
                        Ok(TensorType::new(DType::F32, res.clone()))
                    }
                }
            }
            Op::Pad { pads, mode, .. } => {
                let r = a.rank();
                if pads.len() != 2 * r {
                    return Err(format!(
                        "pads has {} entries, expected {}",
                        pads.len(),
                        2 * r
                    ));
                }
                let mut out = Vec::with_capacity(r);
                for i in 0..r {
                    let d = a.shape[i] as i64 + pads[i] + pads[i + r];
                    if d < 0 {
                        return Err(format!("padding makes dim {i} negative"));
                    }
                    if *mode != PadMode::Constant && a.shape[i] == 0 && d > 0 {
                        return Err("cannot reflect/edge-pad an empty dim".into());
                    }
                    if *mode == PadMode::Reflect
                        && (pads[i] >= a.shape[i] as i64 || pads[i + r] >= a.shape[i] as i64)
                    {
                        return Err(format!("reflect padding of dim {i} exceeds its size - 1"));
                    }
                    out.push(d as usize);
                }
                Ok(TensorType::new(a.dtype, out))
            }
        }
    }
}

fn window_attrs(w: &Window) -> String {
    let mut s = format!(
        "kernel={:?} strides={:?} pads={:?} dilations={:?}",
        w.kernel, w.strides, w.pads, w.dilations
    );
    if w.ceil_mode {
        s.push_str(" ceil_mode=true");
    }
    s
}

fn expect_dtype(t: &TensorType, d: DType, what: &str) -> Result<(), String> {
    if t.dtype != d {
        return Err(format!("{what} must be {d}, got {}", t.dtype));
    }
    Ok(())
}

/// A view inside a buffer of `numel` elements (with unit column stride
/// where `unit` says so).
fn check_view(v: &View, numel: usize, unit: bool) -> Result<(), String> {
    let r = v.shape.len();
    let cols_ok = !unit || (r > 0 && v.stride_or(r - 1, 1) == 1);
    if v.strides.len() != r || r == 0 || !cols_ok || v.extent() > numel {
        return Err(format!("view {v} does not fit a buffer of {numel}"));
    }
    Ok(())
}

fn check_axis(axis: usize, rank: usize) -> Result<(), String> {
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(())
}

/// Result shape of attention, checking operand shapes (see [`Op::Attention`]).
pub fn attention_shape(
    q: &[usize],
    k: &[usize],
    v: &[usize],
    mask: Option<&[usize]>,
) -> Result<Vec<usize>, String> {
    let r = q.len();
    if r < 3 || k.len() != r || v.len() != r {
        return Err(format!(
            "attention needs q, k, v of equal rank >= 3, got {q:?}, {k:?}, {v:?}"
        ));
    }
    let (lq, d) = (q[r - 2], q[r - 1]);
    let (dk, lk) = (k[r - 2], k[r - 1]);
    if d != dk || v[r - 2] != lk {
        return Err(format!(
            "attention: q {q:?}, kᵀ {k:?}, v {v:?} disagree (q·kᵀ needs equal D, v needs Lk rows)"
        ));
    }
    for i in 0..r - 2 {
        if k[i] != v[i] {
            return Err(format!(
                "attention: k and v batch dims differ: {k:?} vs {v:?}"
            ));
        }
        let grouped = i == r - 3 && k[i] != 0 && q[i].is_multiple_of(k[i]);
        if k[i] != q[i] && k[i] != 1 && !grouped {
            return Err(format!(
                "attention: batch dim {i} of k ({}) neither matches q ({}) nor divides it",
                k[i], q[i]
            ));
        }
    }
    let mut out = q.to_vec();
    out[r - 1] = v[r - 1];
    if let Some(m) = mask {
        let mut scores = q[..r - 2].to_vec();
        scores.extend([lq, lk]);
        let b = broadcast_shapes(m, &scores)?;
        if b != scores {
            return Err(format!(
                "attention mask {m:?} does not broadcast to the scores {scores:?}"
            ));
        }
    }
    Ok(out)
}

/// numpy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(format!("shapes {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(out)
}

/// numpy `matmul` result shape.
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    if a.is_empty() || b.is_empty() {
        return Err("matmul operands must have rank >= 1".into());
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k1) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k1 != k2 {
        return Err(format!("matmul inner dimensions differ: {a:?} x {b:?}"));
    }
    let mut out = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attrs = self.attrs();
        if attrs.is_empty() {
            f.write_str(self.name())
        } else {
            write!(f, "{} {{{attrs}}}", self.name())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32t(s: &[usize]) -> TensorType {
        TensorType::new(DType::F32, s.to_vec())
    }

    #[test]
    fn broadcasting() {
        assert_eq!(
            broadcast_shapes(&[2, 1, 3], &[4, 1]).unwrap(),
            vec![2, 4, 3]
        );
        assert!(broadcast_shapes(&[2, 3], &[4]).is_err());
    }

    #[test]
    fn matmul_shapes() {
        assert_eq!(
            matmul_shape(&[2, 1, 3, 4], &[5, 4, 6]).unwrap(),
            vec![2, 5, 3, 6]
        );
        assert_eq!(matmul_shape(&[4], &[4, 6]).unwrap(), vec![6]);
        assert_eq!(matmul_shape(&[3, 4], &[4]).unwrap(), vec![3]);
    }

    #[test]
    fn conv_and_pool_shapes() {
        let w = Window {
            kernel: vec![3, 3],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            ceil_mode: false,
        };
        let conv = Op::Conv {
            window: w.clone(),
            group: 1,
        };
        let t = conv
            .infer(&[&f32t(&[1, 3, 224, 224]), &f32t(&[64, 3, 3, 3])])
            .unwrap();
        assert_eq!(t.shape, vec![1, 64, 112, 112]);
        let pool = Op::Pool {
            kind: PoolKind::Max,
            window: Window {
                ceil_mode: true,
                pads: vec![0; 4],
                ..w
            },
        };
        assert_eq!(
            pool.infer(&[&f32t(&[1, 1, 5, 5])]).unwrap().shape,
            vec![1, 1, 2, 2]
        );
    }

    #[test]
    fn bad_group_is_an_error() {
        let w = Window {
            kernel: vec![1],
            strides: vec![1],
            dilations: vec![1],
            pads: vec![0, 0],
            ceil_mode: false,
        };
        let conv = Op::Conv {
            window: w,
            group: 3,
        };
        assert!(conv.infer(&[&f32t(&[1, 4, 8]), &f32t(&[6, 1, 1])]).is_err());
    }
}
