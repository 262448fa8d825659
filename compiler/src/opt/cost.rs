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
    pub l1_bytes: usize,
    pub l2_bytes: usize,
    /// What one core's loads sustain from L2 (GB/s): the GEMM tiles' A rows
    /// and B panels stream at this rate when K is deep. (AVX-512: 6×4 tiles,
    /// 280 B per K step, measured 3–6% slower than 8×3 ones, 224 B, on
    /// [128, 768]·[768, 3072] and 1024³ products.)
    pub l2_stream_gbs: f64,
    /// Bandwidth in GB/s when the working set fits L2, and from DRAM.
    pub l2_gbs: f64,
    pub dram_gbs: f64,
    pub cores: usize,
    /// The assembled GEMM kernels' level, whose register tiles and row
    /// blocks the optimizer chooses (None: fixed Cranelift tiles).
    pub asm_gemm: Option<crate::codegen::x86::Level>,
    /// The optimizer offers the direct conv on channel-blocked tensors
    /// (assembled for AVX-512 only).
    pub blocked_conv: bool,
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
            l1_bytes: 48 << 10,
            l2_bytes: 2 << 20,
            l2_stream_gbs: 56.0,
            l2_gbs: 170.0,
            dram_gbs: 15.0,
            cores: 2,
            asm_gemm: Some(crate::codegen::x86::Level::Avx512),
            blocked_conv: true,
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
            l1_bytes: 32 << 10,
            l2_bytes: 1 << 20,
            l2_stream_gbs: 48.0,
            l2_gbs: 120.0,
            dram_gbs: 12.0,
            cores: 2,
            asm_gemm: Some(crate::codegen::x86::Level::Avx2Fma),
            blocked_conv: false,
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
            l1_bytes: 32 << 10,
            l2_bytes: 1 << 20,
            l2_stream_gbs: 48.0,
            l2_gbs: 100.0,
            dram_gbs: 12.0,
            cores: 2,
            asm_gemm: None,
            blocked_conv: false,
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
            l1_bytes: 64 << 10,
            l2_bytes: 1 << 20,
            l2_stream_gbs: 48.0,
            l2_gbs: 120.0,
            dram_gbs: 20.0,
            cores: 4,
            asm_gemm: None,
            blocked_conv: false,
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
/// `NNC_FORCE_CONV=blocked` (a measurement switch: forced plans against
/// the model's choice) prices every NCHW conv 1000× so extraction takes
/// the blocked direct conv wherever it is offered.
pub fn op_ns(m: &Machine, op: &Op, args: &[&TensorType], out: &TensorType) -> f64 {
    let t = model_ns(m, op, args, out);
    if matches!(op, Op::Conv { .. } | Op::ConvImpl { .. }) && forced_conv() == Some("blocked") {
        return 1000.0 * t;
    }
    t
}

/// The `NNC_FORCE_CONV` measurement switch (read once per process): the
/// conv algorithm a forced plan uses wherever it applies.
pub fn forced_conv() -> Option<&'static str> {
    static FORCED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FORCED
        .get_or_init(|| std::env::var("NNC_FORCE_CONV").ok())
        .as_deref()
}

