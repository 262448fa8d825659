//! Kernel tests: every op that `codegen::kernels::check` accepts is built
//! into tiny one-op graphs, JIT-compiled, run on seeded pseudo-random data,
//! and compared elementwise with the f64-accurate reference evaluator
//! (`ir::eval::eval_graph`).
//!
//! Each `#[test]` covers one op family with table-driven cases; a failing
//! case is recorded and the test reports every failure at the end (with the
//! worst element of each), so one run shows the whole picture.
//!
//! Comparison: `|got − ref| ≤ atol + rtol·|ref|` per element, NaN matches
//! NaN and infinities must match exactly; i64/bool results must be equal.
//! Output buffers are pre-filled with a sentinel so elements a kernel never
//! writes are caught. Tolerances are the constants and `*_tol` functions
//! below, each with the reason for its size.

use nnc_compiler::codegen::x86::Level;
use nnc_compiler::ir::{
    eval, BinaryOp, DType, F32Bits, Graph, Op, PadMode, PoolKind, ReduceOp, SliceDim, Tensor,
    TensorData, TensorType, UnaryOp, ValueId, Window,
};
use nnc_compiler::jit::JitModel;
use nnc_compiler::pipeline;
use std::time::Instant;

// ---------------------------------------------------------------------------
// Tolerances.

#[derive(Clone, Copy, Debug)]
struct Tol {
    atol: f64,
    rtol: f64,
}

/// Data movement (copy, transpose, slice, …) must reproduce values exactly.
const EXACT: Tol = Tol {
    atol: 0.0,
    rtol: 0.0,
};
/// Ops with one or two correctly rounded f32 operations per element
/// (add, mul, div, sqrt, max, floor, clip, …): ≤ 1 ulp ≈ 6e-8 relative,
/// with headroom for fma-vs-mul+add differences.
const ROUNDED: Tol = Tol {
    atol: 1e-6,
    rtol: 1e-6,
};
/// Polynomial/rational transcendentals (exp, log, tanh, erf, sigmoid, silu):
/// the dense sweep below measures ≤ a few ulp; 2e-6 relative is ~16 ulp.
const TRANSCENDENTAL: Tol = Tol {
    atol: 1e-6,
    rtol: 2e-6,
};
/// Functions evaluated as a difference of nearly equal numbers in f32
/// (gelu = x·(1+erf) for x ≪ 0, elu/selu = α(eˣ−1) near 0): the relative
/// error there is unbounded by construction (PyTorch's f32 formulas share it),
/// so the absolute part carries the bound (≈ 8 ulp of 1).
const CANCELLING: Tol = Tol {
    atol: 1e-6,
    rtol: 2e-6,
};
/// pow = exp(y·log|x|): the log's error is amplified by |y·log x| ≤ ~8 on
/// the test data, so ~8× the transcendental bound.
const POW: Tol = Tol {
    atol: 1e-6,
    rtol: 2e-5,
};
/// Max/min reductions and pooling select an input: exact.
const SELECT: Tol = EXACT;

/// Per-term absolute error for a k-term dot product or sum of values of
/// magnitude ≲ 3 (products ≲ 9): f32 accumulation error grows ~k·ε·|terms|
/// in the worst case (ε = 1.2e-7); real errors are ~√k smaller, so 1e-6·k
/// is a safe bound that still catches any indexing mistake (errors O(1)).
const ACCUM_ATOL_PER_TERM: f64 = 1e-6;

/// Tolerance for an accumulation of `k` terms, results scaled by `scale`
/// (e.g. |alpha|).
fn accum_tol(k: usize, scale: f64) -> Tol {
    Tol {
        atol: ACCUM_ATOL_PER_TERM * k.max(1) as f64 * scale.max(1.0),
        rtol: 1e-5,
    }
}

/// Softmax over `r` elements: exp error (TRANSCENDENTAL) plus the sum's
/// relative error (~r·ε/4 with 4 vector lanes; bounded by r·ε).
fn softmax_tol(r: usize) -> Tol {
    Tol {
        atol: 1e-6,
        rtol: 4e-6 + r as f64 * 1.2e-7,
    }
}

/// Log-softmax: x − (m + log s); the error is absolute, ~ε·|x − m| + log's.
const LOG_SOFTMAX: Tol = Tol {
    atol: 1e-5,
    rtol: 1e-5,
};

/// Layer/instance norm over `n` elements: mean and variance are f32 sums
/// (relative error ~n·ε), the output is (x−mean)·rstd·scale + bias with
/// magnitude ≲ 3·3 + 3.
fn norm_tol(n: usize) -> Tol {
    Tol {
        atol: 2e-6 * (1.0 + n as f64 * 0.1),
        rtol: 1e-5 + n as f64 * 1.2e-7,
    }
}

/// Dense-sweep bounds (error vs f64) asserted in `transcendental_accuracy`;
/// measured values are printed with `--nocapture`. exp/log/sigmoid measure
/// ≤ 2.5 ulp; tanh and erf are rational approximations at ~5–6 ulp, so the
/// ulp bound is 8 (relative 2e-6 ≈ 17 ulp is the looser, model-level bound).
const SWEEP_MAX_REL: f64 = 2e-6;
const SWEEP_MAX_ULP: f64 = 8.0;
/// gelu on x < 0: ½|x|·(abs error of erf ≈ 3.5e-7) ≤ ~1e-6 for x ≥ −5.5;
/// beyond, erf saturates to −1 and gelu returns −0 (true value < 1e-8).
const SWEEP_GELU_MAX_ABS: f64 = 1.5e-6;

// ---------------------------------------------------------------------------
// Seeded data.

/// xorshift64* generator: deterministic, tiny, good enough for test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.unit()) as f32
    }

    /// Sum of three uniforms on [−1, 1]: bell-shaped, mean 0, variance 1,
    /// confined to [−3, 3].
    fn normalish(&mut self) -> f32 {
        (0..3).map(|_| 2.0 * self.unit() - 1.0).sum::<f64>() as f32
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Normal-ish f32 data in [−3, 3]; never all zeros.
fn randn(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let mut v: Vec<f32> = (0..numel(shape)).map(|_| rng.normalish()).collect();
    if !v.is_empty() && v.iter().all(|&x| x == 0.0) {
        v[0] = 1.5;
    }
    Tensor::f32(shape.to_vec(), v).unwrap()
}

/// Uniform f32 data in [lo, hi).
fn rand_in(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let v = (0..numel(shape)).map(|_| rng.uniform(lo, hi)).collect();
    Tensor::f32(shape.to_vec(), v).unwrap()
}

fn rand_i64(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let v = (0..numel(shape))
        .map(|_| rng.next_u64() as i64 >> 20)
        .collect();
    Tensor::i64(shape.to_vec(), v).unwrap()
}

fn rand_bool(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let v = (0..numel(shape)).map(|_| rng.next_u64() & 1 == 1).collect();
    Tensor::bool(shape.to_vec(), v).unwrap()
}

fn rand_of(rng: &mut Rng, dtype: DType, shape: &[usize]) -> Tensor {
    match dtype {
        DType::F32 => randn(rng, shape),
        DType::I64 => rand_i64(rng, shape),
        DType::Bool => rand_bool(rng, shape),
    }
}

fn f32t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::f32(shape.to_vec(), v).unwrap()
}

fn i64t(shape: &[usize], v: Vec<i64>) -> Tensor {
    Tensor::i64(shape.to_vec(), v).unwrap()
}

// ---------------------------------------------------------------------------
// Graph building, running, comparing.

/// How one operand of a single-op graph is supplied.
enum Arg {
    /// A run-time graph input.
    In(Tensor),
    /// A compile-time constant (embedded weight).
    Const(Tensor),
}

/// `inputs/constants → op → output`; returns the graph and its input data.
fn one_op(op: Op, args: Vec<Arg>) -> Result<(Graph, Vec<Tensor>), String> {
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
    let y = g.add_op("y", op, &ids).map_err(|e| e.0)?;
    g.add_output("y", y);
    Ok((g, inputs))
}

/// Operands from tensors: those whose index is in `consts` become constants.
fn args_with_consts(ts: Vec<Tensor>, consts: &[usize]) -> Vec<Arg> {
    ts.into_iter()
        .enumerate()
        .map(|(i, t)| {
            if consts.contains(&i) {
                Arg::Const(t)
            } else {
                Arg::In(t)
            }
        })
        .collect()
}

/// A 64-byte-aligned byte buffer (never zero-sized, so never NULL-like).
struct Buf {
    words: Vec<[u64; 8]>,
    len: usize,
}

/// Byte pattern written into output buffers before a run.
const SENTINEL: u8 = 0xA5;

impl Buf {
    fn filled(len: usize, byte: u8) -> Buf {
        let n = len.div_ceil(64).max(1);
        let w = u64::from_ne_bytes([byte; 8]);
        Buf {
            words: vec![[w; 8]; n],
            len,
        }
    }

    fn from_bytes(b: &[u8]) -> Buf {
        let mut buf = Buf::filled(b.len(), 0);
        buf.bytes_mut().copy_from_slice(b);
        buf
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the words hold at least `len` initialized bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.len) }
    }
}

fn tensor_from_bytes(ty: &TensorType, b: &[u8]) -> Result<Tensor, String> {
    let data = match ty.dtype {
        DType::F32 => TensorData::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        DType::I64 => TensorData::I64(
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        DType::Bool => {
            if let Some(i) = b.iter().position(|&x| x > 1) {
                return Err(format!("bool output byte {i} is {:#x}", b[i]));
            }
            TensorData::Bool(b.iter().map(|&x| x == 1).collect())
        }
    };
    Tensor::new(ty.shape.clone(), data)
}

/// What a JIT run produced.
struct Ran {
    status: i32,
    outputs: Vec<Tensor>,
    workspace_size: usize,
}

/// prepare → JIT compile → run with sentinel-filled output buffers.
fn run_jit(g: &Graph, inputs: &[Tensor]) -> Result<Ran, String> {
    run_jit_capped(g, inputs, Some(Level::Avx512))
}

/// [`run_jit`] with the assembled kernels capped at `cap` (None: none).
fn run_jit_capped(g: &Graph, inputs: &[Tensor], cap: Option<Level>) -> Result<Ran, String> {
    let (pg, plan) = pipeline::prepare(g.clone()).map_err(|e| format!("prepare: {e}"))?;
    for (i, (&id, t)) in pg.inputs.iter().zip(inputs).enumerate() {
        if *pg.ty(id) != t.ty() {
            return Err(format!(
                "input {i}: test data type {} != {}",
                t.ty(),
                pg.ty(id)
            ));
        }
    }
    let model = JitModel::compile_capped(&pg, &plan, cap).map_err(|e| format!("compile: {e}"))?;
    let ins: Vec<Buf> = inputs
        .iter()
        .map(|t| Buf::from_bytes(&t.to_le_bytes()))
        .collect();
    let out_tys: Vec<TensorType> = pg.outputs.iter().map(|o| pg.ty(o.value).clone()).collect();
    let mut outs: Vec<Buf> = out_tys
        .iter()
        .map(|t| Buf::filled(t.bytes(), SENTINEL))
        .collect();
    let in_ptrs: Vec<*const u8> = ins.iter().map(|b| b.bytes().as_ptr()).collect();
    let out_ptrs: Vec<*mut u8> = outs
        .iter_mut()
        .map(|b| b.bytes_mut().as_mut_ptr())
        .collect();
    // SAFETY: every buffer has exactly its tensor's byte size and outlives the call.
    let status = unsafe { model.run_raw(&in_ptrs, &out_ptrs) };
    let outputs = out_tys
        .iter()
        .zip(&outs)
        .map(|(t, b)| tensor_from_bytes(t, b.bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Ran {
        status,
        outputs,
        workspace_size: plan.workspace_size,
    })
}

/// Elementwise comparison; on failure describes the worst element.
fn compare(got: &Tensor, want: &Tensor, tol: Tol) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!(
            "shape {:?} != expected {:?}",
            got.shape, want.shape
        ));
    }
    match (&got.data, &want.data) {
        (TensorData::F32(g), TensorData::F32(w)) => {
            let mut bad = 0usize;
            let mut worst: Option<(f64, usize)> = None;
            for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
                let ok = if b.is_nan() {
                    a.is_nan()
                } else if b.is_infinite() || a.is_infinite() || a.is_nan() {
                    a == b
                } else {
                    let err = (a as f64 - b as f64).abs();
                    err <= tol.atol + tol.rtol * (b as f64).abs()
                };
                if !ok {
                    bad += 1;
                    let excess = if a.is_finite() && b.is_finite() {
                        (a as f64 - b as f64).abs() / (tol.atol + tol.rtol * (b as f64).abs())
                    } else {
                        f64::INFINITY
                    };
                    if worst.is_none_or(|(e, _)| excess > e) {
                        worst = Some((excess, i));
                    }
                }
            }
            match worst {
                None => Ok(()),
                Some((_, i)) => Err(format!(
                    "{bad}/{} elements off; worst at flat index {i} (of shape {:?}): got {:e}, want {:e}, |diff| {:e} (atol {:e}, rtol {:e})",
                    g.len(),
                    want.shape,
                    g[i],
                    w[i],
                    (g[i] as f64 - w[i] as f64).abs(),
                    tol.atol,
                    tol.rtol
                )),
            }
        }
        (TensorData::I64(g), TensorData::I64(w)) => match g.iter().zip(w).position(|(a, b)| a != b)
        {
            None => Ok(()),
            Some(i) => Err(format!("i64 element {i}: got {}, want {}", g[i], w[i])),
        },
        (TensorData::Bool(g), TensorData::Bool(w)) => {
            match g.iter().zip(w).position(|(a, b)| a != b) {
                None => Ok(()),
                Some(i) => Err(format!("bool element {i}: got {}, want {}", g[i], w[i])),
            }
        }
        _ => Err(format!(
            "dtype {} != expected {}",
            got.dtype(),
            want.dtype()
        )),
    }
}

