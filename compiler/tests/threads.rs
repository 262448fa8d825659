//! Thread tests: every kernel family that splits over `nnc_threads` is run
//! on shapes large enough to split, with NULL threads and with a real pool
//! (`nnc_runtime::ThreadPool`) of 2 and 4 threads. The threaded results
//! must be bit-identical to the single-threaded ones (tasks own disjoint
//! outputs and never split a reduction), and the single-threaded result
//! must match the reference evaluator (the serial path of a split kernel is
//! new code too).

use nnc_compiler::codegen::x86::Level;
use nnc_compiler::ir::{
    eval, BinaryOp, ConvAlgo, F32Bits, Graph, Op, PadMode, PoolKind, ReduceOp, Tensor, TensorData,
    UnaryOp, Window,
};
use nnc_compiler::jit::JitModel;
use nnc_compiler::pipeline;
use nnc_runtime::ThreadPool;

/// xorshift64* (as in kernels.rs): deterministic test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> f32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let u = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        (2.0 * u - 1.0) as f32 * 2.0
    }
    fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::f32(shape.to_vec(), (0..n).map(|_| self.next()).collect()).unwrap()
    }
}

enum Arg {
    In(Tensor),
    Const(Tensor),
}

fn win(kernel: &[usize], strides: &[usize], pads: &[usize]) -> Window {
    Window {
        kernel: kernel.to_vec(),
        strides: strides.to_vec(),
        dilations: vec![1; kernel.len()],
        pads: pads.to_vec(),
        ceil_mode: false,
    }
}

/// 64-byte aligned buffer.
fn aligned(len: usize, byte: u8) -> Vec<[u8; 64]> {
    vec![[byte; 64]; len.div_ceil(64).max(1)]
}

/// Runs the compiled model once; returns the output bytes.
fn run(
    model: &JitModel,
    inputs: &[Vec<u8>],
    out_sizes: &[usize],
    pool: Option<&ThreadPool>,
) -> Vec<Vec<u8>> {
    let ins: Vec<Vec<[u8; 64]>> = inputs
        .iter()
        .map(|b| {
            let mut v = aligned(b.len(), 0);
            v.as_flattened_mut()[..b.len()].copy_from_slice(b);
            v
        })
        .collect();
    let mut outs: Vec<Vec<[u8; 64]>> = out_sizes.iter().map(|&n| aligned(n, 0xA5)).collect();
    let in_ptrs: Vec<*const u8> = ins.iter().map(|b| b.as_flattened().as_ptr()).collect();
    let out_ptrs: Vec<*mut u8> = outs
        .iter_mut()
        .map(|b| b.as_flattened_mut().as_mut_ptr())
        .collect();
    let threads = pool.map(|p| p.as_nnc_threads());
    let tp = threads
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const _ as *const u8);
    // SAFETY: buffers have their tensors' sizes and outlive the call; the
    // pool outlives it too.
    let st = unsafe { model.run_raw_with_threads(&in_ptrs, &out_ptrs, tp) };
    assert_eq!(st, 0, "run status");
    outs.iter()
        .zip(out_sizes)
        .map(|(b, &n)| b.as_flattened()[..n].to_vec())
        .collect()
}

/// Builds `op(args)`, checks it splits, matches the reference and gives
/// the same bits on 1, 2 and 4 threads. `terms`: summands per output
/// element (scales the tolerance against the f64 reference).
fn check(
    pools: &[ThreadPool],
    failures: &mut Vec<String>,
    name: &str,
    op: Op,
    args: Vec<Arg>,
    terms: usize,
) {
    check_capped(pools, failures, name, op, args, terms, Some(Level::Avx512))
}