fn model_ns(m: &Machine, op: &Op, args: &[&TensorType], out: &TensorType) -> f64 {
    let in_bytes: usize = args.iter().map(|t| t.bytes()).sum();
    let mem = m.mem_ns(in_bytes + out.bytes());
    let n = out.numel() as f64;
    // Every kernel call has a fixed cost (call, loop setup).
    let launch = 5.0;
    launch
        + match op {
            Op::Reshape { .. } => return 0.0, // an alias
            Op::MatMul | Op::Gemm { .. } | Op::Tiled { .. } => {
                let k = match op.base() {
                    Op::Gemm { trans_a: true, .. } => args[0].shape[0],
                    _ => *args[0].shape.last().unwrap_or(&1),
                };
                // On the assembled kernels a 2-D product is priced by its
                // register tile and row block; an untiled one by the rule's
                // tile, a hair above so extraction shows the choice.
                let dims = gemm_dims(op.base(), args, out)
                    .filter(|&(mm, nn, kk)| !crate::codegen::gemm_runs_inline(mm, nn, kk));
                let tiled = match (m.asm_gemm, dims) {
                    (Some(level), Some((mm, nn, kk))) => Some(match op {
                        Op::Tiled { tile, .. } => gemm_tile_ns(m, mm, nn, kk, *tile),
                        _ => {
                            let rule = crate::codegen::x86::rule_gemm_tile(mm, nn, kk, true, level);
                            1.0001 * gemm_tile_ns(m, mm, nn, kk, rule)
                        }
                    }),
                    _ => None,
                };
                let flops = 2.0 * n * k as f64;
                if let Some(t) = tiled {
                    let epilogue = match args.get(3) {
                        Some(r) => m.mem_ns(r.bytes() + out.bytes()),
                        None => 0.0,
                    };
                    return launch + t + epilogue;
                }
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
            // A layout change is a transpose of each channel block against
            // its pixels.
            Op::ToBlocked { .. } | Op::FromBlocked => 2.0 * mem,
            Op::ConvBlocked { window, tile, .. } => {
                let act: usize = [0, 3]
                    .iter()
                    .filter_map(|&i| args.get(i))
                    .map(|t| t.bytes())
                    .sum();
                direct_conv_ns(m, window, args, out, *tile) + m.mem_ns(act + out.bytes())
            }
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

/// `(M, N, K)` of a MatMul/Gemm that runs as one 2-D GEMM (B is a matrix;
/// A's leading dims fold into M), the products the optimizer tiles.
pub fn gemm_dims(op: &Op, args: &[&TensorType], out: &TensorType) -> Option<(usize, usize, usize)> {
    let (a, b) = (args.first()?, args.get(1)?);
    match op {
        Op::MatMul if b.rank() == 2 && a.rank() >= 2 => {
            let k = b.shape[0];
            Some((a.numel() / k.max(1), b.shape[1], k))
        }
        Op::Gemm { trans_a, .. } => {
            let k = if *trans_a { a.shape[0] } else { a.shape[1] };
            Some((out.shape[0], out.shape[1], k))
        }
        _ => None,
    }
}

/// One `mm×n×k` GEMM on the assembled kernels with `t`'s register tile and
/// row block. Per K step a `r×v` tile issues r·v FMAs, r broadcasts and v
/// B loads: on two FMA and two load ports it takes max(r·v, r + v)/2
/// cycles, at least 4 (the FMA latency over too few accumulator chains),
/// and at least its bytes over the core's L2 stream rate; tails (rows past the last full tile, a narrow last panel) run
/// as smaller tiles. Each row block of A is reread for every column panel
/// and all of B once per row block, from L2 when the block fits half of
/// it; those streams overlap the FMAs (prefetched), so the product costs
/// the larger of the two. Each tile also loads and stores its C once.
pub fn gemm_tile_ns(m: &Machine, mm: usize, n: usize, k: usize, t: crate::ir::GemmTile) -> f64 {
    let lanes = m.vector_lanes.max(1);
    let (mr, nv) = (t.mr.clamp(1, mm.max(1)), t.nv.max(1));
    let nr = nv * lanes;
    // A's rows and B's panel stream from L2 unless the panel fits L1.
    let b_in_l1 = 4 * k * nr <= m.l1_bytes / 2;
    let l2_bytes_per_cycle = m.l2_stream_gbs / (m.gemm_gflops / (4.0 * lanes as f64));
    let cyc = |r: usize, v: usize| {
        let bytes = 4 * (r + if b_in_l1 { 0 } else { v * lanes });
        (((r * v) as f64).max((r + v) as f64).max(8.0) / 2.0).max(bytes as f64 / l2_bytes_per_cycle)
    };
    let (full_rows, tail_rows) = (mm / mr, mm % mr);
    let (full_panels, tail_vecs) = (n / nr, (n % nr).div_ceil(lanes));
    let row = |r: usize| {
        full_panels as f64 * cyc(r, nv)
            + if tail_vecs > 0 {
                cyc(r, tail_vecs)
            } else {
                0.0
            }
    };
    let mut per_k = full_rows as f64 * row(mr);
    if tail_rows > 0 {
        per_k += row(tail_rows);
    }
    let tiles = (full_rows + (tail_rows > 0) as usize) * (full_panels + (tail_vecs > 0) as usize);
    // Cycles per ns at peak: 2 FMA ports × lanes × 2 flops.
    let ghz = m.gemm_gflops / (4.0 * lanes as f64);
    let compute = (k as f64 * per_k + tiles as f64 * 2.0 * (mr * nv) as f64) / ghz;
    let mc = t.mc.clamp(mr, mm.max(mr));
    let bw = |bytes: usize| {
        if bytes <= m.l2_bytes / 2 {
            m.l2_gbs
        } else {
            m.dram_gbs
        }
    };
    let panels = (full_panels + (tail_vecs > 0) as usize) as f64;
    let row_blocks = mm.div_ceil(mc) as f64;
    let a = panels * (4 * mm * k) as f64 / bw(4 * mc * k);
    let b = row_blocks * (4 * k * n) as f64 / bw(4 * k * n);
    compute.max(a + b) + m.mem_ns(4 * mm * n)
}

/// The direct blocked conv with `tile` (None: the kernel's rule) on
/// `[N, C/16, H, W, 16]` input and `[N, M/16, OH, OW, 16]` output. Per input
/// lane and tap a tile of `r` pixels × `b` blocks issues r·b FMAs, `b`
/// weight loads and `r` broadcasts: max(r·b, r + b)/2 cycles, at least 4
/// (FMA latency), and when the group's weights neither fit L1 nor are
/// chunked, at least their 64·b bytes over the L2 stream rate. Only taps
/// inside the input are issued. Chunked input channels reload and store
/// the partial sums once per chunk and prefetch the weights behind the
/// FMAs (so their one pass from memory overlaps); unchunked, that pass
/// adds. Loop overhead: 6% (measured: 94–96% of the FMA peak on executed
/// FMAs, ResNet-18's 3×3 convs).
pub fn direct_conv_ns(
    m: &Machine,
    w: &Window,
    args: &[&TensorType],
    out: &TensorType,
    tile: Option<crate::ir::DirectTile>,
) -> f64 {
    use crate::codegen::x86::dconv;
    let (x, ws) = (&args[0].shape, &args[1].shape);
    if x.len() != 5 || out.rank() != 5 || w.spatial_rank() != 2 {
        return f64::INFINITY;
    }
    let (n, mb, oh, ow) = (out.shape[0], out.shape[1], out.shape[2], out.shape[3]);
    let c = ws[1];
    let nib = c.div_ceil(dconv::CB);
    let t = match tile {
        Some(t) => t,
        None => dconv::rule_tile(&crate::codegen::blocked::spec(
            w, x, ws, &out.shape, false, false, None,
        )),
    };
    // Σ over output positions of the taps that land inside the input.
    let valid = |d: usize, len: usize, olen: usize| -> usize {
        (0..olen)
            .map(|o| {
                (0..w.kernel[d])
                    .filter(|&k| {
                        let i =
                            (o * w.strides[d] + k * w.dilations[d]) as isize - w.pads[d] as isize;
                        i >= 0 && (i as usize) < len
                    })
                    .count()
            })
            .sum()
    };
    let taps = (valid(0, x[2], oh) * valid(1, x[3], ow)) as f64;
    let lanes = dconv::CB;
    let ghz = m.gemm_gflops / (4.0 * lanes as f64);
    let l2_bytes_per_cycle = m.l2_stream_gbs / ghz;
    let chunked = t.kc < nib;
    let tiles_row = ow.div_ceil(t.rw.max(1));
    let r = ow.div_ceil(tiles_row);
    let group = |b: usize| -> f64 {
        let weights = b * c * ws[2] * ws[3] * lanes * 4;
        let stream = if !chunked && weights > m.l1_bytes {
            (64 * b) as f64 / l2_bytes_per_cycle
        } else {
            0.0
        };
        let cyc = ((r * b) as f64).max((r + b) as f64).max(8.0) / 2.0;
        let steps = c as f64 * taps / r as f64;
        let chunks = nib.div_ceil(t.kc.max(1));
        let sums = if chunked {
            (chunks * oh * tiles_row * r * b) as f64
        } else {
            0.0
        };
        steps * cyc.max(stream) + sums
    };
    let nb = t.nb.clamp(1, mb.max(1));
    let mut cycles = (mb / nb) as f64 * group(nb);
    if mb % nb > 0 {
        cycles += group(mb % nb);
    }
    let compute = n as f64 * cycles / ghz / 0.94;
    let weights = args[1].bytes() as f64 / m.dram_gbs;
    if chunked {
        compute.max(weights)
    } else {
        compute + weights
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