/// Runs cases and collects failures; `finish` panics listing them all.
struct Checker {
    family: &'static str,
    cases: usize,
    failures: Vec<String>,
    start: Instant,
    /// Cap on the assembled kernels (see [`run_jit_capped`]).
    cap: Option<Level>,
}

impl Checker {
    fn new(family: &'static str) -> Checker {
        Checker {
            family,
            cases: 0,
            failures: Vec::new(),
            start: Instant::now(),
            cap: Some(Level::Avx512),
        }
    }

    /// Compiles with the assembled kernels capped at `cap`.
    fn capped(mut self, cap: Option<Level>) -> Checker {
        self.cap = cap;
        self
    }

    fn fail(&mut self, name: &str, msg: String) {
        self.failures.push(format!("{name}: {msg}"));
    }

    /// Checks a whole graph against the reference evaluator.
    fn graph(&mut self, name: &str, g: &Graph, inputs: &[Tensor], tol: Tol) -> Option<Ran> {
        self.cases += 1;
        let want = match eval::eval_graph(g, inputs) {
            Ok(w) => w,
            Err(e) => {
                self.fail(name, format!("reference evaluator failed: {e}"));
                return None;
            }
        };
        let ran = match run_jit_capped(g, inputs, self.cap) {
            Ok(r) => r,
            Err(e) => {
                self.fail(name, e);
                return None;
            }
        };
        if ran.status != 0 {
            self.fail(name, format!("run returned status {}", ran.status));
            return None;
        }
        for (i, (got, w)) in ran.outputs.iter().zip(&want).enumerate() {
            if let Err(e) = compare(got, w, tol) {
                self.fail(name, format!("output {i}: {e}"));
            }
        }
        Some(ran)
    }

    /// Checks `op` applied to `args`.
    fn op(&mut self, name: &str, op: Op, args: Vec<Arg>, tol: Tol) {
        match one_op(op, args) {
            Ok((g, inputs)) => {
                self.graph(name, &g, &inputs, tol);
            }
            Err(e) => {
                self.cases += 1;
                self.fail(name, format!("test builds an invalid node: {e}"));
            }
        }
    }

    /// Checks `op` once per entry of `const_sets`: the listed operand
    /// indices become constants, the rest run-time inputs.
    fn op_variants(
        &mut self,
        name: &str,
        op: &Op,
        ts: &[Tensor],
        const_sets: &[&[usize]],
        tol: Tol,
    ) {
        for consts in const_sets {
            let label = format!("{name} const{consts:?}");
            self.op(
                &label,
                op.clone(),
                args_with_consts(ts.to_vec(), consts),
                tol,
            );
        }
    }

    fn finish(self) {
        eprintln!(
            "[kernels] {}: {} cases in {:.2?}",
            self.family,
            self.cases,
            self.start.elapsed()
        );
        if !self.failures.is_empty() {
            let shown: Vec<&str> = self.failures.iter().take(40).map(|s| s.as_str()).collect();
            panic!(
                "{}: {} of {} cases failed:\n  {}",
                self.family,
                self.failures.len(),
                self.cases,
                shown.join("\n  ")
            );
        }
    }
}

/// The size sweep used for matrix dims and vector lengths.
const SIZES: [usize; 10] = [1, 3, 4, 5, 7, 8, 17, 63, 65, 129];

fn all_unary() -> Vec<UnaryOp> {
    use UnaryOp::*;
    let f = F32Bits::new;
    vec![
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
        Gelu,
        Silu,
        LeakyRelu { alpha: f(0.1) },
        Elu { alpha: f(1.3) },
        Selu {
            alpha: f(1.673_263_2),
            gamma: f(1.050_701),
        },
        HardSigmoid {
            alpha: f(0.2),
            beta: f(0.5),
        },
        HardSwish,
        Clip {
            min: f(-1.25),
            max: f(2.5),
        },
    ]
}

fn unary_tol(u: UnaryOp) -> Tol {
    use UnaryOp::*;
    match u {
        Sigmoid | Tanh | Exp | Log | Erf | Silu => TRANSCENDENTAL,
        Gelu | Elu { .. } | Selu { .. } => CANCELLING,
        _ => ROUNDED,
    }
}

fn win(kernel: &[usize], strides: &[usize], dil: &[usize], pads: &[usize], ceil: bool) -> Window {
    Window {
        kernel: kernel.to_vec(),
        strides: strides.to_vec(),
        dilations: dil.to_vec(),
        pads: pads.to_vec(),
        ceil_mode: ceil,
    }
}

// ---------------------------------------------------------------------------
// Elementwise.

#[test]
fn unary_ops() {
    let mut ck = Checker::new("unary");
    let mut rng = Rng::new(1);
    let shapes: Vec<Vec<usize>> = SIZES
        .iter()
        .map(|&n| vec![n])
        .chain([vec![], vec![2, 3, 5], vec![3, 1, 7]])
        .collect();
    for u in all_unary() {
        for s in &shapes {
            let x = match u {
                // Domain-restricted ops get (mostly) positive data; a few
                // negatives check the NaN path.
                UnaryOp::Log | UnaryOp::Sqrt => {
                    let mut t = rand_in(&mut rng, s, 1e-3, 30.0);
                    if let TensorData::F32(v) = &mut t.data {
                        if v.len() > 2 {
                            v[1] = -v[1];
                        }
                    }
                    t
                }
                // Exercise the full range, including saturation.
                UnaryOp::Exp | UnaryOp::Tanh | UnaryOp::Erf | UnaryOp::Sigmoid => {
                    rand_in(&mut rng, s, -12.0, 12.0)
                }
                _ => {
                    let mut t = randn(&mut rng, s);
                    if let TensorData::F32(v) = &mut t.data {
                        v.iter_mut().for_each(|x| *x *= 2.0);
                    }
                    t
                }
            };
            ck.op(
                &format!("{} {s:?}", u.name()),
                Op::Unary(u),
                vec![Arg::In(x)],
                unary_tol(u),
            );
        }
    }
    ck.finish();
}

/// Special values and range edges of the transcendentals.
#[test]
fn unary_special_values() {
    let mut ck = Checker::new("unary special values");
    let vals: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        1e-30,
        -1e-30,
        1e-5,
        3e-4,
        -3e-4,
        0.5,
        7.9,
        -7.9,
        8.5,
        -8.5,
        3.9,
        4.1,
        -4.1,
        20.0,
        -20.0,
        80.0,
        -80.0,
        87.0,
        -87.0,
        -87.3,
        -87.4,
        88.0,
        -88.0,
        88.5,
        -88.5,
        88.7,
        -88.7,
        88.8,
        -89.0,
        -100.0,
        -104.0,
        -110.0,
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    let n = vals.len();
    // Run each value both in a vector chunk and in the scalar tail.
    let mut v = vals.clone();
    v.extend(vals.iter().rev());
    v.push(0.25);
    let x = f32t(&[2 * n + 1], v);
    for u in all_unary() {
        // Denormal results of exp/sigmoid (|x| > 87.3) are flushed to 0 by
        // design (see math::exp); an absolute 1e-37 covers them.
        let tol = Tol {
            atol: unary_tol(u).atol.max(1e-37),
            ..unary_tol(u)
        };
        ck.op(u.name(), Op::Unary(u), vec![Arg::In(x.clone())], tol);
    }
    // log of positive values in the tiny and huge range.
    let pos: Vec<f32> = (0..64)
        .map(|i| 2f32.powi(i * 4 - 126) * 1.37)
        .chain([f32::MAX, 1.0 + f32::EPSILON, 1.0 - f32::EPSILON / 2.0])
        .collect();
    let np = pos.len();
    ck.op(
        "log pow2 range",
        Op::Unary(UnaryOp::Log),
        vec![Arg::In(f32t(&[np], pos))],
        TRANSCENDENTAL,
    );
    ck.finish();
}

/// Dense sweep: max relative error against f64 over ~1e6 points.
#[test]
fn transcendental_accuracy() {
    const N: usize = 1_000_003; // odd: the scalar tail runs too
    let lin = |lo: f64, hi: f64| -> Vec<f32> {
        (0..N)
            .map(|i| (lo + (hi - lo) * i as f64 / (N - 1) as f64) as f32)
            .collect()
    };
    let sym = lin(-10.0, 10.0);
    let logx: Vec<f32> = (1..=N)
        .map(|i| (1e4 * i as f64 / N as f64) as f32)
        .collect();
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    type F = fn(f64) -> f64;
    let cases: Vec<(UnaryOp, &Vec<f32>, F, &str)> = vec![
        (UnaryOp::Exp, &sym, f64::exp, "[-10, 10]"),
        (UnaryOp::Tanh, &sym, f64::tanh, "[-10, 10]"),
        (UnaryOp::Erf, &sym, eval::erf, "[-10, 10]"),
        (UnaryOp::Sigmoid, &sym, sigmoid, "[-10, 10]"),
        (UnaryOp::Log, &logx, f64::ln, "(0, 1e4]"),
        (
            UnaryOp::Gelu,
            &sym,
            |x| 0.5 * x * eval::erfc(-x / std::f64::consts::SQRT_2),
            "[-10, 10]",
        ),
    ];
    let mut failures = Vec::new();
    for (u, xs, f, range) in cases {
        let (g, ins) = one_op(Op::Unary(u), vec![Arg::In(f32t(&[N], xs.clone()))]).unwrap();
        let ran = run_jit(&g, &ins).unwrap();
        assert_eq!(ran.status, 0);
        let got = ran.outputs[0].as_f32().unwrap();
        // gelu = ½x(1 + erf(x/√2)) cancels for x < 0 (see CANCELLING): its
        // relative error is measured on x ≥ −1 only, and on x < 0 the
        // absolute error is bounded instead.
        let rel_from = if u == UnaryOp::Gelu { -1.0 } else { f32::MIN };
        let (mut max_rel, mut at_rel) = (0f64, 0f32);
        let (mut max_ulp, mut at_ulp) = (0f64, 0f32);
        let (mut max_abs_neg, mut at_abs) = (0f64, 0f32);
        for (&x, &y) in xs.iter().zip(got) {
            let r = f(x as f64);
            let err = (y as f64 - r).abs();
            if x < 0.0 && err > max_abs_neg {
                (max_abs_neg, at_abs) = (err, x);
            }
            if x < rel_from {
                continue;
            }
            // ulp of the f32 nearest the true value (min normal spacing below).
            let rf = (r as f32).abs().max(f32::MIN_POSITIVE);
            let ulp = (f32::from_bits(rf.to_bits() + 1) - rf) as f64;
            if err / ulp > max_ulp {
                (max_ulp, at_ulp) = (err / ulp, x);
            }
            if err / r.abs() > max_rel {
                (max_rel, at_rel) = (err / r.abs(), x);
            }
        }
        let rel_range = if u == UnaryOp::Gelu {
            "x ≥ -1".to_string()
        } else {
            range.to_string()
        };
        let mut line = format!(
            "{:>7}: max rel {max_rel:.3e} (x = {at_rel}), max {max_ulp:.2} ulp (x = {at_ulp}) on {rel_range}",
            u.name()
        );
        if u == UnaryOp::Gelu {
            line += &format!("; max abs {max_abs_neg:.3e} on x < 0 (x = {at_abs})");
        }
        eprintln!("[accuracy] {line}");
        let abs_ok = u != UnaryOp::Gelu || max_abs_neg <= SWEEP_GELU_MAX_ABS;
        if max_rel > SWEEP_MAX_REL || max_ulp > SWEEP_MAX_ULP || !abs_ok {
            failures.push(line);
        }
    }
    assert!(
        failures.is_empty(),
        "accuracy bounds exceeded (rel ≤ {SWEEP_MAX_REL:e}, ≤ {SWEEP_MAX_ULP} ulp, gelu abs ≤ {SWEEP_GELU_MAX_ABS:e}):\n{}",
        failures.join("\n")
    );
}