/// [`check`] with the assembled kernels capped at `cap` (None: none).
fn check_capped(
    pools: &[ThreadPool],
    failures: &mut Vec<String>,
    name: &str,
    op: Op,
    args: Vec<Arg>,
    terms: usize,
    cap: Option<Level>,
) {
    let mut g = Graph::new("t");
    let mut ids = Vec::new();
    let mut inputs = Vec::new();
    for (i, a) in args.into_iter().enumerate() {
        match a {
            Arg::In(t) => {
                ids.push(g.add_input(format!("x{i}"), t.ty()));
                inputs.push(t);
            }
            Arg::Const(t) => ids.push(g.add_const(format!("c{i}"), t)),
        }
    }
    let y = g
        .add_op("y", op, &ids)
        .unwrap_or_else(|e| panic!("{name}: {}", e.0));
    g.add_output("y", y);
    let want = eval::eval_graph(&g, &inputs).unwrap_or_else(|e| panic!("{name}: reference: {e}"));
    let (pg, plan) = pipeline::prepare(g).unwrap_or_else(|e| panic!("{name}: prepare: {e}"));
    let model = JitModel::compile_capped(&pg, &plan, cap)
        .unwrap_or_else(|e| panic!("{name}: compile: {e}"));
    if model.task_functions == 0 {
        failures.push(format!("{name}: did not split (no task function)"));
    }
    let in_bytes: Vec<Vec<u8>> = inputs.iter().map(|t| t.to_le_bytes()).collect();
    let sizes: Vec<usize> = pg.outputs.iter().map(|o| pg.ty(o.value).bytes()).collect();
    let base = run(&model, &in_bytes, &sizes, None);
    // Single-threaded result vs the reference.
    match (&want[0].data, want[0].dtype()) {
        (TensorData::F32(w), _) => {
            let got: Vec<f32> = base[0]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let atol = 1e-5 + 2e-6 * terms as f64;
            let bad = got.iter().zip(w).position(|(&a, &b)| {
                !((a as f64 - b as f64).abs() <= atol + 1e-4 * (b as f64).abs()
                    || (a.is_nan() && b.is_nan()))
            });
            if let Some(i) = bad {
                failures.push(format!(
                    "{name}: element {i}: got {}, want {}",
                    got[i], w[i]
                ));
            }
        }
        _ => {
            if base[0] != want[0].to_le_bytes() {
                failures.push(format!("{name}: integer output differs from the reference"));
            }
        }
    }
    for pool in pools {
        for rep in 0..3 {
            let got = run(&model, &in_bytes, &sizes, Some(pool));
            if got != base {
                let i = got[0]
                    .iter()
                    .zip(&base[0])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                failures.push(format!(
                    "{name}: {} threads (run {rep}) differ from 1 thread at byte {i}",
                    pool.num_threads()
                ));
                break;
            }
        }
    }
}

