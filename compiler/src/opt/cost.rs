//! The cost model: estimated nanoseconds per op on the target machine.
//! Compute-bound ops are priced by FLOPs at the kernel's throughput,
//! memory-bound ones by bytes moved at the bandwidth of the cache level the
//! working set fits in. Machine parameters come from the target.

use crate::ir::{ConvAlgo, Op, TensorType, UnaryOp, Window};

/// What the cost model knows about the target machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub name: &'static str,
    /// f32 lanes per vector the GEMM kernels use.
    pub vector_lanes: usize,
    /// Sustained GEMM throughput of one core, GFLOP/s.
    pub gemm_gflops: f64,
    /// Elementwise throughput, G elements/s (vector width × clock, roughly).
    pub elem_gops: f64,
    pub l2_bytes: usize,
    /// Bandwidth in GB/s when the working set fits L2, and from DRAM.
    pub l2_gbs: f64,
    pub dram_gbs: f64,
    pub cores: usize,
    /// The optimizer offers Winograd F(2,3) convs (assembled transforms on
    /// AVX-512, the portable f32x4 ones elsewhere).
    pub winograd: bool,
}

impl Machine {
    /// x86-64 with AVX-512 micro-kernels (Sapphire Rapids-class core).
    pub fn x86_64_avx512() -> Machine {
        Machine {
            name: "x86-64 (AVX-512)",
            vector_lanes: 16,
            gemm_gflops: 180.0,
            elem_gops: 16.0,
            l2_bytes: 2 << 20,
            l2_gbs: 170.0,
            dram_gbs: 15.0,
            cores: 2,
            winograd: true,
        }
    }
    /// x86-64 with AVX2 + FMA micro-kernels.
    pub fn x86_64_avx2() -> Machine {
        Machine {
            name: "x86-64 (AVX2)",
            vector_lanes: 8,
            gemm_gflops: 100.0,
            elem_gops: 8.0,
            l2_bytes: 1 << 20,
            l2_gbs: 120.0,
            dram_gbs: 12.0,
            cores: 2,
            winograd: true,
        }
    }
    /// x86-64 with Cranelift's 128-bit code only.
    pub fn x86_64_sse() -> Machine {
        Machine {
            name: "x86-64 (128-bit)",
            vector_lanes: 4,
            gemm_gflops: 30.0,
            elem_gops: 4.0,
            l2_bytes: 1 << 20,
            l2_gbs: 100.0,
            dram_gbs: 12.0,
            cores: 2,
            winograd: true,
        }
    }
    /// AArch64 with NEON (Neoverse-class core).
    pub fn aarch64() -> Machine {
        Machine {
            name: "aarch64 (NEON)",
            vector_lanes: 4,
            gemm_gflops: 40.0,
            elem_gops: 6.0,
            l2_bytes: 1 << 20,
            l2_gbs: 120.0,
            dram_gbs: 20.0,
            cores: 4,
            winograd: true,
        }
    }

    pub fn mem_ns(&self, bytes: usize) -> f64 {
        let bw = if bytes <= self.l2_bytes {
            self.l2_gbs
        } else {
            self.dram_gbs
        };
        bytes as f64 / bw
    }
}

/// Relative cost of one application of a unary function (1 = an add).
fn unary_weight(u: &UnaryOp) -> f64 {
    use UnaryOp::*;
    match u {
        Exp | Log | Tanh | Erf | Sigmoid | Silu | Gelu | Elu { .. } | Selu { .. } => 12.0,
        _ => 1.0,
    }
}