#[test]
fn binary_ops() {
    let mut ck = Checker::new("binary");
    let mut rng = Rng::new(2);
    use BinaryOp::*;
    let patterns: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![2, 3, 4], vec![4]),
        (vec![4], vec![2, 3, 4]),
        (vec![2, 1, 4], vec![3, 1]),
        (vec![3, 1], vec![2, 1, 4]),
        (vec![3, 1], vec![1, 5]),
        (vec![], vec![7]),
        (vec![17], vec![]),
        (vec![], vec![]),
        (vec![1], vec![1]),
        (vec![1, 1], vec![5, 1]),
        (vec![129], vec![129]),
        (vec![63], vec![1]),
        (vec![2, 3, 4], vec![2, 3, 4]),
        (vec![2, 3, 1, 5], vec![3, 4, 1]),
        (vec![2, 1, 3, 1], vec![1, 5, 1, 6]),
        (vec![4, 65], vec![4, 1]),
        (vec![5, 3, 2], vec![5, 1, 2]),
    ];
    for op in [Add, Sub, Mul, Div, Max, Min, Pow] {
        for (sa, sb) in &patterns {
            let (a, b) = if op == Pow {
                // Positive bases with real exponents.
                (
                    rand_in(&mut rng, sa, 0.05, 4.0),
                    rand_in(&mut rng, sb, -3.0, 3.0),
                )
            } else {
                (randn(&mut rng, sa), randn(&mut rng, sb))
            };
            let tol = if op == Pow { POW } else { ROUNDED };
            ck.op_variants(
                &format!("{} {sa:?} {sb:?}", op.name()),
                &Op::Binary(op),
                &[a, b],
                &[&[], &[1], &[0]],
                tol,
            );
        }
    }
    // Equal operands (same input twice) and ties for max/min.
    for op in [Max, Min, Sub] {
        let mut g = Graph::new("t");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![13]));
        let y = g.add_op("y", Op::Binary(op), &[x, x]).unwrap();
        g.add_output("y", y);
        ck.graph(
            &format!("{} x,x", op.name()),
            &g,
            &[randn(&mut rng, &[13])],
            EXACT,
        );
    }
    // pow: negative bases with integer exponents (sign rule), zero bases,
    // non-integer exponents of negative bases (NaN).
    let bases = f32t(
        &[10],
        vec![-2.0, -1.5, -3.0, -0.5, 0.0, 0.0, 2.0, -2.0, -1.0, -2.5],
    );
    let exps = f32t(
        &[10],
        vec![3.0, 2.0, -1.0, 4.0, 2.0, -1.0, 0.0, 0.5, 7.0, 0.0],
    );
    ck.op_variants(
        "pow signs",
        &Op::Binary(Pow),
        &[bases, exps],
        &[&[], &[1]],
        POW,
    );
    // IEEE special values through the arithmetic ops (NaN propagates
    // through max/min as in onnxruntime).
    let sp = [
        0.0f32,
        -0.0,
        1.0,
        -2.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        1e-30,
    ];
    let n = sp.len();
    let a: Vec<f32> = (0..n * n).map(|i| sp[i / n]).collect();
    let b: Vec<f32> = (0..n * n).map(|i| sp[i % n]).collect();
    for op in [Add, Sub, Mul, Div, Max, Min] {
        ck.op(
            &format!("{} special values", op.name()),
            Op::Binary(op),
            vec![
                Arg::In(f32t(&[n * n], a.clone())),
                Arg::In(f32t(&[n * n], b.clone())),
            ],
            ROUNDED,
        );
    }
    // pow with a constant scalar exponent takes the expression fast paths.
    for e in [1.0f32, 2.0, 3.0, 0.5, -1.0, 1.7, -2.3, 0.0] {
        for shape in [vec![], vec![1], vec![1, 1]] {
            let x = rand_in(&mut rng, &[3, 7], 0.05, 4.0);
            let ex = Tensor::f32(shape.clone(), vec![e]).unwrap();
            ck.op(
                &format!("pow const exponent {e} {shape:?}"),
                Op::Binary(Pow),
                vec![Arg::In(x), Arg::Const(ex)],
                POW,
            );
        }
    }
    ck.finish();
}

// ---------------------------------------------------------------------------
// Matrix products.

#[test]
fn matmul() {
    let mut ck = Checker::new("matmul");
    let mut rng = Rng::new(3);
    // 2-D: the full sweep for small sizes, and every size against a few
    // partners for the large ones.
    let small = [1usize, 3, 4, 5, 7, 8, 17];
    let mut dims: Vec<(usize, usize, usize)> = Vec::new();
    for &m in &small {
        for &n in &small {
            for &k in &[1usize, 4, 7, 17] {
                dims.push((m, n, k));
            }
        }
    }
    for (i, &a) in SIZES.iter().enumerate() {
        for (j, &b) in SIZES.iter().enumerate() {
            if a >= 63 || b >= 63 {
                let c = SIZES[(i + 2 * j + 3) % SIZES.len()];
                dims.push((a, b, c));
                dims.push((c, a, b));
            }
        }
    }
    for &(m, n, k) in &dims {
        let a = randn(&mut rng, &[m, k]);
        let b = randn(&mut rng, &[k, n]);
        // Weights as constants only for a subset (it is the same kernel).
        let consts: &[&[usize]] = if (m + n + k) % 3 == 0 {
            &[&[], &[1]]
        } else {
            &[&[]]
        };
        ck.op_variants(
            &format!("matmul {m}x{k} * {k}x{n}"),
            &Op::MatMul,
            &[a, b],
            consts,
            accum_tol(k, 1.0),
        );
    }
    // Batched, broadcasting and 1-D operands.
    let shapes: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![2, 1, 3, 5], vec![4, 5, 7]),
        (vec![4, 5, 7], vec![2, 1, 7, 3]),
        (vec![3, 5], vec![2, 5, 9]),
        (vec![2, 3, 5], vec![5, 9]),
        (vec![2, 3, 5], vec![2, 5, 9]),
        (vec![1, 3, 5], vec![3, 5, 4]),
        (vec![3, 1, 6, 17], vec![1, 2, 17, 5]),
        (vec![5], vec![5, 7]),
        (vec![3, 5], vec![5]),
        (vec![5], vec![5]),
        (vec![17], vec![2, 17, 3]),
        (vec![2, 3, 17], vec![17]),
        (vec![1], vec![1, 65]),
        (vec![65], vec![65, 1]),
    ];
    for (sa, sb) in &shapes {
        let a = randn(&mut rng, sa);
        let b = randn(&mut rng, sb);
        let k = *sa.last().unwrap();
        ck.op_variants(
            &format!("matmul {sa:?} * {sb:?}"),
            &Op::MatMul,
            &[a, b],
            &[&[], &[1], &[0]],
            accum_tol(k, 1.0),
        );
    }
    ck.finish();
}

#[test]
fn gemm() {
    let mut ck = Checker::new("gemm");
    let mut rng = Rng::new(4);
    let mnk: Vec<(usize, usize, usize)> = vec![
        (1, 1, 1),
        (3, 5, 7),
        (4, 8, 4),
        (5, 3, 1),
        (7, 17, 8),
        (8, 4, 17),
        (17, 7, 5),
        (63, 9, 65),
        (65, 63, 3),
        (2, 129, 17),
        (129, 5, 63),
        (9, 65, 129),
    ];
    let alpha_beta = [(1.0f32, 1.0f32), (0.5, -1.5), (-1.25, 0.0), (1.0, 2.0)];
    for (ci, &(m, n, k)) in mnk.iter().enumerate() {
        let bias_shapes: Vec<Option<Vec<usize>>> = vec![
            None,
            Some(vec![n]),
            Some(vec![m, 1]),
            Some(vec![1, 1]),
            Some(vec![m, n]),
            Some(vec![1, n]),
            Some(vec![1]),
            Some(vec![]),
        ];
        for ta in [false, true] {
            for tb in [false, true] {
                for (bi, bias) in bias_shapes.iter().enumerate() {
                    // Every alpha/beta pair with bias [N] and [M,N]; others rotate.
                    let abs: Vec<(f32, f32)> = if bi == 1 || bi == 4 {
                        alpha_beta.to_vec()
                    } else {
                        vec![alpha_beta[(ci + bi) % alpha_beta.len()]]
                    };
                    for (alpha, beta) in abs {
                        let a = randn(&mut rng, &if ta { [k, m] } else { [m, k] });
                        let b = randn(&mut rng, &if tb { [n, k] } else { [k, n] });
                        let mut ts = vec![a, b];
                        if let Some(s) = bias {
                            ts.push(randn(&mut rng, s));
                        }
                        let op = Op::Gemm {
                            alpha: F32Bits::new(alpha),
                            beta: F32Bits::new(beta),
                            trans_a: ta,
                            trans_b: tb,
                            relu: false,
                        };
                        // B (and C) as run-time inputs and as constants:
                        // a constant transposed B is pre-transposed by
                        // legalize, a run-time one goes through scratch.
                        let consts: &[&[usize]] = if bias.is_some() {
                            &[&[], &[1, 2], &[2]]
                        } else {
                            &[&[], &[1]]
                        };
                        ck.op_variants(
                            &format!(
                                "gemm m{m} n{n} k{k} ta={ta} tb={tb} alpha={alpha} beta={beta} C={bias:?}"
                            ),
                            &op,
                            &ts,
                            consts,
                            accum_tol(k + 1, alpha.abs().max(beta.abs()) as f64),
                        );
                    }
                }
            }
        }
    }
    ck.finish();
}

/// Every GEMM tiling the optimizer may choose (`tiled` matmul and gemm),
/// run through code generation with B constant (pre-packed with the tile's
/// panel width) and at run time, with row tails, epilogues and sizes that
/// split over threads.
#[test]
fn gemm_tiled() {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("gemm_tiled: skipped (no AVX-512 on this host)");
        return;
    }
    let mut ck = Checker::new("gemm tiled");
    let mut rng = Rng::new(43);
    for (m, n, k) in [(50, 100, 70), (128, 96, 64), (13, 300, 40), (7, 1000, 64)] {
        let tiles = nnc_compiler::codegen::x86::tile_candidates(m, n, k, true, Level::Avx512);
        assert!(tiles.len() >= 4, "{tiles:?}");
        for tile in tiles {
            let gemm = Op::Gemm {
                alpha: F32Bits::new(1.0),
                beta: F32Bits::new(1.0),
                trans_a: false,
                trans_b: true,
                relu: true,
            };
            let ts = vec![
                randn(&mut rng, &[m, k]),
                randn(&mut rng, &[n, k]),
                randn(&mut rng, &[n]),
            ];
            ck.op_variants(
                &format!("tiled gemm m{m} n{n} k{k} {tile}"),
                &Op::Tiled {
                    tile,
                    op: Box::new(gemm),
                },
                &ts,
                &[&[], &[1, 2]],
                accum_tol(k + 1, 1.0),
            );
            let ts = vec![randn(&mut rng, &[2, m, k]), randn(&mut rng, &[k, n])];
            ck.op_variants(
                &format!("tiled matmul 2×m{m} n{n} k{k} {tile}"),
                &Op::Tiled {
                    tile,
                    op: Box::new(Op::MatMul),
                },
                &ts,
                &[&[], &[1]],
                accum_tol(k, 1.0),
            );
        }
    }
    ck.finish();
}

// ---------------------------------------------------------------------------
// Convolution and pooling.