#[test]
fn kernels_split_over_threads_bit_identically() {
    let pools = [ThreadPool::new(2), ThreadPool::new(4)];
    let mut rng = Rng::new(5);
    let mut f = Vec::new();
    let f = &mut f;
    let gemm = |alpha: f32, beta: f32, trans_a: bool, trans_b: bool| Op::Gemm {
        alpha: F32Bits::new(alpha),
        beta: F32Bits::new(beta),
        trans_a,
        trans_b,
        relu: false,
    };

    // GEMM: column panels (N ≥ M), pre-packed and run-time B, bias shapes.
    for consts in [true, false] {
        let mk = |t: Tensor| if consts { Arg::Const(t) } else { Arg::In(t) };
        check(
            &pools,
            f,
            &format!("gemm 64x256x128 const {consts}"),
            gemm(1.0, 1.0, false, false),
            vec![
                Arg::In(rng.tensor(&[64, 128])),
                mk(rng.tensor(&[128, 256])),
                mk(rng.tensor(&[256])),
            ],
            128,
        );
        check(
            &pools,
            f,
            &format!("gemm trans_b alpha beta row bias, const {consts}"),
            gemm(0.5, 2.0, false, true),
            vec![
                Arg::In(rng.tensor(&[64, 128])),
                mk(rng.tensor(&[250, 128])),
                mk(rng.tensor(&[64, 1])),
            ],
            128,
        );
        // Rows (M > N), with a tail block; transposed A.
        check(
            &pools,
            f,
            &format!("gemm 300x40x200 rows const {consts}"),
            gemm(1.0, 1.0, false, false),
            vec![
                Arg::In(rng.tensor(&[300, 200])),
                mk(rng.tensor(&[200, 40])),
                mk(rng.tensor(&[300, 40])),
            ],
            200,
        );
        check(
            &pools,
            f,
            &format!("gemm trans_a 300x50x96 const {consts}"),
            gemm(1.5, 0.0, true, false),
            vec![Arg::In(rng.tensor(&[96, 300])), mk(rng.tensor(&[96, 50]))],
            96,
        );
        // A one-column last piece (below the size that stays inline):
        // it must still take the whole GEMM's code path.
        check(
            &pools,
            f,
            &format!("gemm 64x257x256 one-column tail, const {consts}"),
            gemm(1.0, 1.0, false, false),
            vec![
                Arg::In(rng.tensor(&[64, 256])),
                mk(rng.tensor(&[256, 257])),
                mk(rng.tensor(&[257])),
            ],
            256,
        );
        // Few rows, many columns (wide tiles), ragged N.
        check(
            &pools,
            f,
            &format!("matmul 3x512x1000 const {consts}"),
            Op::MatMul,
            vec![Arg::In(rng.tensor(&[3, 512])), mk(rng.tensor(&[512, 1000]))],
            512,
        );
    }
    // Batched matmul: entries as tasks; shared B merged into one GEMM; broadcast A.
    check(
        &pools,
        f,
        "matmul batch 4",
        Op::MatMul,
        vec![
            Arg::In(rng.tensor(&[4, 64, 96])),
            Arg::In(rng.tensor(&[4, 96, 80])),
        ],
        96,
    );
    check(
        &pools,
        f,
        "matmul shared B",
        Op::MatMul,
        vec![
            Arg::In(rng.tensor(&[3, 64, 96])),
            Arg::Const(rng.tensor(&[96, 80])),
        ],
        96,
    );
    check(
        &pools,
        f,
        "matmul broadcast A",
        Op::MatMul,
        vec![
            Arg::In(rng.tensor(&[2, 1, 64, 96])),
            Arg::In(rng.tensor(&[2, 5, 96, 80])),
        ],
        96,
    );

    // Convolutions: one chunk (GEMM splits), chunks as tasks with their own
    // im2col slots, groups, pointwise, depthwise.
    let conv3 = win(&[3, 3], &[1, 1], &[1, 1, 1, 1]);
    check(
        &pools,
        f,
        "conv one chunk",
        Op::Conv {
            window: conv3.clone(),
            group: 1,
        },
        vec![
            Arg::In(rng.tensor(&[1, 16, 32, 32])),
            Arg::Const(rng.tensor(&[32, 16, 3, 3])),
            Arg::Const(rng.tensor(&[32])),
        ],
        144,
    );
    for chunk_rows in [4, 3] {
        check(
            &pools,
            f,
            &format!("conv im2col chunk_rows {chunk_rows}"),
            Op::ConvImpl {
                window: conv3.clone(),
                group: 1,
                algo: ConvAlgo::Im2col { chunk_rows },
                relu: false,
                pool: None,
            },
            vec![
                Arg::In(rng.tensor(&[1, 16, 24, 32])),
                Arg::Const(rng.tensor(&[32, 16, 3, 3])),
                Arg::Const(rng.tensor(&[32])),
            ],
            144,
        );
    }
    // A narrow chunk (N = 49) as the transposed product with K split in
    // two slices, added onto a fused residual, then relu.
    check(
        &pools,
        f,
        "conv im2col transposed residual relu",
        Op::ConvImpl {
            window: conv3.clone(),
            group: 1,
            algo: ConvAlgo::Im2col { chunk_rows: 7 },
            relu: true,
            pool: None,
        },
        vec![
            Arg::In(rng.tensor(&[1, 300, 7, 7])),
            Arg::Const(rng.tensor(&[128, 300, 3, 3])),
            Arg::Const(rng.tensor(&[128])),
            Arg::In(rng.tensor(&[1, 128, 7, 7])),
        ],
        2701,
    );
    // The transposed product in one K slice with a per-channel bias:
    // tasks own 128 (2 threads) or 64 (4 threads) output channels.
    check(
        &pools,
        f,
        "conv im2col transposed bias relu",
        Op::ConvImpl {
            window: conv3.clone(),
            group: 1,
            algo: ConvAlgo::Im2col { chunk_rows: 7 },
            relu: true,
            pool: None,
        },
        vec![
            Arg::In(rng.tensor(&[1, 64, 7, 7])),
            Arg::Const(rng.tensor(&[256, 64, 3, 3])),
            Arg::Const(rng.tensor(&[256])),
        ],
        576,
    );
    // 7 chunks of 8 rows serially, 8 chunks of 7 as tasks; with relu.
    check(
        &pools,
        f,
        "conv im2col 56 rows relu",
        Op::ConvImpl {
            window: conv3.clone(),
            group: 1,
            algo: ConvAlgo::Im2col { chunk_rows: 8 },
            relu: true,
            pool: None,
        },
        vec![
            Arg::In(rng.tensor(&[1, 8, 56, 56])),
            Arg::Const(rng.tensor(&[16, 8, 3, 3])),
            Arg::Const(rng.tensor(&[16])),
        ],
        72,
    );
    check(
        &pools,
        f,
        "conv grouped batch 2",
        Op::ConvImpl {
            window: win(&[3, 3], &[2, 1], &[1, 0, 1, 2]),
            group: 2,
            algo: ConvAlgo::Im2col { chunk_rows: 3 },
            relu: false,
            pool: None,
        },
        vec![
            Arg::In(rng.tensor(&[2, 16, 24, 24])),
            Arg::Const(rng.tensor(&[32, 8, 3, 3])),
        ],
        72,
    );
    // Narrow 7×7 chunks as the transposed product (its GEMM splits), one
    // with enough channels for the im2col to split over channels; stride 2.
    for (c, m, s) in [(64, 128, 1), (256, 64, 1), (64, 64, 2)] {
        let hw = 7 * s;
        check(
            &pools,
            f,
            &format!("conv {c}->{m} 7x7 out stride {s}"),
            Op::ConvImpl {
                window: win(&[3, 3], &[s, s], &[1, 1, 1, 1]),
                group: 1,
                algo: ConvAlgo::Im2col { chunk_rows: 7 },
                relu: true,
                pool: None,
            },
            vec![
                Arg::In(rng.tensor(&[1, c, hw, hw])),
                Arg::Const(rng.tensor(&[m, c, 3, 3])),
                Arg::Const(rng.tensor(&[m])),
            ],
            9 * c,
        );
    }
    // Max pools over many planes (vectorized rows, planes as tasks).
    for (k, st, p) in [(2, 2, 0), (3, 2, 1)] {
        check(
            &pools,
            f,
            &format!("max pool {k}x{k} s{st} p{p}"),
            Op::Pool {
                kind: PoolKind::Max,
                window: win(&[k, k], &[st, st], &[p, p, p, p]),
            },
            vec![Arg::In(rng.tensor(&[2, 64, 26, 37]))],
            1,
        );
    }
    check(
        &pools,
        f,
        "conv pointwise batch 4",
        Op::ConvImpl {
            window: win(&[1, 1], &[1, 1], &[0, 0, 0, 0]),
            group: 1,
            algo: ConvAlgo::Pointwise,
            relu: false,
            pool: None,
        },
        vec![
            Arg::In(rng.tensor(&[4, 32, 16, 16])),
            Arg::Const(rng.tensor(&[64, 32, 1, 1])),
            Arg::Const(rng.tensor(&[64])),
        ],
        32,
    );
    check(
        &pools,
        f,
        "conv pointwise one image",
        Op::ConvImpl {
            window: win(&[1, 1], &[1, 1], &[0, 0, 0, 0]),
            group: 1,
            algo: ConvAlgo::Pointwise,
            relu: false,
            pool: None,
        },
        vec![
            Arg::In(rng.tensor(&[1, 64, 32, 32])),
            Arg::Const(rng.tensor(&[48, 64, 1, 1])),
        ],
        64,
    );
    check(
        &pools,
        f,
        "conv depthwise",
        Op::ConvImpl {
            window: conv3.clone(),
            group: 32,
            algo: ConvAlgo::Depthwise,
            relu: false,
            pool: None,
        },
        vec![
            Arg::In(rng.tensor(&[1, 32, 40, 40])),
            Arg::Const(rng.tensor(&[32, 1, 3, 3])),
            Arg::Const(rng.tensor(&[32])),
        ],
        9,
    );

    // Conv with a fused max pool: item tasks over (image, chunk), and one
    // image (ResNet's stem: overlapping windows, clamped end tiles).
    for (xs, ws, st, pads, pk, pp, rows) in [
        ([8, 1, 28, 28], [32, 1, 3, 3], 1, [0; 4], 2, [0; 4], 1),
        ([4, 32, 13, 13], [64, 32, 3, 3], 1, [0; 4], 2, [0; 4], 5),
        ([1, 3, 64, 64], [64, 3, 7, 7], 2, [3; 4], 3, [1; 4], 4),
        // ResNet's stem: 14 chunks in 8 balanced tasks of 1 or 2 chunks.
        ([1, 3, 224, 224], [64, 3, 7, 7], 2, [3; 4], 3, [1; 4], 4),
        // One item: the GEMM and im2col split instead, the pool follows.
        ([1, 32, 27, 27], [64, 32, 3, 3], 1, [1; 4], 3, [1; 4], 14),
    ] {
        check(
            &pools,
            f,
            &format!("conv x{xs:?} max pool {pk}x{pk} rows {rows}"),
            Op::ConvImpl {
                window: win(&ws[2..], &[st, st], &pads),
                group: 1,
                algo: ConvAlgo::Im2col { chunk_rows: rows },
                relu: true,
                pool: Some(Box::new(win(&[pk, pk], &[2, 2], &pp))),
            },
            vec![
                Arg::In(rng.tensor(&xs)),
                Arg::Const(rng.tensor(&ws)),
                Arg::Const(rng.tensor(&ws[..1])),
            ],
            ws[1] * ws[2] * ws[3],
        );
    }

    // Winograd: 7 chunk items of 4 tile rows, one chunk (its 16 GEMMs
    // split instead), a fused residual, a fused pool over a batch; on the
    // AVX-512 path, and on the portable one (Cranelift transforms) with
    // the Cranelift GEMM and with the AVX2 kernels. Tolerance: 4× the
    // C·9-term accumulation (the transforms).
    let x86 = |f: &str| match f {
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        _ => {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
    };
    let mut caps = vec![(None, "portable")];
    if x86("avx2") {
        caps.push((Some(Level::Avx2Fma), "portable avx2"));
    }
    if x86("avx512f") {
        caps.push((Some(Level::Avx512), "avx512"));
    }
    for (cap, path) in caps {
        for (xs, ws, tile_rows, residual, pool) in [
            ([1, 64, 56, 56], [64, 64, 3, 3], 4, false, false),
            ([1, 128, 14, 14], [128, 128, 3, 3], 7, true, false),
            ([4, 32, 13, 13], [64, 32, 3, 3], 5, false, true),
            ([3, 16, 15, 21], [24, 16, 3, 3], 4, true, false),
        ] {
            let pads = if pool { [0; 4] } else { [1; 4] };
            let mut args = vec![
                Arg::In(rng.tensor(&xs)),
                Arg::Const(rng.tensor(&ws)),
                Arg::Const(rng.tensor(&ws[..1])),
            ];
            if residual {
                args.push(Arg::In(rng.tensor(&[xs[0], ws[0], xs[2], xs[3]])));
            }
            check_capped(
                &pools,
                f,
                &format!("conv winograd ({path}) x{xs:?} rows {tile_rows} residual {residual} pool {pool}"),
                Op::ConvImpl {
                    window: win(&[3, 3], &[1, 1], &pads),
                    group: 1,
                    algo: ConvAlgo::Winograd { tile_rows },
                    relu: true,
                    pool: pool.then(|| Box::new(win(&[2, 2], &[2, 2], &[0; 4]))),
                },
                args,
                4 * ws[1] * 9,
                cap,
            );
        }
    }

    // The blocked direct conv (AVX-512): output-channel groups (whole
    // register tiles, the last group shorter) as tasks, over a batch, with
    // a blocked residual.
    if x86("avx512f") {
        for (xs, ws, residual) in [
            ([1, 16, 14, 14, 16], [512, 256, 3, 3], false),
            ([2, 2, 9, 9, 16], [112, 32, 3, 3], true),
        ] {
            let w = Window {
                kernel: vec![3, 3],
                strides: vec![2, 2],
                dilations: vec![1, 1],
                pads: vec![1; 4],
                ceil_mode: false,
            };
            let oh = w.out_size(0, xs[2]).unwrap();
            let mut args = vec![
                Arg::In(rng.tensor(&xs)),
                Arg::Const(rng.tensor(&ws)),
                Arg::Const(rng.tensor(&ws[..1])),
            ];
            if residual {
                args.push(Arg::In(rng.tensor(&[xs[0], ws[0] / 16, oh, oh, 16])));
            }
            check(
                &pools,
                f,
                &format!("conv blocked x{xs:?} w{ws:?} residual {residual}"),
                Op::ConvBlocked {
                    window: w,
                    relu: true,
                    tile: None,
                },
                args,
                ws[1] * 9,
            );
        }
    }

    // Pooling.
    check(
        &pools,
        f,
        "max pool",
        Op::Pool {
            kind: PoolKind::Max,
            window: win(&[3, 3], &[2, 2], &[1, 1, 1, 1]),
        },
        vec![Arg::In(rng.tensor(&[1, 32, 64, 64]))],
        1,
    );
    check(
        &pools,
        f,
        "avg pool",
        Op::Pool {
            kind: PoolKind::Avg {
                count_include_pad: false,
            },
            window: win(&[2, 2], &[1, 1], &[0, 0, 1, 1]),
        },
        vec![Arg::In(rng.tensor(&[2, 16, 48, 48]))],
        4,
    );

    // Elementwise: contiguous chunks (even and ragged), broadcast rows.
    check(
        &pools,
        f,
        "tanh 76800",
        Op::Unary(UnaryOp::Tanh),
        vec![Arg::In(rng.tensor(&[1, 256, 300]))],
        1,
    );
    check(
        &pools,
        f,
        "exp ragged",
        Op::Unary(UnaryOp::Exp),
        vec![Arg::In(rng.tensor(&[77777]))],
        1,
    );
    check(
        &pools,
        f,
        "add channel broadcast",
        Op::Binary(BinaryOp::Add),
        vec![
            Arg::In(rng.tensor(&[64, 32, 40])),
            Arg::In(rng.tensor(&[32, 1])),
        ],
        1,
    );
    check(
        &pools,
        f,
        "mul row broadcast",
        Op::Binary(BinaryOp::Mul),
        vec![
            Arg::In(rng.tensor(&[3, 200, 300])),
            Arg::Const(rng.tensor(&[300])),
        ],
        1,
    );
    check(
        &pools,
        f,
        "sub few rows",
        Op::Binary(BinaryOp::Sub),
        vec![
            Arg::In(rng.tensor(&[2, 3, 20000])),
            Arg::In(rng.tensor(&[2, 1, 20000])),
        ],
        1,
    );

    // Data movement: strided copies split by their outermost dim.
    check(
        &pools,
        f,
        "transpose",
        Op::Transpose {
            perm: vec![2, 0, 1],
        },
        vec![Arg::In(rng.tensor(&[64, 48, 40]))],
        1,
    );
    check(
        &pools,
        f,
        "transpose heads",
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        vec![Arg::In(rng.tensor(&[1, 128, 12, 64]))],
        1,
    );
    check(
        &pools,
        f,
        "pad",
        Op::Pad {
            pads: vec![0, 1, 2, 0, 3, -1],
            mode: PadMode::Constant,
            value: F32Bits::new(0.5),
        },
        vec![Arg::In(rng.tensor(&[16, 64, 80]))],
        1,
    );
    check(
        &pools,
        f,
        "expand",
        Op::Expand {
            shape: vec![64, 40, 32],
        },
        vec![Arg::In(rng.tensor(&[64, 1, 32]))],
        1,
    );

    // Row-wise reductions and normalizations: whole rows per task.
    check(
        &pools,
        f,
        "softmax last axis",
        Op::Softmax {
            axis: 1,
            log: false,
        },
        vec![Arg::In(rng.tensor(&[256, 512]))],
        512,
    );
    check(
        &pools,
        f,
        "log softmax inner",
        Op::Softmax { axis: 1, log: true },
        vec![Arg::In(rng.tensor(&[8, 64, 200]))],
        64,
    );
    check(
        &pools,
        f,
        "layer norm",
        Op::LayerNorm {
            axis: 1,
            epsilon: F32Bits::new(1e-5),
        },
        vec![
            Arg::In(rng.tensor(&[256, 768])),
            Arg::Const(rng.tensor(&[768])),
            Arg::Const(rng.tensor(&[768])),
        ],
        768,
    );
    check(
        &pools,
        f,
        "instance norm",
        Op::InstanceNorm {
            epsilon: F32Bits::new(1e-5),
        },
        vec![
            Arg::In(rng.tensor(&[2, 32, 40, 40])),
            Arg::Const(rng.tensor(&[32])),
            Arg::Const(rng.tensor(&[32])),
        ],
        1600,
    );
    check(
        &pools,
        f,
        "reduce sum middle",
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![1],
            keepdims: false,
        },
        vec![Arg::In(rng.tensor(&[64, 300, 8]))],
        300,
    );
    check(
        &pools,
        f,
        "reduce max last",
        Op::Reduce {
            op: ReduceOp::Max,
            axes: vec![1],
            keepdims: true,
        },
        vec![Arg::In(rng.tensor(&[512, 256]))],
        1,
    );
    check(
        &pools,
        f,
        "argmax",
        Op::ArgMax {
            axis: 1,
            keepdims: false,
            select_last: false,
        },
        vec![Arg::In(rng.tensor(&[256, 512]))],
        1,
    );

    // Attention: (head, query block) items with their own scratch slots.
    // Small heads and several key blocks (first/later/tail block kernels).
    for (lq, lk, d, causal, mask) in [
        (128, 96, 32, false, true),
        (100, 112, 32, true, false),
        (300, 300, 8, false, true),
        (129, 257, 8, true, false),
    ] {
        let mut args = vec![
            Arg::In(rng.tensor(&[1, 4, lq, d])),
            Arg::In(rng.tensor(&[1, 2, d, lk])),
            Arg::In(rng.tensor(&[1, 2, lk, d])),
        ];
        if mask {
            args.push(Arg::In(rng.tensor(&[1, 1, 1, lk])));
        }
        let op = Op::Attention {
            scale: F32Bits::new(0.2),
            causal,
            softcap: F32Bits::new(0.0),
            views: None,
        };
        check(
            &pools,
            f,
            &format!("attention lq {lq} lk {lk} d {d} causal {causal} mask {mask}"),
            op,
            args,
            96,
        );
    }

    // Attention through strided views (q/v/out in [L, heads·D] layouts).
    for (lq, lk, d) in [(128, 96, 32), (129, 257, 8)] {
        use nnc_compiler::ir::{AttnViews, View};
        let h = 4;
        let view = |shape: [usize; 3], strides: [usize; 3]| View {
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            offset: 0,
        };
        let w = AttnViews {
            q: Some(view([h, lq, d], [d, h * d, 1])),
            kt: Some(View {
                shape: vec![h, d, lk],
                strides: vec![d, 1, h * d],
                offset: 0,
            }),
            v: Some(view([h, lk, d], [d, h * d, 1])),
            out: Some((vec![lq, h * d], view([h, lq, d], [d, h * d, 1]))),
        };
        let args = vec![
            Arg::In(rng.tensor(&[lq, h * d])),
            Arg::In(rng.tensor(&[lk, h * d])),
            Arg::In(rng.tensor(&[lk, h * d])),
        ];
        let op = Op::Attention {
            scale: F32Bits::new(0.2),
            causal: lq == 129,
            softcap: F32Bits::new(0.0),
            views: Some(Box::new(w)),
        };
        check(
            &pools,
            f,
            &format!("attention views lq {lq} lk {lk} d {d}"),
            op,
            args,
            96,
        );
    }

    assert!(f.is_empty(), "{} failures:\n  {}", f.len(), f.join("\n  "));
}