/// Estimated time of `op` with argument types `args` producing `out`.
pub fn op_ns(m: &Machine, op: &Op, args: &[&TensorType], out: &TensorType) -> f64 {
    let in_bytes: usize = args.iter().map(|t| t.bytes()).sum();
    let mem = m.mem_ns(in_bytes + out.bytes());
    let n = out.numel() as f64;
    // Every kernel call has a fixed cost (call, loop setup).
    let launch = 5.0;
    launch
        + match op {
            Op::Reshape { .. } => return 0.0, // an alias
            Op::MatMul | Op::Gemm { .. } => {
                let k = match op {
                    Op::Gemm { trans_a: true, .. } => args[0].shape[0],
                    _ => *args[0].shape.last().unwrap_or(&1),
                };
                let flops = 2.0 * n * k as f64;
                match args.get(3) {
                    // A residual is one streaming pass (out = C + R) before
                    // the product accumulates into out: priced on its own,
                    // not as part of the GEMM's (often DRAM-sized) working set.
                    Some(r) => {
                        let base: usize = args[..3].iter().map(|t| t.bytes()).sum();
                        flops / m.gemm_gflops
                            + m.mem_ns(base + out.bytes())
                            + m.mem_ns(r.bytes() + out.bytes())
                    }
                    None => flops / m.gemm_gflops + mem,
                }
            }
            Op::Conv { window, group } => {
                // What the kernel does for an unlowered conv, priced a hair
                // above the explicit algorithm so extraction shows the choice.
                let algo = if is_pointwise(window, args, out) {
                    ConvAlgo::Pointwise
                } else {
                    ConvAlgo::Im2col {
                        chunk_rows: usize::MAX,
                    }
                };
                return 1.0001 * (launch + conv_ns(m, window, *group, algo, args, out) + mem);
            }
            #[allow(unreachable_patterns)]
            Op::Conv { window, .. } => {
                let per: usize = args[1].shape[1] * window.kernel.iter().product::<usize>();
                let flops = 2.0 * n * per as f64;
                // im2col writes and rereads the unfolded input unless pointwise.
                let unfold = if window.kernel.iter().all(|&k| k == 1) {
                    0.0
                } else {
                    m.mem_ns(2 * per * out.numel() / out.shape[1].max(1) * 4)
                };
                flops / m.gemm_gflops + mem + unfold
            }
            Op::ConvImpl {
                window,
                group,
                algo: ConvAlgo::Im2col { chunk_rows },
                pool: Some(pw),
                ..
            } => conv_pool_ns(m, window, *group, *chunk_rows, pw, args, out) + mem,
            // The fused pool is free in the output transform: only the
            // pooled tiles are computed.
            Op::ConvImpl {
                algo: ConvAlgo::Winograd { tile_rows },
                pool: Some(_),
                ..
            } => {
                let (mo, c) = (args[1].shape[0], args[1].shape[1]);
                let (th, tw) = (out.shape[2], out.shape[3]);
                winograd_ns(m, c, mo, th, tw, *tile_rows, out.shape[0]) + mem
            }
            Op::ConvImpl {
                window,
                group,
                algo,
                ..
            } => match args.get(3) {
                // A residual: one streaming pass before the GEMMs (as for gemm).
                Some(r) => {
                    let base: usize = args[..3].iter().map(|t| t.bytes()).sum();
                    conv_ns(m, window, *group, *algo, args, out)
                        + m.mem_ns(base + out.bytes())
                        + m.mem_ns(r.bytes() + out.bytes())
                }
                None => conv_ns(m, window, *group, *algo, args, out) + mem,
            },
            Op::Unary(u) => n * unary_weight(u) / m.elem_gops + mem,
            Op::Binary(_) | Op::Where | Op::Cast { .. } => n / m.elem_gops + mem,
            // One pass over memory for the whole chain.
            Op::Fused { expr } => n * expr.work(&unary_weight) / m.elem_gops + mem,
            Op::Softmax { .. } => 16.0 * n / m.elem_gops + 2.0 * mem,
            Op::LayerNorm { .. } | Op::InstanceNorm { .. } => 4.0 * n / m.elem_gops + 2.0 * mem,
            Op::Reduce { .. } | Op::ArgMax { .. } => args[0].numel() as f64 / m.elem_gops + mem,
            Op::Pool { window, .. } => {
                n * window.kernel.iter().product::<usize>() as f64 / m.elem_gops + mem
            }
            // Strided data movement runs below bandwidth.
            Op::GatherElements { .. } => 3.0 * mem,
            Op::Transpose { .. } | Op::Gather { .. } | Op::Tile { .. } | Op::Slice { .. } => {
                2.0 * mem
            }
            Op::Concat { .. } | Op::Expand { .. } | Op::Pad { .. } => mem,
            Op::Attention { views, .. } => {
                // Two products of 2·Lq·Lk·D flops each plus one exp per score;
                // no Lq×Lk matrix goes through memory.
                let ops = [0, 1, 2].map(|i| args[i].shape.as_slice());
                let [q, kt, v] = crate::ir::AttnViews::logical(views.as_deref(), ops);
                let r = q.len();
                let (lk, d, dv) = (kt[r - 1], q[r - 1], v[r - 1]);
                let batch_rows = (q.iter().product::<usize>() / d.max(1)) as f64;
                let flops = 2.0 * batch_rows * lk as f64 * (d + dv) as f64;
                let exps = batch_rows * lk as f64;
                // Both products run on the GEMM kernels; the softmax is one pass.
                flops / m.gemm_gflops + 12.0 * exps / m.elem_gops + mem
            }
        }
}

/// A conv with a fused max pool: per chunk of `chunk_rows` pooled rows the
/// conv rows its windows read (recomputed where chunks overlap, skipped
/// where no window reads them), priced as im2col chunks of that many rows,
/// plus the pooling of the cache-resident tile. The conv output's write
/// and reread, the point of the fusion, are gone.
fn conv_pool_ns(
    m: &Machine,
    w: &Window,
    group: usize,
    chunk_rows: usize,
    pw: &Window,
    args: &[&TensorType],
    out: &TensorType,
) -> f64 {
    let conv = Op::Conv {
        window: w.clone(),
        group,
    };
    let Ok(cy) = conv.infer(&args[..2]) else {
        return f64::INFINITY;
    };
    let (oh, ph) = (cy.shape[2].max(1), out.shape[2].max(1));
    let pr = chunk_rows.clamp(1, ph);
    let pr = if ph.is_multiple_of(pr) { pr } else { ph };
    let rows = ((pr - 1) * pw.strides[0] + (pw.kernel[0] - 1) * pw.dilations[0] + 1).min(oh);
    let computed = rows * (ph / pr);
    let per_row = conv_ns(
        m,
        w,
        group,
        ConvAlgo::Im2col { chunk_rows: rows },
        args,
        &cy,
    ) / oh as f64;
    let tile = 4 * out.shape[1] / group.max(1) * rows * cy.shape[3];
    let pool = out.numel() as f64 * pw.kernel.iter().product::<usize>() as f64 / m.elem_gops;
    per_row * computed as f64 + pool + m.mem_ns(tile) * (out.shape[0] * group * ph / pr) as f64
}