#[test]
fn conv() {
    let mut ck = Checker::new("conv");
    let mut rng = Rng::new(5);
    struct C {
        x: Vec<usize>,
        /// Output channels, kernel dims.
        m: usize,
        k: Vec<usize>,
        strides: Vec<usize>,
        dil: Vec<usize>,
        pads: Vec<usize>,
        group: usize,
    }
    let c = |x: &[usize], m: usize, k: &[usize], s: &[usize], d: &[usize], p: &[usize], g| C {
        x: x.to_vec(),
        m,
        k: k.to_vec(),
        strides: s.to_vec(),
        dil: d.to_vec(),
        pads: p.to_vec(),
        group: g,
    };
    // x shape, out channels, kernel, strides, dilations, pads, group
    #[rustfmt::skip]
    let cases = vec![
        // 1-D
        c(&[1, 3, 17], 4, &[3], &[1], &[1], &[1, 1], 1),
        c(&[2, 3, 17], 5, &[3], &[2], &[1], &[1, 2], 1),
        c(&[1, 4, 20], 8, &[5], &[3], &[2], &[0, 3], 1),
        c(&[1, 3, 9], 3, &[5], &[1], &[1], &[2, 2], 3),    // depthwise
        c(&[2, 4, 7], 8, &[3], &[1], &[1], &[0, 0], 4),    // depthwise ×2
        c(&[1, 6, 11], 4, &[2], &[1], &[3], &[1, 0], 2),   // grouped, dilated
        c(&[1, 17, 13], 65, &[1], &[1], &[1], &[0, 0], 1), // pointwise
        c(&[2, 8, 13], 6, &[1], &[2], &[1], &[0, 0], 2),   // strided 1×1
        c(&[1, 5, 8], 7, &[1], &[1], &[1], &[0, 2], 1),    // 1×1, end pad only
        c(&[1, 5, 8], 7, &[1], &[1], &[1], &[1, 0], 1),    // 1×1, begin pad only
        c(&[1, 2, 3], 3, &[5], &[1], &[1], &[2, 2], 1),    // kernel > input
        // 2-D
        c(&[1, 3, 7, 7], 8, &[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1),
        c(&[2, 3, 8, 9], 5, &[3, 3], &[2, 2], &[1, 1], &[1, 1, 1, 1], 1),
        c(&[1, 4, 9, 8], 6, &[3, 2], &[2, 1], &[1, 1], &[0, 1, 2, 0], 1),    // asymmetric
        c(&[1, 2, 11, 10], 3, &[3, 3], &[1, 2], &[2, 3], &[2, 0, 1, 3], 1),  // dilated
        c(&[1, 4, 6, 6], 6, &[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 2),    // grouped
        c(&[2, 5, 7, 7], 5, &[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 5),    // depthwise
        c(&[1, 3, 8, 8], 6, &[3, 3], &[2, 2], &[1, 1], &[0, 0, 1, 1], 3),    // depthwise ×2
        c(&[1, 17, 5, 5], 65, &[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0], 1),  // pointwise
        c(&[2, 6, 4, 7], 4, &[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0], 2),    // grouped 1×1
        c(&[1, 8, 7, 7], 4, &[1, 1], &[2, 2], &[1, 1], &[0, 0, 0, 0], 1),    // strided 1×1
        c(&[1, 3, 5, 4], 2, &[1, 1], &[1, 1], &[1, 1], &[0, 0, 1, 2], 1),    // 1×1 end pads
        c(&[1, 3, 5, 4], 2, &[1, 1], &[1, 1], &[1, 1], &[1, 0, 0, 0], 1),    // 1×1 begin pad
        c(&[1, 7, 6, 5], 63, &[2, 3], &[1, 1], &[1, 1], &[0, 0, 0, 0], 1),
        c(&[1, 63, 4, 4], 129, &[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1),
        c(&[1, 2, 3, 3], 4, &[5, 5], &[1, 1], &[1, 1], &[2, 2, 2, 2], 1),    // kernel > input
        c(&[1, 1, 1, 1], 1, &[1, 1], &[1, 1], &[1, 1], &[0, 0, 0, 0], 1),
        c(&[1, 3, 4, 17], 2, &[1, 7], &[1, 3], &[1, 1], &[0, 3, 0, 3], 1),
    ];
    for (i, cs) in cases.iter().enumerate() {
        let w_shape: Vec<usize> = [cs.m, cs.x[1] / cs.group]
            .into_iter()
            .chain(cs.k.iter().copied())
            .collect();
        let op = Op::Conv {
            window: win(&cs.k, &cs.strides, &cs.dil, &cs.pads, false),
            group: cs.group,
        };
        let x = randn(&mut rng, &cs.x);
        let w = randn(&mut rng, &w_shape);
        let b = randn(&mut rng, &[cs.m]);
        let kdim = w_shape[1..].iter().product::<usize>();
        let name = format!(
            "conv#{i} x{:?} w{w_shape:?} s{:?} d{:?} p{:?} g{}",
            cs.x, cs.strides, cs.dil, cs.pads, cs.group
        );
        ck.op_variants(
            &format!("{name} no bias"),
            &op,
            &[x.clone(), w.clone()],
            &[&[], &[1]],
            accum_tol(kdim, 1.0),
        );
        ck.op_variants(
            &format!("{name} bias"),
            &op,
            &[x, w, b],
            &[&[], &[1, 2], &[2]],
            accum_tol(kdim + 1, 1.0),
        );
    }
    ck.finish();
}

#[test]
fn pool() {
    let mut ck = Checker::new("pool");
    let mut rng = Rng::new(6);
    // (kernel, strides, dilations, pads)
    type W = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>);
    let w2: Vec<W> = vec![
        (vec![2, 2], vec![2, 2], vec![1, 1], vec![0, 0, 0, 0]),
        (vec![3, 3], vec![1, 1], vec![1, 1], vec![1, 1, 1, 1]),
        (vec![3, 3], vec![2, 2], vec![1, 1], vec![1, 1, 1, 1]),
        (vec![3, 2], vec![2, 1], vec![1, 1], vec![0, 1, 1, 0]),
        (vec![2, 2], vec![1, 1], vec![2, 2], vec![0, 0, 0, 0]),
        (vec![3, 3], vec![3, 3], vec![1, 1], vec![1, 1, 0, 0]),
        (vec![2, 3], vec![2, 3], vec![2, 1], vec![1, 0, 0, 2]),
        (vec![5, 5], vec![1, 1], vec![1, 1], vec![2, 2, 2, 2]),
        (vec![1, 1], vec![2, 2], vec![1, 1], vec![0, 0, 0, 0]),
        // Two-column stride-2 windows with padding (the vectorized pool's
        // rows-first path).
        (vec![2, 2], vec![2, 2], vec![1, 1], vec![1, 1, 0, 1]),
        (vec![3, 2], vec![2, 2], vec![1, 1], vec![1, 1, 1, 0]),
    ];
    let w1: Vec<W> = vec![
        (vec![3], vec![2], vec![1], vec![1, 1]),
        (vec![2], vec![2], vec![1], vec![0, 0]),
        (vec![4], vec![1], vec![2], vec![0, 3]),
        (vec![3], vec![3], vec![1], vec![2, 0]),
        (vec![1], vec![1], vec![1], vec![0, 0]),
        (vec![5], vec![2], vec![1], vec![2, 2]),
    ];
    // Wide rows reach the vectorized max pool's lane masks and tails.
    let x2 = [
        vec![1, 3, 7, 7],
        vec![2, 2, 8, 5],
        vec![1, 1, 17, 3],
        vec![1, 2, 9, 33],
        vec![1, 1, 4, 65],
        vec![2, 3, 6, 26],
    ];
    let x1 = [vec![2, 3, 17], vec![1, 1, 5], vec![1, 2, 64]];
    let kinds = [
        PoolKind::Max,
        PoolKind::Avg {
            count_include_pad: false,
        },
        PoolKind::Avg {
            count_include_pad: true,
        },
    ];
    for (ws, xs) in [(&w2, &x2[..]), (&w1, &x1[..])] {
        for (k, s, d, p) in ws {
            for x_shape in xs {
                for ceil in [false, true] {
                    for kind in kinds {
                        let window = win(k, s, d, p, ceil);
                        let op = Op::Pool {
                            kind,
                            window: window.clone(),
                        };
                        if op
                            .infer(&[&TensorType::new(DType::F32, x_shape.clone())])
                            .is_err()
                        {
                            continue; // window does not fit this input
                        }
                        let taps = k.iter().product::<usize>();
                        let tol = if kind == PoolKind::Max {
                            SELECT
                        } else {
                            accum_tol(taps, 1.0)
                        };
                        ck.op(
                            &format!(
                                "{} x{x_shape:?} k{k:?} s{s:?} d{d:?} p{p:?} ceil={ceil}",
                                op.name()
                            ),
                            op,
                            vec![Arg::In(randn(&mut rng, x_shape))],
                            tol,
                        );
                    }
                }
            }
        }
    }
    // Max pool whose border windows lie entirely in padding (pads ≥ kernel;
    // ONNX forbids it but the IR allows it): onnxruntime's initial value.
    let op = Op::Pool {
        kind: PoolKind::Max,
        window: win(&[2, 2], &[1, 1], &[1, 1], &[2, 2, 2, 2], false),
    };
    ck.op(
        "max_pool all-padding windows",
        op,
        vec![Arg::In(randn(&mut rng, &[1, 2, 4, 3]))],
        SELECT,
    );
    ck.finish();
}

// ---------------------------------------------------------------------------
// Reductions and normalizations.

#[test]
fn softmax() {
    let mut ck = Checker::new("softmax");
    let mut rng = Rng::new(7);
    let shapes: Vec<Vec<usize>> = vec![
        vec![1],
        vec![5],
        vec![17],
        vec![129],
        vec![3, 4],
        vec![4, 3],
        vec![2, 3, 5],
        vec![2, 65, 3],
        vec![3, 129],
        vec![4, 1, 7],
        vec![2, 3, 4, 5],
        vec![63, 2],
    ];
    for s in &shapes {
        for axis in 0..s.len() {
            for log in [false, true] {
                let mut x = randn(&mut rng, s);
                if let TensorData::F32(v) = &mut x.data {
                    v.iter_mut().for_each(|x| *x *= 3.0); // wider spread: [-9, 9]
                }
                let tol = if log {
                    LOG_SOFTMAX
                } else {
                    softmax_tol(s[axis])
                };
                let op = Op::Softmax { axis, log };
                ck.op(
                    &format!("{} {s:?} axis {axis}", op.name()),
                    op,
                    vec![Arg::In(x)],
                    tol,
                );
            }
        }
    }
    ck.finish();
}

#[test]
fn layer_norm() {
    let mut ck = Checker::new("layer_norm");
    let mut rng = Rng::new(8);
    let shapes: Vec<Vec<usize>> = vec![
        vec![7],
        vec![2, 3, 17],
        vec![4, 65],
        vec![3, 5, 4, 7],
        vec![5, 1],
        vec![1, 129],
        vec![6, 3],
    ];
    for s in &shapes {
        for axis in 0..s.len() {
            let norm = &s[axis..];
            let n = numel(norm);
            let eps = 1e-5f32;
            let op = Op::LayerNorm {
                axis,
                epsilon: F32Bits::new(eps),
            };
            let x = randn(&mut rng, s);
            let scale = randn(&mut rng, norm);
            let bias = randn(&mut rng, norm);
            let name = format!("layer_norm {s:?} axis {axis}");
            ck.op_variants(
                &format!("{name} scale+bias"),
                &op,
                &[x.clone(), scale.clone(), bias],
                &[&[], &[1, 2], &[1]],
                norm_tol(n),
            );
            ck.op_variants(
                &format!("{name} scale only"),
                &op,
                &[x.clone(), scale],
                &[&[], &[1]],
                norm_tol(n),
            );
            // Constant parameters that broadcast (legalize expands them).
            let last = *norm.last().unwrap();
            for (ps, bs) in [
                (vec![last], vec![1]),
                (vec![1], vec![last]),
                (vec![], vec![last]),
            ] {
                let scale = randn(&mut rng, &ps);
                let bias = randn(&mut rng, &bs);
                ck.op(
                    &format!("{name} const broadcast scale{ps:?} bias{bs:?}"),
                    op.clone(),
                    vec![Arg::In(x.clone()), Arg::Const(scale), Arg::Const(bias)],
                    norm_tol(n),
                );
            }
        }
    }
    // Epsilon matters when the variance is ~0 (constant rows).
    let op = Op::LayerNorm {
        axis: 1,
        epsilon: F32Bits::new(0.1),
    };
    let x = f32t(&[2, 5], vec![1.5; 10]);
    ck.op(
        "layer_norm constant rows eps 0.1",
        op,
        vec![
            Arg::In(x),
            Arg::In(randn(&mut rng, &[5])),
            Arg::In(randn(&mut rng, &[5])),
        ],
        norm_tol(5),
    );
    ck.finish();
}

#[test]
fn instance_norm() {
    let mut ck = Checker::new("instance_norm");
    let mut rng = Rng::new(9);
    let shapes: Vec<Vec<usize>> = vec![
        vec![1, 3, 17],
        vec![2, 4, 5, 5],
        vec![2, 3, 1, 1],
        vec![1, 2, 129],
        vec![3, 5, 7],
        vec![1, 1, 4, 2],
        vec![2, 7, 3, 1, 2],
    ];
    for s in &shapes {
        let c = s[1];
        let n = numel(&s[2..]);
        for eps in [1e-5f32, 0.3] {
            let op = Op::InstanceNorm {
                epsilon: F32Bits::new(eps),
            };
            ck.op_variants(
                &format!("instance_norm {s:?} eps {eps}"),
                &op,
                &[
                    randn(&mut rng, s),
                    randn(&mut rng, &[c]),
                    randn(&mut rng, &[c]),
                ],
                &[&[], &[1, 2]],
                norm_tol(n),
            );
        }
    }
    ck.finish();
}

#[test]
fn reduce() {
    let mut ck = Checker::new("reduce");
    let mut rng = Rng::new(10);
    use ReduceOp::*;
    let shapes: Vec<Vec<usize>> = vec![
        vec![2, 3, 4, 5],
        vec![7, 17, 5],
        vec![129],
        vec![65, 3],
        vec![3, 1, 9],
    ];
    for op in [Sum, Mean, Max, Min, Prod, L2, L1, SumSquare, LogSumExp] {
        for s in &shapes {
            let r = s.len();
            // Every contiguous axis range, plus the empty list (identity).
            let mut ranges: Vec<Vec<usize>> = vec![vec![]];
            for lo in 0..r {
                for hi in lo + 1..=r {
                    ranges.push((lo..hi).collect());
                }
            }
            for axes in ranges {
                for keepdims in [false, true] {
                    let count: usize = axes.iter().map(|&a| s[a]).product();
                    let x = match op {
                        // Keep products of many factors in range.
                        Prod => {
                            let mut t = rand_in(&mut rng, s, 0.6, 1.5);
                            if let TensorData::F32(v) = &mut t.data {
                                for (i, x) in v.iter_mut().enumerate() {
                                    if i % 3 == 1 {
                                        *x = -*x;
                                    }
                                }
                            }
                            t
                        }
                        _ => randn(&mut rng, s),
                    };
                    let tol = match op {
                        Max | Min => SELECT,
                        // Sums of |x| or x² ≲ 9 per term.
                        Sum | Mean | L1 => accum_tol(count, 1.0),
                        L2 | SumSquare => accum_tol(count, 9.0),
                        // Relative: each factor adds ≤ ½ ulp.
                        Prod => Tol {
                            atol: 1e-30,
                            rtol: 1e-6 + count as f64 * 1.2e-7,
                        },
                        LogSumExp => Tol {
                            atol: 1e-5,
                            rtol: 1e-5,
                        },
                    };
                    let rop = Op::Reduce {
                        op,
                        axes: axes.clone(),
                        keepdims,
                    };
                    ck.op(
                        &format!(
                            "reduce {} {s:?} axes {axes:?} keepdims={keepdims}",
                            op.name()
                        ),
                        rop,
                        vec![Arg::In(x)],
                        tol,
                    );
                }
            }
        }
    }
    ck.finish();
}

// ---------------------------------------------------------------------------
// Data movement (bit-exact, every dtype).

const DTYPES: [DType; 3] = [DType::F32, DType::I64, DType::Bool];

/// All permutations of 0..n.
fn perms(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in perms(n - 1) {
        for i in 0..n {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn transpose() {
    let mut ck = Checker::new("transpose");
    let mut rng = Rng::new(11);
    let shapes: Vec<Vec<usize>> = vec![
        vec![3, 5],
        vec![1, 7],
        vec![17, 4],
        vec![2, 3, 4],
        vec![5, 1, 3],
        vec![2, 3, 4, 5],
        vec![3, 1, 2, 5],
        vec![2, 3, 2, 1, 3],
    ];
    for s in &shapes {
        let all = perms(s.len());
        // Rank 5: every 7th permutation (plus identity and reversal).
        let chosen: Vec<Vec<usize>> = if s.len() == 5 {
            all.iter()
                .enumerate()
                .filter(|(i, p)| {
                    i % 7 == 0
                        || p.windows(2).all(|w| w[0] < w[1])
                        || p.windows(2).all(|w| w[0] > w[1])
                })
                .map(|(_, p)| p.clone())
                .collect()
        } else {
            all
        };
        for perm in chosen {
            for dt in DTYPES {
                // Non-f32 dtypes on a subset (same code with other widths).
                if dt != DType::F32 && perm.iter().sum::<usize>() % 2 == 1 && s.len() > 3 {
                    continue;
                }
                ck.op(
                    &format!("transpose {dt} {s:?} perm {perm:?}"),
                    Op::Transpose { perm: perm.clone() },
                    vec![Arg::In(rand_of(&mut rng, dt, s))],
                    EXACT,
                );
            }
        }
    }
    ck.finish();
}

#[test]
fn concat() {
    let mut ck = Checker::new("concat");
    let mut rng = Rng::new(12);
    let shapes: Vec<Vec<usize>> = vec![vec![5], vec![2, 3], vec![2, 3, 4], vec![3, 1, 2, 5]];
    for s in &shapes {
        for axis in 0..s.len() {
            for dt in DTYPES {
                // Three parts with different extents along `axis`, one of them a constant.
                let parts: Vec<Tensor> = [1usize, 3, 2]
                    .iter()
                    .map(|&e| {
                        let mut sh = s.clone();
                        sh[axis] = e;
                        rand_of(&mut rng, dt, &sh)
                    })
                    .collect();
                let op = Op::Concat { axis };
                ck.op_variants(
                    &format!("concat {dt} {s:?} axis {axis}"),
                    &op,
                    &parts,
                    &[&[], &[1]],
                    EXACT,
                );
                ck.op(
                    &format!("concat {dt} {s:?} axis {axis} single"),
                    op,
                    vec![Arg::In(parts[0].clone())],
                    EXACT,
                );
            }
        }
    }
    ck.finish();
}

#[test]
fn slice() {
    let mut ck = Checker::new("slice");
    let mut rng = Rng::new(13);
    let sd = |start, step, count| SliceDim { start, step, count };
    let cases: Vec<(Vec<usize>, Vec<SliceDim>)> = vec![
        (vec![10], vec![sd(2, 1, 5)]),
        (vec![10], vec![sd(1, 3, 3)]),
        (vec![10], vec![sd(9, -1, 10)]),
        (vec![10], vec![sd(8, -3, 3)]),
        (vec![10], vec![sd(4, 1, 0)]),
        (vec![4, 6], vec![sd(1, 1, 2), sd(0, 2, 3)]),
        (vec![4, 6], vec![sd(3, -1, 4), sd(5, -2, 3)]),
        (vec![4, 6], vec![sd(0, 1, 4), sd(1, 1, 4)]),
        (vec![4, 6], vec![sd(2, 1, 1), sd(0, 1, 6)]),
        (vec![3, 4, 5], vec![sd(0, 1, 3), sd(3, -1, 2), sd(1, 2, 2)]),
        (vec![3, 4, 5], vec![sd(2, -2, 2), sd(0, 1, 4), sd(4, -4, 2)]),
        (
            vec![2, 3, 4, 17],
            vec![sd(1, 1, 1), sd(0, 2, 2), sd(0, 1, 4), sd(16, -1, 17)],
        ),
        (
            vec![2, 3, 4, 17],
            vec![sd(0, 1, 2), sd(0, 1, 3), sd(1, 1, 3), sd(3, 1, 13)],
        ),
    ];
    for (s, dims) in &cases {
        for dt in DTYPES {
            ck.op(
                &format!("slice {dt} {s:?} {dims:?}"),
                Op::Slice { dims: dims.clone() },
                vec![Arg::In(rand_of(&mut rng, dt, s))],
                EXACT,
            );
        }
    }
    ck.finish();
}

#[test]
fn gather() {
    let mut ck = Checker::new("gather");
    let mut rng = Rng::new(14);
    // (data shape, axis, index shape, indices)
    type Case = (Vec<usize>, usize, Vec<usize>, Vec<i64>);
    let cases: Vec<Case> = vec![
        (vec![5], 0, vec![3], vec![0, -1, 2]),
        (vec![5], 0, vec![], vec![-5]),
        (vec![4, 3], 0, vec![2, 2], vec![3, -4, 1, 1]),
        (vec![4, 3], 1, vec![4], vec![2, 0, -1, -3]),
        (vec![2, 5, 3], 1, vec![2, 3], vec![4, -2, 0, 1, -5, 3]),
        (vec![2, 5, 3], 2, vec![], vec![-1]),
        (vec![3, 4, 17], 0, vec![5], vec![2, 0, 1, -1, -2]),
        (vec![3, 4, 17], 2, vec![3], vec![16, -17, 8]),
    ];
    for (s, axis, ishape, idx) in &cases {
        for dt in DTYPES {
            let data = rand_of(&mut rng, dt, s);
            let ix = i64t(ishape, idx.clone());
            ck.op_variants(
                &format!("gather {dt} {s:?} axis {axis} idx {idx:?}"),
                &Op::Gather { axis: *axis },
                &[data, ix],
                &[&[], &[1], &[0]],
                EXACT,
            );
        }
    }
    // Out-of-range run-time indices: status 3.
    for (s, axis, bad) in [
        (vec![5usize], 0usize, vec![1i64, 5]),
        (vec![5], 0, vec![-6]),
        (vec![4, 3], 1, vec![0, 3]),
        (vec![4, 3], 1, vec![i64::MIN]),
        (vec![4, 3], 0, vec![i64::MAX, 0]),
    ] {
        ck.cases += 1;
        let n = bad.len();
        let (g, ins) = one_op(
            Op::Gather { axis },
            vec![
                Arg::In(randn(&mut rng, &s)),
                Arg::In(i64t(&[n], bad.clone())),
            ],
        )
        .unwrap();
        match run_jit(&g, &ins) {
            Ok(r) if r.status == 3 => {}
            Ok(r) => ck.fail(
                &format!("gather out of range {bad:?}"),
                format!("status {} (want 3)", r.status),
            ),
            Err(e) => ck.fail(&format!("gather out of range {bad:?}"), e),
        }
    }
    ck.finish();
}

#[test]
fn expand_tile_pad_reshape() {
    let mut ck = Checker::new("expand/tile/pad/reshape");
    let mut rng = Rng::new(15);
    let expands: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![3, 1], vec![2, 3, 4]),
        (vec![1], vec![5]),
        (vec![], vec![2, 2]),
        (vec![4], vec![3, 4]),
        (vec![2, 1, 3], vec![2, 5, 3]),
        (vec![1, 17], vec![3, 17]),
        (vec![2, 3], vec![2, 3]),
        (vec![5, 1], vec![5, 9]),
    ];
    for (from, to) in &expands {
        for dt in DTYPES {
            ck.op(
                &format!("expand {dt} {from:?} -> {to:?}"),
                Op::Expand { shape: to.clone() },
                vec![Arg::In(rand_of(&mut rng, dt, from))],
                EXACT,
            );
        }
    }
    let tiles: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![3], vec![4]),
        (vec![2, 3], vec![2, 1]),
        (vec![2, 3], vec![1, 3]),
        (vec![2, 1, 3], vec![2, 3, 2]),
        (vec![5], vec![1]),
        (vec![], vec![]),
    ];
    for (s, reps) in &tiles {
        for dt in DTYPES {
            ck.op(
                &format!("tile {dt} {s:?} x {reps:?}"),
                Op::Tile {
                    repeats: reps.clone(),
                },
                vec![Arg::In(rand_of(&mut rng, dt, s))],
                EXACT,
            );
        }
    }
    let pads: Vec<(Vec<usize>, Vec<i64>)> = vec![
        (vec![5], vec![2, 3]),
        (vec![5], vec![-1, 2]),
        (vec![5], vec![0, -4]),
        (vec![3, 4], vec![1, 0, 2, 1]),
        (vec![3, 4], vec![-1, 2, 1, -2]),
        (vec![3, 4], vec![0, -4, 1, 0]), // everything cropped: all fill
        (vec![2, 3, 4], vec![1, -1, 0, 0, 2, -3]),
        (vec![1, 2, 5, 5], vec![0, 0, 1, 1, 0, 0, 1, 1]),
        (vec![7, 17], vec![0, 0, 0, 0]),
    ];
    for (s, p) in &pads {
        for value in [0.0f32, -2.5] {
            ck.op(
                &format!("pad {s:?} {p:?} value {value}"),
                Op::Pad {
                    pads: p.clone(),
                    mode: PadMode::Constant,
                    value: F32Bits::new(value),
                },
                vec![Arg::In(randn(&mut rng, s))],
                EXACT,
            );
        }
    }
    // A reshape that is the graph output is a real copy kernel.
    for (from, to) in [
        (vec![2, 3, 4], vec![6, 4]),
        (vec![17], vec![1, 17, 1]),
        (vec![3, 5], vec![15]),
    ] {
        for dt in DTYPES {
            ck.op(
                &format!("reshape {dt} {from:?} -> {to:?}"),
                Op::Reshape { shape: to.clone() },
                vec![Arg::In(rand_of(&mut rng, dt, &from))],
                EXACT,
            );
        }
    }
    ck.finish();
}

// ---------------------------------------------------------------------------
// Whole-model plumbing: copy steps and workspace reuse.

#[test]
fn outputs_that_are_inputs_or_constants() {
    let mut ck = Checker::new("copy outputs");
    let mut rng = Rng::new(16);
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(DType::F32, vec![3, 5]));
    let xi = g.add_input("xi", TensorType::new(DType::I64, vec![4]));
    let c = g.add_const("c", randn(&mut rng, &[7]));
    let cb = g.add_const("cb", rand_bool(&mut rng, &[9]));
    let e = g.add_op("e", Op::Unary(UnaryOp::Exp), &[x]).unwrap();
    let r = g
        .add_op("r", Op::Reshape { shape: vec![15] }, &[e])
        .unwrap();
    let rx = g
        .add_op("rx", Op::Reshape { shape: vec![5, 3] }, &[x])
        .unwrap();
    g.add_output("x_again", x);
    g.add_output("const", c);
    g.add_output("e", e);
    g.add_output("e_twice", e);
    g.add_output("xi", xi);
    g.add_output("const_bool", cb);
    g.add_output("reshaped", r);
    g.add_output("reshaped_input", rx);
    g.add_output("x_third", x);
    ck.graph(
        "inputs, constants and repeats as outputs",
        &g,
        &[randn(&mut rng, &[3, 5]), rand_i64(&mut rng, &[4])],
        TRANSCENDENTAL,
    );
    // A model with no computation at all.
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(DType::F32, vec![17]));
    let c = g.add_const("c", i64t(&[2], vec![7, -9]));
    g.add_output("y", x);
    g.add_output("c", c);
    ck.graph("identity model", &g, &[randn(&mut rng, &[17])], EXACT);
    ck.finish();
}

#[test]
fn workspace_reuse() {
    let mut ck = Checker::new("workspace");
    let mut rng = Rng::new(17);
    let n = 1000; // 4000 bytes per value
    let ty = TensorType::new(DType::F32, vec![n]);
    let mut g = Graph::new("t");
    let x = g.add_input("x", ty.clone());
    let y = g.add_input("y", ty.clone());
    // Two independent chains of five ops each, each with a value reshaped
    // twice (aliased, no copy) in the middle.
    let chain = |g: &mut Graph, mut v: ValueId, ops: &[UnaryOp], tag: &str| -> Vec<ValueId> {
        let mut vals = Vec::new();
        for (i, &u) in ops.iter().enumerate() {
            v = g.add_op(format!("{tag}{i}"), Op::Unary(u), &[v]).unwrap();
            if i == 2 {
                v = g
                    .add_op(
                        format!("{tag}r"),
                        Op::Reshape {
                            shape: vec![8, 125],
                        },
                        &[v],
                    )
                    .unwrap();
                v = g
                    .add_op(format!("{tag}r2"), Op::Reshape { shape: vec![n] }, &[v])
                    .unwrap();
            }
            vals.push(v);
        }
        vals
    };
    use UnaryOp::*;
    let a = chain(&mut g, x, &[Tanh, Neg, Exp, Abs, Sigmoid], "a");
    let b = chain(&mut g, y, &[Sigmoid, Relu, Neg, Exp, Tanh], "b");
    let ya = *a.last().unwrap();
    let yb = *b.last().unwrap();
    // One value from early in chain a, used at the very end: must survive.
    let late = g
        .add_op("late", Op::Binary(BinaryOp::Add), &[a[0], yb])
        .unwrap();
    g.add_output("a", ya);
    g.add_output("b", yb);
    g.add_output("late", late);
    let intermediates = (a.len() - 1) + (b.len() - 1);
    let ran = ck.graph(
        "two chains",
        &g,
        &[randn(&mut rng, &[n]), randn(&mut rng, &[n])],
        TRANSCENDENTAL,
    );
    if let Some(ran) = ran {
        let slot = 4032; // 4000 rounded up to the 64-byte alignment
        eprintln!(
            "[kernels] workspace: {} bytes for {intermediates} intermediates of {slot}",
            ran.workspace_size
        );
        // At most three values are live at once (a[0], the current chain
        // value and its successor).
        if ran.workspace_size > 3 * slot || ran.workspace_size >= intermediates * slot {
            ck.fail(
                "two chains",
                format!(
                    "workspace {} bytes: memory is not reused ({intermediates} intermediates of {slot} bytes)",
                    ran.workspace_size
                ),
            );
        }
    }
    ck.finish();
}