/// A 1×1 conv with unit strides and no padding (output plane = input plane).
pub fn is_pointwise(w: &Window, args: &[&TensorType], out: &TensorType) -> bool {
    w.kernel.iter().all(|&k| k == 1)
        && w.strides.iter().all(|&s| s == 1)
        && w.pads.iter().all(|&p| p == 0)
        && args[0].shape[2..] == out.shape[2..]
}

/// Time of one conv algorithm: FLOPs at the kernel's throughput plus the
/// memory traffic of unfolding (cheap while a chunk fits in L2) and of
/// re-reading the weights once per chunk.
pub fn conv_ns(
    m: &Machine,
    w: &Window,
    group: usize,
    algo: ConvAlgo,
    args: &[&TensorType],
    out: &TensorType,
) -> f64 {
    let taps: usize = w.kernel.iter().product();
    let cin_g = args[1].shape[1];
    let per = cin_g * taps; // K of the GEMM
    let flops = 2.0 * out.numel() as f64 * per as f64;
    let spatial = out.shape[2..].iter().product::<usize>().max(1);
    let oh = if out.rank() >= 4 { out.shape[2] } else { 1 };
    let ow = spatial / oh.max(1);
    let images = out.shape[0] * group;
    let m_g = out.shape[1] / group.max(1);
    match algo {
        ConvAlgo::Winograd { tile_rows } => {
            let (th, tw) = crate::codegen::winograd::tile_grid(oh, ow, None);
            winograd_ns(m, cin_g, m_g, th, tw, tile_rows, images)
        }
        ConvAlgo::Pointwise => flops / m.gemm_gflops,
        ConvAlgo::Depthwise => flops / (4.0 * m.elem_gops),
        ConvAlgo::Im2col { chunk_rows } => {
            let rows = chunk_rows.clamp(1, oh.max(1));
            let chunks = oh.div_ceil(rows) * images;
            let block = 4 * per * rows * ow;
            // unfold: written once, read by the GEMM
            let unfold = 2.0 * m.mem_ns(block) * chunks as f64;
            let weights = m.mem_ns(4 * m_g * per) * chunks as f64;
            // GEMM efficiency: a 4-row tile is wasted on single-filter groups.
            let eff = if m_g < 4 { m_g as f64 / 4.0 } else { 1.0 };
            flops / (m.gemm_gflops * eff) + unfold + weights + 2.0 * chunks as f64
        }
    }
}

/// Winograd F(2,3) over a `th × tw` tile grid in chunks of `tile_rows`
/// tile rows: per chunk 16 GEMMs `[M, C]·[C, np]` (np = the chunk's tiles
/// padded to whole panels; a short K costs a tile store per pass), the
/// transforms as a few vector ops per element of the transformed input and
/// the products (both L2-resident), and the transformed weights (16/9 of
/// the weights) streamed once per chunk.
pub fn winograd_ns(
    m: &Machine,
    c: usize,
    mo: usize,
    th: usize,
    tw: usize,
    tile_rows: usize,
    images: usize,
) -> f64 {
    use crate::codegen::winograd::{gemm_cols, portable_cols, sanitize_rows, transposed};
    let tr = sanitize_rows(th, tile_rows);
    let chunks = (images * th.max(1) / tr) as f64;
    // Narrower machines take the portable path (f32x4 transforms, tile
    // rows padded to groups of 4, ordinary GEMMs). On AVX-512 narrow
    // chunks multiply transposed (no padded columns) and then transpose
    // the products: one more pass over them.
    let portable = m.vector_lanes < 16;
    let np = if portable {
        portable_cols(tr, tw)
    } else {
        gemm_cols(tr * tw, mo, c)
    };
    let flops = 32.0 * (mo * c * np) as f64;
    let eff = c as f64 / (c as f64 + 4.0) * if mo < 4 { mo as f64 / 4.0 } else { 1.0 };
    let gemm = flops / (m.gemm_gflops * eff) + 16.0 * 10.0;
    let (v, p) = (16 * np * c, 16 * np * mo);
    let transpose = if !portable && transposed(tr * tw, mo, c) {
        2.0 * p as f64 / m.elem_gops
    } else {
        0.0
    };
    let transforms = (v + p) as f64 / m.elem_gops + 2.0 * m.mem_ns(4 * (v + p)) + transpose;
    let weights = m.mem_ns(4 * 16 * mo * c);
    chunks * (gemm + transforms + weights)
}