#[test]
fn zero_sized_tensors() {
    let mut ck = Checker::new("zero-sized");
    let mut rng = Rng::new(18);
    ck.op(
        "exp [0]",
        Op::Unary(UnaryOp::Exp),
        vec![Arg::In(randn(&mut rng, &[0]))],
        EXACT,
    );
    ck.op(
        "add [3,0] + [1]",
        Op::Binary(BinaryOp::Add),
        vec![
            Arg::In(randn(&mut rng, &[3, 0])),
            Arg::In(randn(&mut rng, &[1])),
        ],
        EXACT,
    );
    for (sa, sb) in [
        (vec![0, 3], vec![3, 4]),
        (vec![3, 0], vec![0, 4]),
        (vec![2, 0, 5], vec![5, 3]),
    ] {
        ck.op(
            &format!("matmul {sa:?} x {sb:?}"),
            Op::MatMul,
            vec![Arg::In(randn(&mut rng, &sa)), Arg::In(randn(&mut rng, &sb))],
            EXACT,
        );
    }
    // K = 0: the product is just beta·C.
    ck.op(
        "gemm k=0 with bias",
        Op::Gemm {
            alpha: F32Bits::new(1.0),
            beta: F32Bits::new(0.5),
            trans_a: false,
            trans_b: true,
            relu: false,
        },
        vec![
            Arg::In(randn(&mut rng, &[3, 0])),
            Arg::In(randn(&mut rng, &[5, 0])),
            Arg::In(randn(&mut rng, &[5])),
        ],
        ROUNDED,
    );
    for op in [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Mean,
        ReduceOp::LogSumExp,
    ] {
        ck.op(
            &format!("reduce {} over an empty axis", op.name()),
            Op::Reduce {
                op,
                axes: vec![1],
                keepdims: true,
            },
            vec![Arg::In(randn(&mut rng, &[3, 0, 2]))],
            EXACT,
        );
    }
    for (x, w, k, pads) in [
        (
            vec![1, 0, 5, 5],
            vec![4, 0, 3, 3],
            vec![3, 3],
            vec![1, 1, 1, 1],
        ),
        (vec![0, 2, 5], vec![3, 2, 3], vec![3], vec![0, 0]),
        (vec![1, 0, 5], vec![2, 0, 1], vec![1], vec![0, 1]),
    ] {
        let r = k.len();
        let op = Op::Conv {
            window: win(&k, &vec![1; r], &vec![1; r], &pads, false),
            group: 1,
        };
        let m = w[0];
        ck.op(
            &format!("conv x{x:?} w{w:?}"),
            op,
            vec![
                Arg::In(randn(&mut rng, &x)),
                Arg::In(randn(&mut rng, &w)),
                Arg::In(randn(&mut rng, &[m])),
            ],
            EXACT,
        );
    }
    ck.op(
        "concat with an empty part",
        Op::Concat { axis: 1 },
        vec![
            Arg::In(randn(&mut rng, &[2, 3])),
            Arg::In(randn(&mut rng, &[2, 0])),
            Arg::In(randn(&mut rng, &[2, 1])),
        ],
        EXACT,
    );
    ck.op(
        "transpose [0,3]",
        Op::Transpose { perm: vec![1, 0] },
        vec![Arg::In(randn(&mut rng, &[0, 3]))],
        EXACT,
    );
    ck.finish();
}

#[test]
fn shared_values_and_aliases() {
    let mut ck = Checker::new("shared values");
    let mut rng = Rng::new(19);
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(DType::F32, vec![4, 6]));
    // A reshaped input feeding a kernel (alias of an input buffer).
    let xr = g
        .add_op("xr", Op::Reshape { shape: vec![24] }, &[x])
        .unwrap();
    let e = g.add_op("e", Op::Unary(UnaryOp::Tanh), &[xr]).unwrap();
    // `e` is an output *and* read by later kernels (from the output buffer).
    let n = g.add_op("n", Op::Unary(UnaryOp::Neg), &[e]).unwrap();
    let cat = g.add_op("cat", Op::Concat { axis: 0 }, &[e, n, e]).unwrap();
    let sq = g.add_op("sq", Op::Binary(BinaryOp::Mul), &[n, n]).unwrap();
    g.add_output("e", e);
    g.add_output("cat", cat);
    g.add_output("sq", sq);
    ck.graph(
        "outputs read by later kernels",
        &g,
        &[randn(&mut rng, &[4, 6])],
        TRANSCENDENTAL,
    );
    ck.finish();
}

#[test]
fn null_arguments_and_bad_indices_report_status() {
    let mut rng = Rng::new(20);
    let (g, ins) = one_op(
        Op::Gather { axis: 0 },
        vec![
            Arg::In(randn(&mut rng, &[4, 3])),
            Arg::In(i64t(&[2], vec![1, 3])),
        ],
    )
    .unwrap();
    let (pg, plan) = pipeline::prepare(g).unwrap();
    let model = JitModel::compile(&pg, &plan).unwrap();
    let x = Buf::from_bytes(&ins[0].to_le_bytes());
    let good = Buf::from_bytes(&ins[1].to_le_bytes());
    let bad = Buf::from_bytes(&i64t(&[2], vec![1, -5]).to_le_bytes());
    let mut y = Buf::filled(2 * 3 * 4, SENTINEL);
    let yp = y.bytes_mut().as_mut_ptr();
    let run = |a: *const u8, b: *const u8, out: *mut u8| {
        // SAFETY: non-null pointers refer to buffers of the declared sizes.
        unsafe { model.run_raw(&[a, b], &[out]) }
    };
    let (xp, gp, bp) = (
        x.bytes().as_ptr(),
        good.bytes().as_ptr(),
        bad.bytes().as_ptr(),
    );
    assert_eq!(run(xp, gp, yp), 0);
    assert_eq!(run(xp, bp, yp), 3, "out-of-range index");
    assert_eq!(run(std::ptr::null(), gp, yp), 1, "NULL input");
    assert_eq!(run(xp, gp, std::ptr::null_mut()), 1, "NULL output");
}

#[test]
fn attention() {
    let mut ck = Checker::new("attention");
    let mut rng = Rng::new(11);
    // (q batch, kv batch, Lq, Lk, D, Dv, mask shape, causal, softcap)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        Vec<usize>,
        Vec<usize>,
        usize,
        usize,
        usize,
        usize,
        Option<Vec<usize>>,
        bool,
        f32,
    )> = vec![
        (vec![1], vec![1], 1, 1, 1, 1, None, false, 0.0),
        (vec![1], vec![1], 1, 2, 1, 1, None, false, 0.0),
        (vec![1], vec![1], 2, 1, 1, 1, None, false, 0.0),
        (vec![1], vec![1], 1, 1, 2, 1, None, false, 0.0),
        (vec![1], vec![1], 1, 1, 1, 2, None, false, 0.0),
        (vec![2], vec![2], 3, 5, 4, 3, None, false, 0.0),
        (vec![1, 2], vec![1, 2], 17, 9, 8, 8, None, false, 0.0),
        (vec![8], vec![8], 16, 16, 8, 8, None, false, 0.0),
        (vec![2], vec![2], 33, 130, 16, 7, None, false, 0.0),
        (vec![1, 4], vec![1, 2], 5, 7, 8, 8, None, false, 0.0),
        (
            vec![1, 3],
            vec![1, 3],
            6,
            140,
            5,
            4,
            Some(vec![1, 1, 1, 140]),
            false,
            0.0,
        ),
        (
            vec![2, 2],
            vec![2, 2],
            40,
            9,
            4,
            4,
            Some(vec![2, 1, 40, 9]),
            false,
            0.0,
        ),
        (vec![1], vec![1], 7, 7, 4, 4, None, true, 0.0),
        (vec![1], vec![1], 5, 9, 4, 4, None, true, 30.0),
        (
            vec![1, 12],
            vec![1, 12],
            128,
            128,
            64,
            64,
            Some(vec![1, 1, 1, 128]),
            false,
            0.0,
        ),
    ];
    for (qb, kb, lq, lk, d, dv, mask, causal, softcap) in cases {
        let sh = |b: &[usize], x: usize, y: usize| {
            let mut s = b.to_vec();
            s.extend([x, y]);
            s
        };
        let mut ts = vec![
            randn(&mut rng, &sh(&qb, lq, d)),
            randn(&mut rng, &sh(&kb, d, lk)),
            randn(&mut rng, &sh(&kb, lk, dv)),
        ];
        if let Some(m) = &mask {
            ts.push(randn(&mut rng, m));
        }
        let op = Op::Attention {
            scale: (1.0 / (d as f32).sqrt()).into(),
            causal,
            softcap: softcap.into(),
            views: None,
        };
        ck.op(
            &format!(
                "attention q{:?} kt{:?} mask {mask:?} causal {causal} softcap {softcap}",
                sh(&qb, lq, d),
                sh(&kb, d, lk)
            ),
            op,
            args_with_consts(ts, &[]),
            softmax_tol(lk),
        );
    }
    ck.finish();
}

/// Odd sizes around the block edges (MQ = 32 query rows, BK = 128 keys,
/// 16/8-lane vectors): every Lq × Lk pair, head sizes cycling through
/// 1, 8, 64, 80, with mask, causal and softcap variants in turn.
#[test]
fn attention_odd_sizes() {
    let mut ck = Checker::new("attention odd sizes");
    let mut rng = Rng::new(23);
    let sizes = [1usize, 3, 17, 63, 65, 129, 300];
    let ds = [1usize, 8, 64, 80];
    let mut case = 0;
    for &lq in &sizes {
        for &lk in &sizes {
            let d = ds[case % ds.len()];
            let dv = ds[(case / 2) % ds.len()];
            let variant = case % 4;
            case += 1;
            let (mask, causal, softcap) = match variant {
                0 => (false, false, 0.0),
                1 => (true, false, 0.0),
                2 => (false, true, 0.0),
                _ => (true, false, 20.0),
            };
            let heads = 2;
            let mut ts = vec![
                randn(&mut rng, &[heads, lq, d]),
                randn(&mut rng, &[heads, d, lk]),
                randn(&mut rng, &[heads, lk, dv]),
            ];
            if mask {
                // A padding-style mask: some keys hidden (−inf) for all rows.
                let mut m = randn(&mut rng, &[1, 1, lk]);
                if let TensorData::F32(v) = &mut m.data {
                    for (j, x) in v.iter_mut().enumerate() {
                        if j % 5 == 3 && j + 1 < lk {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
                ts.push(m);
            }
            let op = Op::Attention {
                scale: (1.0 / (d as f32).sqrt()).into(),
                causal,
                softcap: softcap.into(),
                views: None,
            };
            ck.op(
                &format!(
                    "attention lq {lq} lk {lk} d {d} dv {dv} mask {mask} causal {causal} softcap {softcap}"
                ),
                op,
                args_with_consts(ts, &[]),
                softmax_tol(lk),
            );
        }
    }
    ck.finish();
}

/// Im2col convs large enough for the assembled GEMM, so on AVX-512 the
/// im2col writes the packed B layout directly: odd widths (vector tails
/// spanning output rows), chunks with different padded rows, dilation,
/// groups, a 1×1 output, row strides, narrow M (64-column panels), and
/// narrow chunks computed as the transposed product.
#[test]
fn conv_packed_im2col() {
    use nnc_compiler::ir::ConvAlgo;
    let mut ck = Checker::new("conv packed im2col");
    let mut rng = Rng::new(29);
    #[allow(clippy::type_complexity)]
    #[rustfmt::skip]
    let cases: Vec<(Vec<usize>, Vec<usize>, [usize; 2], [usize; 2], [usize; 4], usize, usize)> = vec![
        // x, w, strides, dilations, pads, group, chunk rows
        (vec![1, 8, 17, 17], vec![16, 8, 3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, 17),
        (vec![1, 8, 18, 18], vec![16, 8, 3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, 6),
        (vec![2, 4, 13, 63], vec![32, 4, 3, 3], [1, 1], [1, 2], [0, 1, 2, 1], 1, 13),
        (vec![1, 3, 5, 65], vec![64, 3, 3, 3], [2, 1], [1, 1], [1, 1, 1, 1], 1, 3),
        (vec![1, 32, 1, 1], vec![256, 32, 3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, 1),
        (vec![1, 16, 3, 3], vec![64, 16, 3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, 3),
        (vec![1, 16, 12, 12], vec![32, 8, 3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 2, 4),
        (vec![1, 4, 20, 20], vec![24, 4, 3, 3], [1, 1], [2, 2], [2, 2, 2, 2], 1, 5),
        (vec![1, 16, 16, 16], vec![5, 16, 3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, 8),
        (vec![1, 32, 7, 7], vec![64, 32, 3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, 7),
        (vec![1, 6, 11, 11], vec![40, 6, 5, 2], [1, 1], [1, 1], [3, 0, 1, 2], 1, 1),
        // Narrow chunks (N < 64, not whole vectors): the transposed product.
        (vec![1, 16, 12, 12], vec![48, 16, 3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1, 3),
        (vec![2, 32, 5, 5], vec![40, 32, 3, 3], [1, 1], [1, 1], [0, 0, 0, 0], 1, 3),
        (vec![1, 24, 9, 7], vec![33, 24, 3, 3], [2, 1], [1, 1], [1, 1, 1, 1], 1, 5),
        // Column stride 2 (even-lane permutes), also transposed (N = 49).
        (vec![1, 3, 23, 23], vec![64, 3, 7, 7], [2, 2], [1, 1], [3, 3, 3, 3], 1, 4),
        (vec![1, 16, 14, 14], vec![32, 16, 3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 1, 7),
        (vec![2, 8, 17, 33], vec![16, 8, 3, 3], [1, 2], [1, 2], [1, 2, 1, 2], 1, 17),
        (vec![1, 64, 8, 8], vec![128, 64, 1, 1], [2, 2], [1, 1], [0, 0, 0, 0], 1, 4),
        (vec![1, 5, 9, 40], vec![24, 5, 2, 5], [2, 2], [1, 1], [0, 2, 1, 1], 1, 5),
    ];
    for (xs, ws, strides, dil, pads, group, rows) in cases {
        for (bias, relu) in [(false, false), (true, true)] {
            let kernel = [ws[2], ws[3]];
            let window = win(&kernel, &strides, &dil, &pads, false);
            let mut ts = vec![randn(&mut rng, &xs), randn(&mut rng, &ws)];
            if bias {
                ts.push(randn(&mut rng, &[ws[0]]));
            }
            let k = ws[1] * kernel[0] * kernel[1];
            let algo = ConvAlgo::Im2col { chunk_rows: rows };
            let op = Op::ConvImpl {
                window,
                group,
                algo,
                relu,
                pool: None,
            };
            ck.op(
                &format!("conv {algo:?} x{xs:?} w{ws:?} s{strides:?} d{dil:?} p{pads:?} g{group} bias {bias} relu {relu}"),
                op,
                args_with_consts(ts, &[1, 2]),
                accum_tol(k, 1.0),
            );
        }
    }
    ck.finish();
}

/// Narrow chunks (odd N = 1, 17, 49, 63) computed as the transposed
/// product, with K split into slices when the unfolded block would not
/// stay in L2 (K = 2700: two uneven slices, 4608: three), with bias and
/// relu, and with a fused residual (the product is added while
/// transposing back, relu after the add).
#[test]
fn conv_transposed_residual() {
    use nnc_compiler::ir::ConvAlgo;
    let mut ck = Checker::new("conv transposed residual");
    let mut rng = Rng::new(31);
    #[rustfmt::skip]
    let cases: Vec<(Vec<usize>, Vec<usize>, usize)> = vec![
        // x, w, chunk rows (3×3, stride 1, pad 1)
        (vec![1, 32, 1, 1], vec![64, 32, 3, 3], 1),
        (vec![1, 16, 3, 17], vec![48, 16, 3, 3], 1),
        (vec![1, 300, 7, 7], vec![40, 300, 3, 3], 7),
        (vec![1, 512, 7, 7], vec![32, 512, 3, 3], 7),
        (vec![2, 24, 9, 7], vec![40, 24, 3, 3], 9),
    ];
    for (xs, ws, rows) in cases {
        for (residual, relu) in [(false, true), (true, false), (true, true)] {
            let window = win(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], false);
            let mut ts = vec![
                randn(&mut rng, &xs),
                randn(&mut rng, &ws),
                randn(&mut rng, &[ws[0]]),
            ];
            if residual {
                ts.push(randn(&mut rng, &[xs[0], ws[0], xs[2], xs[3]]));
            }
            let k = ws[1] * 9;
            let algo = ConvAlgo::Im2col { chunk_rows: rows };
            let op = Op::ConvImpl {
                window,
                group: 1,
                algo,
                relu,
                pool: None,
            };
            ck.op(
                &format!("conv T x{xs:?} w{ws:?} rows {rows} residual {residual} relu {relu}"),
                op,
                args_with_consts(ts, &[1, 2]),
                accum_tol(k, 1.0),
            );
        }
    }
    ck.finish();
}

/// Winograd F(2,3) convs (assembled transforms, AVX-512 only): odd and even
/// output sizes (partial edge tiles), pads 0/1 and asymmetric, a 1×1
/// output, several tile-row chunkings (first/interior/last chunks differ
/// in padded rows), small and wide channel counts (64-column panels for
/// M ≤ 6), batches, bias/relu, a fused residual, and a fused 2×2/2 max pool
/// (one tile per window, odd conv outputs drop the last row/column).
/// Tolerance: accumulation over C·9 terms, ×4 for the transforms (their
/// intermediate values grow up to ~4× the inputs).
#[test]
fn conv_winograd() {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("conv_winograd: skipped (no AVX-512 on this host)");
        return;
    }
    conv_winograd_cases(Checker::new("conv winograd"));
}

/// The portable Winograd path (f32x4 Cranelift transforms around ordinary
/// GEMMs: what AArch64 and x86-64 below AVX-512 run), on any host: with no
/// assembled kernels (the Cranelift GEMM), and with the AVX2 ones.
#[test]
fn conv_winograd_portable() {
    conv_winograd_cases(Checker::new("conv winograd portable").capped(None));
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        conv_winograd_cases(
            Checker::new("conv winograd portable avx2").capped(Some(Level::Avx2Fma)),
        );
    }
}

fn conv_winograd_cases(mut ck: Checker) {
    use nnc_compiler::ir::ConvAlgo;
    let mut rng = Rng::new(37);
    #[allow(clippy::type_complexity)]
    #[rustfmt::skip]
    let cases: Vec<(Vec<usize>, Vec<usize>, [usize; 4], Vec<usize>)> = vec![
        // x, w, pads, tile-row chunkings
        (vec![1, 16, 17, 17], vec![16, 16, 3, 3], [1, 1, 1, 1], vec![9, 3, 1]),
        (vec![1, 8, 18, 18], vec![24, 8, 3, 3], [1, 1, 1, 1], vec![9, 3, 1]),
        (vec![2, 5, 13, 29], vec![17, 5, 3, 3], [0, 0, 0, 0], vec![6, 2]),
        (vec![1, 3, 9, 40], vec![5, 3, 3, 3], [1, 0, 2, 1], vec![5, 1]),
        (vec![1, 32, 1, 1], vec![64, 32, 3, 3], [1, 1, 1, 1], vec![1]),
        (vec![1, 64, 14, 14], vec![64, 64, 3, 3], [1, 1, 1, 1], vec![7, 1]),
        (vec![1, 33, 7, 7], vec![40, 33, 3, 3], [1, 1, 1, 1], vec![4, 2]),
        // Narrow chunks multiplied transposed on AVX-512 (14 tiles, 50
        // filters: a 2-filter tail in the transpose back), batch 2.
        (vec![2, 72, 7, 13], vec![50, 72, 3, 3], [1, 1, 1, 1], vec![2, 4]),
        (vec![3, 1, 6, 35], vec![4, 1, 3, 3], [1, 1, 1, 1], vec![3]),
        // 1-wide and 3-wide outputs, odd heights, a 2-wide pad
        (vec![2, 4, 5, 3], vec![3, 4, 3, 3], [1, 1, 1, 1], vec![3, 1]),
        (vec![1, 2, 3, 3], vec![6, 2, 3, 3], [0, 0, 0, 0], vec![1]),
        (vec![1, 7, 11, 9], vec![9, 7, 3, 3], [2, 0, 1, 2], vec![6, 2]),
    ];
    for (xs, ws, pads, chunkings) in cases {
        let window = win(&[3, 3], &[1, 1], &[1, 1], &pads, false);
        let oh = xs[2] + pads[0] + pads[2] - 2;
        let ow = xs[3] + pads[1] + pads[3] - 2;
        let k = ws[1] * 9;
        for tile_rows in chunkings {
            let algo = ConvAlgo::Winograd { tile_rows };
            for (bias, residual, relu) in [
                (false, false, false),
                (true, false, true),
                (true, true, true),
            ] {
                let mut ts = vec![randn(&mut rng, &xs), randn(&mut rng, &ws)];
                if bias || residual {
                    ts.push(randn(&mut rng, &[ws[0]]));
                }
                if residual {
                    ts.push(randn(&mut rng, &[xs[0], ws[0], oh, ow]));
                }
                let op = Op::ConvImpl {
                    window: window.clone(),
                    group: 1,
                    algo,
                    relu,
                    pool: None,
                };
                ck.op(
                    &format!("winograd x{xs:?} w{ws:?} p{pads:?} rows {tile_rows} bias {bias} residual {residual} relu {relu}"),
                    op,
                    args_with_consts(ts, &[1, 2]),
                    accum_tol(k, 4.0),
                );
            }
            if oh >= 2 && ow >= 2 {
                let pool = win(&[2, 2], &[2, 2], &[1, 1], &[0; 4], false);
                let mut ts = vec![randn(&mut rng, &xs), randn(&mut rng, &ws)];
                ts.push(randn(&mut rng, &[ws[0]]));
                let op = Op::ConvImpl {
                    window: window.clone(),
                    group: 1,
                    algo: ConvAlgo::Winograd {
                        tile_rows: tile_rows.min(oh / 2),
                    },
                    relu: true,
                    pool: Some(Box::new(pool)),
                };
                ck.op(
                    &format!("winograd+pool x{xs:?} w{ws:?} p{pads:?} rows {tile_rows}"),
                    op,
                    args_with_consts(ts, &[1, 2]),
                    accum_tol(k, 4.0),
                );
            }
        }
    }
    ck.finish();
}

/// The channel-blocked layout: both conversions on any host, and the
/// direct blocked conv (assembled for AVX-512) against the reference
/// evaluator — blocked input, packed filters with bias, a blocked
/// residual, relu; strides, pads (asymmetric too), dilation, 1×1 and 7×7
/// windows, odd planes, batches, and enough output blocks to split over
/// groups of tasks (a shorter last group too).
#[test]
fn conv_blocked() {
    let mut ck = Checker::new("conv blocked");
    let mut rng = Rng::new(41);
    for shape in [vec![1, 16, 5, 7], vec![2, 48, 3, 1], vec![1, 32, 1, 1]] {
        let x = randn(&mut rng, &shape);
        ck.op(
            &format!("to_blocked {shape:?}"),
            Op::ToBlocked { cb: 16 },
            vec![Arg::In(x)],
            EXACT,
        );
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        let xb = randn(&mut rng, &[n, c / 16, h, w, 16]);
        ck.op(
            &format!("from_blocked {shape:?}"),
            Op::FromBlocked,
            vec![Arg::In(xb)],
            EXACT,
        );
    }
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("conv_blocked: direct conv skipped (no AVX-512 on this host)");
        ck.finish();
        return;
    }
    #[allow(clippy::type_complexity)]
    #[rustfmt::skip]
    let cases: Vec<(Vec<usize>, Vec<usize>, [usize; 2], [usize; 2], [usize; 4])> = vec![
        // x, w, strides, dilations, pads
        (vec![1, 16, 9, 9], vec![16, 16, 3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
        (vec![2, 32, 14, 14], vec![48, 32, 3, 3], [2, 2], [1, 1], [1, 1, 1, 1]),
        (vec![1, 64, 7, 7], vec![160, 64, 3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
        (vec![1, 32, 13, 11], vec![32, 32, 1, 1], [2, 2], [1, 1], [0, 0, 0, 0]),
        (vec![1, 16, 23, 19], vec![32, 16, 7, 7], [2, 2], [1, 1], [3, 3, 3, 3]),
        (vec![1, 16, 12, 10], vec![16, 16, 3, 3], [1, 1], [2, 2], [2, 0, 1, 3]),
        (vec![1, 128, 4, 4], vec![256, 128, 3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
    ];
    for (xs, ws, strides, dil, pads) in cases {
        let window = win(&ws[2..], &strides, &dil, &pads, false);
        let oh = window.out_size(0, xs[2]).unwrap();
        let ow = window.out_size(1, xs[3]).unwrap();
        let k = ws[1] * ws[2] * ws[3];
        for (bias, residual, relu) in [
            (false, false, false),
            (true, false, true),
            (true, true, true),
        ] {
            let mut ts = vec![
                randn(&mut rng, &[xs[0], xs[1] / 16, xs[2], xs[3], 16]),
                randn(&mut rng, &ws),
            ];
            if bias || residual {
                ts.push(randn(&mut rng, &[ws[0]]));
            }
            if residual {
                ts.push(randn(&mut rng, &[xs[0], ws[0] / 16, oh, ow, 16]));
            }
            let op = Op::ConvBlocked {
                window: window.clone(),
                relu,
                tile: None,
            };
            ck.op(
                &format!("blocked x{xs:?} w{ws:?} s{strides:?} d{dil:?} p{pads:?} bias {bias} residual {residual} relu {relu}"),
                op,
                args_with_consts(ts, &[1, 2]),
                accum_tol(k, 4.0),
            );
        }
    }
    // Every tiling the optimizer may choose (register tiles of 1–4 blocks,
    // chunked and unchunked input channels), with a residual and relu.
    for (xs, ws) in [
        (vec![1, 64, 7, 7], vec![80, 64, 3, 3]),
        (vec![1, 32, 15, 15], vec![64, 32, 3, 3]),
    ] {
        let window = win(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], false);
        let xb = [xs[0], xs[1] / 16, xs[2], xs[3], 16];
        let spec = nnc_compiler::codegen::blocked::spec(&window, &xb, &ws, &xs, true, true, None);
        let tiles = nnc_compiler::codegen::x86::dconv::tile_candidates(&spec);
        assert!(tiles.len() >= 4, "{tiles:?}");
        // The kernel honours the tiling: every candidate's task-group
        // kernel (what `conv_blocked` runs) assembles to different code.
        let mut codes: Vec<Vec<u8>> = tiles
            .iter()
            .map(|&t| {
                let s = nnc_compiler::codegen::x86::dconv::DirectConv {
                    tile: Some(t),
                    ..spec.clone()
                };
                let (group, _, _, _) = nnc_compiler::codegen::blocked::group_specs(&s);
                nnc_compiler::codegen::x86::dconv::assemble(&group, Level::Avx512).unwrap()
            })
            .collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), tiles.len(), "{tiles:?}");
        for tile in tiles {
            let ts = vec![
                randn(&mut rng, &xb),
                randn(&mut rng, &ws),
                randn(&mut rng, &[ws[0]]),
                randn(&mut rng, &[xs[0], ws[0] / 16, xs[2], xs[3], 16]),
            ];
            let op = Op::ConvBlocked {
                window: window.clone(),
                relu: true,
                tile: Some(tile),
            };
            ck.op(
                &format!("blocked x{xs:?} w{ws:?} tile {tile}"),
                op,
                args_with_consts(ts, &[1, 2]),
                accum_tol(ws[1] * 9, 4.0),
            );
        }
    }
    ck.finish();
}

/// Attention through strided views, as the optimizer builds them around
/// head-split reshapes/transposes: q and v read from [L, heads, D (+pad)]
/// projection-style buffers at an offset, kᵀ from padded rows, the result
/// written as [Lq, heads·Dv]. The evaluator applies the same views.
#[test]
fn attention_strided_views() {
    use nnc_compiler::ir::{AttnViews, View};
    let mut ck = Checker::new("attention strided views");
    let mut rng = Rng::new(29);
    let sizes = [1usize, 17, 65, 129];
    let ds = [1usize, 8, 64];
    let h = 3;
    let mut case = 0;
    for &lq in &sizes {
        for &lk in &sizes {
            for &d in &ds {
                let dv = ds[(case + 1) % ds.len()];
                let (mask, causal) = [(false, false), (true, false), (false, true)][case % 3];
                case += 1;
                let view = |shape: [usize; 3], strides: [usize; 3], offset| View {
                    shape: shape.to_vec(),
                    strides: strides.to_vec(),
                    offset,
                };
                let (dq, dk) = (d + 3, lk + 2);
                let w = AttnViews {
                    q: Some(view([h, lq, d], [dq, h * dq, 1], 1)),
                    // Every other case: keys as rows of a [Lk, heads·D]
                    // projection (column stride h·D: the kernel packs kᵀ).
                    kt: Some(if case % 2 == 0 {
                        view([h, d, lk], [d * dk, dk, 1], 2)
                    } else {
                        view([h, d, lk], [d, 1, h * d], 0)
                    }),
                    v: Some(view([h, lk, dv], [dv, h * dv, 1], 0)),
                    out: Some((vec![lq, h * dv], view([h, lq, dv], [dv, h * dv, 1], 0))),
                };
                let mut ts = vec![
                    randn(&mut rng, &[lq, h, dq]),
                    if case % 2 == 0 {
                        randn(&mut rng, &[h, d, dk])
                    } else {
                        randn(&mut rng, &[lk, h, d])
                    },
                    randn(&mut rng, &[lk, h, dv]),
                ];
                if mask {
                    ts.push(randn(&mut rng, &[1, lq, lk]));
                }
                let op = Op::Attention {
                    scale: (1.0 / (d as f32).sqrt()).into(),
                    causal,
                    softcap: 0.0.into(),
                    views: Some(Box::new(w)),
                };
                ck.op(
                    &format!(
                        "attention views lq {lq} lk {lk} d {d} dv {dv} mask {mask} causal {causal}"
                    ),
                    op,
                    args_with_consts(ts, &[]),
                    softmax_tol(lk),
                );
            }
        }
    }
    ck.finish();
}

/// Conv (+ bias, relu) with a fused max pool: each chunk of pooled rows
/// computes its conv rows into a tile and pools from it. Odd sizes, pools
/// with and without overlap (recomputed rows), pads, ceil_mode, chunkings
/// whose first/last tiles are clamped, and windows skipping conv rows.
#[test]
fn conv_max_pool_fused() {
    use nnc_compiler::ir::ConvAlgo;
    let mut ck = Checker::new("conv max pool fused");
    let mut rng = Rng::new(31);
    #[allow(clippy::type_complexity)]
    #[rustfmt::skip]
    let cases: Vec<(Vec<usize>, Vec<usize>, [usize; 2], [usize; 4], [usize; 2], [usize; 2], [usize; 4], bool, Vec<usize>)> = vec![
        // x, w, conv strides, conv pads, pool kernel, pool strides, pool pads, ceil, pooled chunk rows
        (vec![2, 1, 28, 28], vec![32, 1, 3, 3], [1, 1], [0; 4], [2, 2], [2, 2], [0; 4], false, vec![13, 1, 2]),
        (vec![1, 32, 13, 13], vec![64, 32, 3, 3], [1, 1], [0; 4], [2, 2], [2, 2], [0; 4], false, vec![5, 1]),
        (vec![1, 3, 1, 1], vec![5, 3, 3, 3], [1, 1], [1; 4], [2, 2], [2, 2], [0, 0, 1, 1], false, vec![1]),
        (vec![1, 3, 3, 3], vec![7, 3, 3, 3], [1, 1], [1; 4], [2, 2], [2, 2], [0; 4], true, vec![2, 1]),
        (vec![1, 5, 17, 17], vec![9, 5, 3, 3], [1, 1], [1; 4], [3, 3], [2, 2], [1; 4], false, vec![9, 3, 1]),
        (vec![1, 3, 17, 19], vec![11, 3, 3, 3], [1, 1], [0; 4], [3, 3], [2, 2], [1; 4], true, vec![8, 2, 1]),
        (vec![1, 4, 63, 63], vec![33, 4, 3, 3], [1, 1], [1; 4], [2, 2], [2, 2], [0; 4], false, vec![31, 1]),
        (vec![1, 3, 65, 65], vec![16, 3, 7, 7], [2, 2], [3; 4], [3, 3], [2, 2], [1; 4], false, vec![17, 4, 1]),
        (vec![2, 6, 15, 65], vec![10, 3, 3, 3], [1, 1], [1; 4], [2, 3], [2, 3], [0, 1, 0, 1], false, vec![5, 1]),
        (vec![1, 16, 12, 12], vec![48, 16, 3, 3], [1, 1], [1; 4], [3, 3], [1, 1], [0; 4], false, vec![10, 5, 2, 1]),
    ];
    for (xs, ws, strides, pads, pk, ps, pp, ceil, chunkings) in cases {
        let group = xs[1] / ws[1];
        for chunk_rows in chunkings {
            for (bias, relu) in [(false, false), (true, true)] {
                let kernel = [ws[2], ws[3]];
                let window = win(&kernel, &strides, &[1, 1], &pads, false);
                let pool = win(&pk, &ps, &[1, 1], &pp, ceil);
                let mut ts = vec![randn(&mut rng, &xs), randn(&mut rng, &ws)];
                if bias {
                    ts.push(randn(&mut rng, &[ws[0]]));
                }
                let k = ws[1] * kernel[0] * kernel[1];
                let op = Op::ConvImpl {
                    window,
                    group,
                    algo: ConvAlgo::Im2col { chunk_rows },
                    relu,
                    pool: Some(Box::new(pool)),
                };
                ck.op(
                    &format!("conv x{xs:?} w{ws:?} s{strides:?} p{pads:?} pool {pk:?}/{ps:?} p{pp:?} ceil {ceil} rows {chunk_rows} bias {bias} relu {relu}"),
                    op,
                    args_with_consts(ts, &[1, 2]),
                    accum_tol(k, 1.0),
                );
            }
        }
    }
    ck.finish();
}

#[test]
fn conv_algorithms() {
    use nnc_compiler::ir::ConvAlgo;
    let mut ck = Checker::new("conv algorithms");
    let mut rng = Rng::new(23);
    // (x shape, w shape, kernel, strides, dilations, pads, group, algo)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        Vec<usize>,
        Vec<usize>,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 4],
        usize,
        ConvAlgo,
    )> = vec![
        (
            vec![1, 3, 9, 7],
            vec![4, 3, 3, 3],
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            1,
            ConvAlgo::Im2col { chunk_rows: 3 },
        ),
        (
            vec![2, 4, 10, 10],
            vec![6, 2, 3, 3],
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 0, 2, 1],
            2,
            ConvAlgo::Im2col { chunk_rows: 1 },
        ),
        (
            vec![1, 2, 12, 5],
            vec![3, 2, 2, 2],
            [2, 2],
            [1, 1],
            [2, 2],
            [0, 0, 0, 0],
            1,
            ConvAlgo::Im2col { chunk_rows: 5 },
        ),
        (
            vec![1, 8, 11, 13],
            vec![8, 1, 3, 3],
            [3, 3],
            [1, 1],
            [1, 1],
            [1, 1, 1, 1],
            8,
            ConvAlgo::Depthwise,
        ),
        (
            vec![2, 5, 17, 9],
            vec![5, 1, 5, 3],
            [5, 3],
            [2, 1],
            [1, 2],
            [2, 1, 2, 3],
            5,
            ConvAlgo::Depthwise,
        ),
        (
            vec![1, 3, 7, 7],
            vec![3, 1, 3, 3],
            [3, 3],
            [2, 2],
            [1, 1],
            [0, 0, 1, 1],
            3,
            ConvAlgo::Depthwise,
        ),
        (
            vec![1, 6, 5, 9],
            vec![4, 6, 1, 1],
            [1, 1],
            [1, 1],
            [1, 1],
            [0, 0, 0, 0],
            1,
            ConvAlgo::Pointwise,
        ),
    ];
    for (xs, ws, kernel, strides, dil, pads, group, algo) in cases {
        for (bias, relu) in [(false, false), (true, false), (true, true)] {
            let window = win(&kernel, &strides, &dil, &pads, false);
            let mut ts = vec![randn(&mut rng, &xs), randn(&mut rng, &ws)];
            if bias {
                ts.push(randn(&mut rng, &[ws[0]]));
            }
            let k = ws[1] * kernel[0] * kernel[1];
            let op = Op::ConvImpl {
                window,
                group,
                algo,
                relu,
                pool: None,
            };
            ck.op(
                &format!("conv {algo:?} x{xs:?} w{ws:?} bias {bias} relu {relu}"),
                op,
                args_with_consts(ts, &[1, 2]),
                accum_tol(k, 1.0),
            );
        }
    }
    ck.finish();
}

#[test]
fn round_and_sign() {
    let mut ck = Checker::new("round/sign");
    let mut rng = Rng::new(31);
    // Halves (ties to even), signed zeros, NaN and infinities, then random data.
    let special = f32t(
        &[16],
        vec![
            0.5,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.5,
            0.0,
            -0.0,
            2.4999998,
            1e9,
            -7.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3.7,
            -3.2,
        ],
    );
    for op in [UnaryOp::Round, UnaryOp::Sign] {
        ck.op(
            &format!("{} special", op.name()),
            Op::Unary(op),
            vec![Arg::In(special.clone())],
            EXACT,
        );
        for s in [vec![1usize], vec![7], vec![3, 33]] {
            let x = rand_in(&mut rng, &s, -10.0, 10.0);
            ck.op(
                &format!("{} {s:?}", op.name()),
                Op::Unary(op),
                vec![Arg::In(x)],
                EXACT,
            );
        }
    }
    ck.finish();
}

#[test]
fn reduce_int64() {
    let mut ck = Checker::new("reduce int64");
    let mut rng = Rng::new(32);
    use ReduceOp::*;
    for s in [vec![5usize], vec![2, 3, 4], vec![3, 1, 7], vec![4, 0, 2]] {
        let r = s.len();
        let mut ranges: Vec<Vec<usize>> = vec![vec![]];
        for lo in 0..r {
            for hi in lo + 1..=r {
                ranges.push((lo..hi).collect());
            }
        }
        for op in [Sum, Max, Min, Prod] {
            for axes in &ranges {
                if matches!(op, Max | Min) && axes.iter().any(|&a| s[a] == 0) {
                    continue; // max/min over an empty set is refused
                }
                for keepdims in [false, true] {
                    let x = match op {
                        Prod => i64t(
                            &s,
                            (0..numel(&s))
                                .map(|_| (rng.next_u64() % 7) as i64 - 3)
                                .collect(),
                        ),
                        _ => rand_i64(&mut rng, &s),
                    };
                    let rop = Op::Reduce {
                        op,
                        axes: axes.clone(),
                        keepdims,
                    };
                    ck.op(
                        &format!(
                            "reduce {} i64 {s:?} axes {axes:?} keepdims={keepdims}",
                            op.name()
                        ),
                        rop,
                        vec![Arg::In(x)],
                        EXACT,
                    );
                }
            }
        }
    }
    ck.finish();
}

#[test]
fn gather_elements() {
    let mut ck = Checker::new("gather_elements");
    let mut rng = Rng::new(33);
    // (data shape, axis, index shape)
    let cases: Vec<(Vec<usize>, usize, Vec<usize>)> = vec![
        (vec![5], 0, vec![3]),
        (vec![3, 3], 0, vec![2, 3]),
        (vec![3, 3], 1, vec![3, 5]),
        (vec![2, 4, 3], 1, vec![2, 6, 2]),
        (vec![2, 4, 3], 2, vec![1, 4, 3]),
        (vec![2, 4, 3], 0, vec![0, 4, 3]),
    ];
    for (s, axis, ishape) in &cases {
        let d = s[*axis] as i64;
        for dt in DTYPES {
            let data = rand_of(&mut rng, dt, s);
            let idx: Vec<i64> = (0..numel(ishape))
                .map(|_| (rng.next_u64() % (2 * d as u64)) as i64 - d)
                .collect();
            ck.op_variants(
                &format!("gather_elements {dt} {s:?} axis {axis} idx {ishape:?}"),
                &Op::GatherElements { axis: *axis },
                &[data, i64t(ishape, idx)],
                &[&[], &[1], &[0]],
                EXACT,
            );
        }
    }
    // Out-of-range run-time indices: status 3.
    for bad in [vec![0i64, 3], vec![-4, 0], vec![i64::MIN, 1]] {
        ck.cases += 1;
        let (g, ins) = one_op(
            Op::GatherElements { axis: 1 },
            vec![
                Arg::In(randn(&mut rng, &[1, 3])),
                Arg::In(i64t(&[1, 2], bad.clone())),
            ],
        )
        .unwrap();
        match run_jit(&g, &ins) {
            Ok(r) if r.status == 3 => {}
            Ok(r) => ck.fail(
                &format!("gather_elements out of range {bad:?}"),
                format!("status {} (want 3)", r.status),
            ),
            Err(e) => ck.fail(&format!("gather_elements out of range {bad:?}"), e),
        }
    }
    ck.finish();
}
