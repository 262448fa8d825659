//! Reliability of generated code: memory safety (guard pages, valgrind),
//! run-time index checks, concurrency, reproducible builds and IEEE special
//! values (NaN, ±Inf) compared with onnxruntime.
//!
//! Tests that could crash the process (a stray access in generated code, a
//! SIGFPE) run their body in a child process (`nnc_tests::run_in_child`), so
//! a crash is reported as a failure naming the model and the variant.

#[path = "../frontends/onnx/tests/common/mod.rs"]
mod common;

use common::{af, ai, ais, tf32, ti64, INT64, M};
use nnc_runtime::{abi, Model, ModelInfo, Tensor, ThreadPool};
use nnc_tests::{
    describe_exit, example, in_child, nnc_cli, run_in_child, run_with_timeout, skip, GuardBuf,
    Place, TempDir,
};
use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Models and helpers
// ---------------------------------------------------------------------------

type Shapes = Vec<(String, Vec<usize>)>;

fn opts(shapes: &Shapes) -> nnc::Options {
    nnc::Options {
        input_shapes: shapes.clone(),
        ..Default::default()
    }
}

/// Writes a built model to `dir/name.onnx`.
fn save(dir: &TempDir, name: &str, m: &M) -> PathBuf {
    let p = dir.join(format!("{name}.onnx"));
    std::fs::write(&p, m.bytes()).expect("write model");
    p
}

fn jit(path: &Path, shapes: &Shapes) -> Model {
    nnc::jit::compile_file(path, &opts(shapes))
        .unwrap_or_else(|e| panic!("JIT {}: {e}", path.display()))
}

fn aot(path: &Path, shapes: &Shapes, dir: &TempDir) -> (Model, PathBuf) {
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    let so = dir.join(format!("{stem}.so"));
    nnc::compile_file(path, &so, None, false, &opts(shapes))
        .unwrap_or_else(|e| panic!("compile {}: {e}", path.display()));
    (
        Model::load(&so).unwrap_or_else(|e| panic!("load {}: {e}", so.display())),
        so,
    )
}

/// Deterministic inputs for a signature; `seed` varies the values. int64
/// inputs get 0 (in range for any index input), bools alternate.
fn inputs(info: &ModelInfo, seed: u64) -> Vec<Tensor> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    info.inputs
        .iter()
        .map(|t| {
            let n = t.numel();
            match t.dtype {
                nnc_runtime::DType::F32 => Tensor::from_f32(
                    &t.shape,
                    (0..n)
                        .map(|_| (next() % 20001) as f32 / 10000.0 - 1.0)
                        .collect(),
                ),
                nnc_runtime::DType::I64 => Tensor::from_i64(&t.shape, vec![0; n]),
                _ => Tensor::from_bool(&t.shape, (0..n).map(|i| i % 2 == 0).collect()),
            }
            .unwrap()
        })
        .collect()
}

fn bits(ts: &[Tensor]) -> Vec<Vec<u8>> {
    ts.iter().map(|t| t.as_bytes().to_vec()).collect()
}

/// Small models with odd sizes (SIMD tails everywhere), covering the kernel
/// families: conv/pool/softmax, dense/norm, data movement with a run-time
/// Gather, depthwise conv, a long elementwise row.
fn odd_models() -> Vec<(&'static str, M)> {
    let w = |name: &str, dims: &[i64]| {
        let n: i64 = dims.iter().product();
        tf32(
            name,
            dims,
            &(0..n)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 10.0)
                .collect::<Vec<_>>(),
        )
    };
    vec![
        (
            "odd_conv",
            M::new(17)
                .input_f32("x", &[1, 3, 7, 9])
                .output("y")
                .init(w("w", &[5, 3, 3, 3]))
                .init(w("b", &[5]))
                .node(
                    "conv",
                    "Conv",
                    &["x", "w", "b"],
                    &["c"],
                    vec![ais("pads", &[1, 1, 1, 1])],
                )
                .node("relu", "Relu", &["c"], &["r"], vec![])
                .node(
                    "mp",
                    "MaxPool",
                    &["r"],
                    &["p"],
                    vec![
                        ais("kernel_shape", &[2, 2]),
                        ais("strides", &[2, 2]),
                        ai("ceil_mode", 1),
                    ],
                )
                .node(
                    "ap",
                    "AveragePool",
                    &["p"],
                    &["a"],
                    vec![ais("kernel_shape", &[3, 3]), ais("pads", &[1, 1, 1, 1])],
                )
                .node("sm", "Softmax", &["a"], &["y"], vec![ai("axis", 1)]),
        ),
        (
            "odd_dense",
            M::new(17)
                .input_f32("x", &[5, 13])
                .output("y")
                .init(w("w", &[13, 7]))
                .init(w("b", &[7]))
                .init(w("g", &[7]))
                .init(w("w2", &[3, 7]))
                .node("mm", "MatMul", &["x", "w"], &["m"], vec![])
                .node("add", "Add", &["m", "b"], &["a"], vec![])
                .node(
                    "ln",
                    "LayerNormalization",
                    &["a", "g", "b"],
                    &["n"],
                    vec![ai("axis", -1), af("epsilon", 1e-5)],
                )
                .node("sg", "Sigmoid", &["n"], &["s"], vec![])
                .node("gemm", "Gemm", &["s", "w2"], &["y"], vec![ai("transB", 1)]),
        ),
        (
            "odd_move",
            M::new(13)
                .input_f32("x", &[3, 5, 7])
                .input("i", INT64, &["2"])
                .output("y")
                .output("z")
                .init(ti64("st", &[1], &[1]))
                .init(ti64("en", &[1], &[6]))
                .init(ti64("ax", &[1], &[2]))
                .init(ti64("pads", &[6], &[0, 1, 0, 1, 0, 2]))
                .init(ti64("shape", &[2], &[-1, 5]))
                .init(ti64("raxes", &[1], &[0]))
                .node(
                    "tr",
                    "Transpose",
                    &["x"],
                    &["t"],
                    vec![ais("perm", &[2, 0, 1])],
                )
                .node("g", "Gather", &["t", "i"], &["g"], vec![ai("axis", 0)])
                .node("sl", "Slice", &["x", "st", "en", "ax"], &["s"], vec![])
                .node("pad", "Pad", &["s", "pads"], &["p"], vec![])
                .node("cat", "Concat", &["p", "p"], &["c"], vec![ai("axis", 1)])
                .node("rs", "Reshape", &["g", "shape"], &["r"], vec![])
                .node(
                    "sum",
                    "ReduceSum",
                    &["r", "raxes"],
                    &["y"],
                    vec![ai("keepdims", 0)],
                )
                .node("id", "Identity", &["c"], &["z"], vec![]),
        ),
        (
            "depthwise",
            M::new(17)
                .input_f32("x", &[1, 6, 5, 5])
                .output("y")
                .init(w("w", &[6, 1, 3, 3]))
                .node(
                    "conv",
                    "Conv",
                    &["x", "w"],
                    &["c"],
                    vec![ai("group", 6), ais("strides", &[2, 2])],
                )
                .node("gap", "GlobalAveragePool", &["c"], &["y"], vec![]),
        ),
        (
            "long_row",
            M::new(17)
                .input_f32("x", &[1, 1, 1, 37])
                .output("y")
                .node("tanh", "Tanh", &["x"], &["t"], vec![])
                .node("exp", "Exp", &["t"], &["e"], vec![])
                .node("erf", "Erf", &["e"], &["y"], vec![]),
        ),
    ]
}

/// Every model the memory-safety and concurrency tests run: the examples
/// and the odd-size models, as (name, path, input shapes).
fn all_models(dir: &TempDir) -> Vec<(String, PathBuf, Shapes)> {
    let mut v = vec![
        ("mnist_cnn".to_string(), example("mnist_cnn.onnx"), vec![]),
        (
            "attention".to_string(),
            example("attention.onnx"),
            vec![("x".to_string(), vec![16, 1, 64])],
        ),
    ];
    for (name, m) in odd_models() {
        v.push((name.to_string(), save(dir, name, &m), vec![]));
    }
    v
}

// ---------------------------------------------------------------------------
// Raw entry points, for runs with hand-placed buffers
// ---------------------------------------------------------------------------

extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

const RTLD_NOW: c_int = 2;

/// A model's run function plus what keeps it alive.
struct Raw {
    run: abi::nnc_run_fn,
    model: Model,
}

impl Raw {
    /// JIT-compiles `path`, keeping the raw run function.
    fn jit(path: &Path, shapes: &Shapes) -> Raw {
        let p = nnc::prepare_file(path, &opts(shapes)).expect("prepare");
        let j = nnc_compiler::jit::JitModel::compile(&p.graph, &p.plan).expect("JIT");
        // SAFETY: the JIT's entry points follow the nnc ABI (nnc::jit does the same).
        unsafe {
            let run = std::mem::transmute::<nnc_compiler::jit::RunFn, abi::nnc_run_fn>(j.run);
            let info = std::mem::transmute::<nnc_compiler::jit::InfoFn, abi::nnc_info_fn>(j.info);
            let model =
                Model::from_entry_points(info, run, path, Box::new(j.code)).expect("JIT info");
            Raw { run, model }
        }
    }

    /// Loads a library, keeping its `nnc_model_run`.
    fn so(path: &Path) -> Raw {
        let model = Model::load(path).expect("load");
        let c = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: the library is already loaded by `model` (this only bumps
        // its reference count, never dropped: the mapping outlives the test);
        // the symbol has the ABI's run type.
        let run = unsafe {
            let h = dlopen(c.as_ptr(), RTLD_NOW);
            assert!(!h.is_null(), "dlopen {}", path.display());
            let f = dlsym(h, c"nnc_model_run".as_ptr());
            assert!(!f.is_null(), "nnc_model_run missing");
            std::mem::transmute::<*mut c_void, abi::nnc_run_fn>(f)
        };
        Raw { run, model }
    }

    fn info(&self) -> &ModelInfo {
        self.model.info()
    }

    /// # Safety
    /// Buffers must match the signature (or be deliberately NULL).
    unsafe fn call(
        &self,
        ins: &[*const c_void],
        outs: &[*mut c_void],
        ws: *mut c_void,
        threads: Option<&abi::nnc_threads>,
    ) -> i32 {
        (self.run)(
            if ins.is_empty() {
                std::ptr::null()
            } else {
                ins.as_ptr()
            },
            if outs.is_empty() {
                std::ptr::null()
            } else {
                outs.as_ptr()
            },
            ws,
            threads.map_or(std::ptr::null(), |t| t as *const _),
        )
    }
}

// ---------------------------------------------------------------------------
// 3. Generated code safety
// ---------------------------------------------------------------------------

/// Inputs, outputs and the workspace each sit right before (or right
/// after) a PROT_NONE page; every example and odd-size model runs with a
/// caller workspace, with NULL, and through a 3-thread pool, as a JIT model
/// and as a shared library. Any stray access is a segfault, which the
/// parent process reports with the last variant the child announced.
#[test]
fn guard_pages_catch_no_stray_access() {
    const NAME: &str = "guard_pages_catch_no_stray_access";
    if in_child(NAME) {
        guard_pages_child();
        return;
    }
    let r = run_in_child(NAME, Duration::from_secs(300)).expect("guard-page child timed out");
    let last = r
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("guard:"))
        .unwrap_or("(none)");
    assert!(
        r.status.success(),
        "guard-page child: {} after {last:?}\nstdout tail:\n{}\nstderr tail:\n{}",
        describe_exit(&r),
        tail(&r.stdout, 20),
        tail(&r.stderr, 20)
    );
    eprintln!("{}", tail(&r.stdout, 3));
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn guard_pages_child() {
    let dir = TempDir::new("guard");
    let pool = ThreadPool::new(3);
    let threads = pool.as_nnc_threads();
    let mut runs = 0;
    for (name, path, shapes) in all_models(&dir) {
        let (_, so) = aot(&path, &shapes, &dir);
        for (kind, raw) in [("jit", Raw::jit(&path, &shapes)), ("so", Raw::so(&so))] {
            let info = raw.info().clone();
            let ins = inputs(&info, 7);
            let want = bits(&raw.model.run(&ins).expect("reference run"));
            for place in [Place::End, Place::Start] {
                let gin: Vec<GuardBuf> = ins
                    .iter()
                    .map(|t| GuardBuf::from_bytes(t.as_bytes(), 1, place))
                    .collect();
                let mut gout: Vec<GuardBuf> = info
                    .outputs
                    .iter()
                    .map(|t| GuardBuf::new(t.byte_size(), 1, place))
                    .collect();
                let ws = GuardBuf::new(info.workspace_size, info.workspace_align, place);
                let in_ptrs: Vec<*const c_void> =
                    gin.iter().map(|b| b.ptr as *const c_void).collect();
                let out_ptrs: Vec<*mut c_void> =
                    gout.iter().map(|b| b.ptr as *mut c_void).collect();
                for (variant, wsp, th) in [
                    ("caller workspace", ws.ptr as *mut c_void, None),
                    ("workspace NULL", std::ptr::null_mut(), None),
                    (
                        "caller workspace + 3-thread pool",
                        ws.ptr as *mut c_void,
                        Some(&threads),
                    ),
                    (
                        "workspace NULL + 3-thread pool",
                        std::ptr::null_mut(),
                        Some(&threads),
                    ),
                ] {
                    println!("guard: {name} ({kind}), buffers at the {place:?} of their pages, {variant}");
                    for b in gout.iter_mut() {
                        b.fill(0xA5);
                    }
                    // SAFETY: buffers sized by the signature (the point of
                    // the test is that the model stays inside them).
                    let code = unsafe { raw.call(&in_ptrs, &out_ptrs, wsp, th) };
                    assert_eq!(code, 0, "{name} ({kind}) {variant}: run returned {code}");
                    let got: Vec<Vec<u8>> = gout.iter().map(GuardBuf::bytes).collect();
                    assert!(
                        got == want,
                        "{name} ({kind}) {variant}: outputs differ from Model::run"
                    );
                    runs += 1;
                }
            }
            // NULL arguments are refused with code 1, not dereferenced.
            if !info.inputs.is_empty() {
                let out_ptrs: Vec<*mut c_void> =
                    info.outputs.iter().map(|_| std::ptr::null_mut()).collect();
                let null_ins: Vec<*const c_void> =
                    info.inputs.iter().map(|_| std::ptr::null()).collect();
                println!("guard: {name} ({kind}), NULL arguments");
                // SAFETY: the ABI promises to check for NULL before any access.
                unsafe {
                    assert_eq!(
                        raw.call(&[], &out_ptrs, std::ptr::null_mut(), None),
                        1,
                        "{name}: inputs NULL"
                    );
                    assert_eq!(
                        raw.call(&null_ins, &out_ptrs, std::ptr::null_mut(), None),
                        1,
                        "{name}: input[i] NULL"
                    );
                }
            }
        }
    }
    println!("guard: {runs} guarded runs, no stray access");
}

/// Gather whose indices are a run-time int64 input: out-of-range indices
/// make `run` fail with code 3 (numpy-style negatives wrap once).
#[test]
fn runtime_gather_index_out_of_range_is_error_3() {
    const NAME: &str = "runtime_gather_index_out_of_range_is_error_3";
    if in_child(NAME) {
        let dir = TempDir::new("gather");
        for axis in [0i64, 1] {
            let m = M::new(13)
                .input_f32("x", &[4, 3])
                .input("i", INT64, &["2"])
                .output("y")
                .node("g", "Gather", &["x", "i"], &["y"], vec![ai("axis", axis)]);
            let path = save(&dir, &format!("gather{axis}"), &m);
            let dim = if axis == 0 { 4 } else { 3 };
            let x = Tensor::from_f32(&[4, 3], (0..12).map(|v| v as f32).collect()).unwrap();
            let (so_model, _) = aot(&path, &vec![], &dir);
            for (kind, model) in [("jit", jit(&path, &vec![])), ("so", so_model)] {
                for (idx, ok) in [
                    ([0, dim - 1], true),
                    ([-1, -dim], true),
                    ([0, dim], false),
                    ([-dim - 1, 0], false),
                    ([i64::MAX, 0], false),
                    ([0, i64::MIN], false),
                    ([i64::MIN + 1, 1], false),
                ] {
                    println!("gather: axis {axis} ({kind}) indices {idx:?}");
                    let i = Tensor::from_i64(&[2], idx.to_vec()).unwrap();
                    let r = model.run(&[x.clone(), i]);
                    match (ok, r) {
                        (true, Ok(out)) => {
                            let y = out[0].as_f32().unwrap();
                            let wrap = |v: i64| if v < 0 { v + dim } else { v };
                            let want: Vec<f32> = if axis == 0 {
                                idx.iter()
                                    .flat_map(|&r| (0..3).map(move |c| (wrap(r) * 3 + c) as f32))
                                    .collect()
                            } else {
                                (0..4)
                                    .flat_map(|r| {
                                        idx.iter().map(move |&c| (r * 3 + wrap(c)) as f32)
                                    })
                                    .collect()
                            };
                            assert_eq!(y, want.as_slice(), "axis {axis} ({kind}) indices {idx:?}");
                        }
                        (false, Err(nnc_runtime::Error::Run { code: 3 })) => {}
                        (ok, r) => {
                            panic!("axis {axis} ({kind}) indices {idx:?}: valid={ok}, got {r:?}")
                        }
                    }
                }
            }
        }
        return;
    }
    let r = run_in_child(NAME, Duration::from_secs(120)).expect("child timed out");
    assert!(
        r.status.success(),
        "{}:\n{}\n{}",
        describe_exit(&r),
        tail(&r.stdout, 5),
        tail(&r.stderr, 30)
    );
}

/// Integer Div/Mod computed at run time with a zero divisor, or
/// i64::MIN / -1, must not kill the process (x86 `idiv` traps on both).
#[test]
fn runtime_integer_division_does_not_trap() {
    const NAME: &str = "runtime_integer_division_does_not_trap";
    if in_child(NAME) {
        let dir = TempDir::new("idiv");
        for op in ["Div", "Mod"] {
            let m = M::new(17)
                .input("a", INT64, &["3"])
                .input("b", INT64, &["3"])
                .output("y")
                .node("d", op, &["a", "b"], &["y"], vec![]);
            let path = save(&dir, op, &m);
            let model = match nnc::jit::compile_file(&path, &nnc::Options::default()) {
                Ok(m) => m,
                Err(e) => {
                    println!("idiv: {op} on run-time int64 is refused at compile time: {e}");
                    continue;
                }
            };
            println!("idiv: {op} by 0 and MIN / -1");
            let a = Tensor::from_i64(&[3], vec![7, i64::MIN, -7]).unwrap();
            let b = Tensor::from_i64(&[3], vec![0, -1, 2]).unwrap();
            let r = model.run(&[a, b]);
            println!("idiv: {op} -> {r:?}");
        }
        return;
    }
    let r = run_in_child(NAME, Duration::from_secs(120)).expect("child timed out");
    assert!(
        r.status.success(),
        "{} after:\n{}\n{}",
        describe_exit(&r),
        tail(&r.stdout, 3),
        tail(&r.stderr, 20)
    );
    eprintln!(
        "{}",
        r.stdout
            .lines()
            .filter(|l| l.starts_with("idiv:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// valgrind over the libraries of every example and odd-size model
/// (tests/memcheck/run.sh, driver.c): exactly-sized heap buffers, runs with
/// and without a caller workspace and a pool; 0 errors, 0 leaks.
#[test]
fn valgrind_finds_no_errors() {
    let have = |c: &str| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("valgrind") || !have("cc") {
        skip("valgrind_finds_no_errors", "valgrind or cc not installed");
        return;
    }
    let dir = TempDir::new("memcheck");
    let libs = dir.join("libs");
    std::fs::create_dir_all(&libs).unwrap();
    // valgrind does not decode AVX-512, which Cpu::Native may pick.
    let cpu = if cfg!(target_arch = "x86_64") {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let has = |f: &str| flags.split_whitespace().any(|w| w == f);
        Some(if has("avx2") && has("fma") {
            nnc_compiler::codegen::target::Cpu::X86_64V3
        } else {
            nnc_compiler::codegen::target::Cpu::X86_64V2
        })
    } else {
        None
    };
    for (name, path, shapes) in all_models(&dir) {
        let o = nnc::Options {
            cpu,
            ..opts(&shapes)
        };
        nnc::compile_file(&path, &libs.join(format!("{name}.so")), None, false, &o)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let r = run_with_timeout(
        Command::new(nnc_tests::root().join("tests/memcheck/run.sh"))
            .arg("--libs")
            .arg(&libs)
            .env("NNC_MEMCHECK_DIR", dir.join("work")),
        Duration::from_secs(600),
    )
    .expect("run tests/memcheck/run.sh")
    .expect("memcheck took more than 10 minutes");
    eprintln!("{}", r.stdout);
    assert!(
        r.status.success(),
        "memcheck failed ({}):\n{}\n{}",
        describe_exit(&r),
        r.stdout,
        r.stderr
    );
}

// ---------------------------------------------------------------------------
// 4. Concurrency
// ---------------------------------------------------------------------------

/// 2, 4 and 8 threads run MNIST (JIT and .so) concurrently, each with its
/// own workspace and inputs, 50 iterations each: every result equals the
/// single-threaded run of the same input bit for bit. The same with all
/// threads sharing one ThreadPool.
#[test]
fn concurrent_runs_match_single_threaded_bit_for_bit() {
    let dir = TempDir::new("conc");
    let path = example("mnist_cnn.onnx");
    let (so, _) = aot(&path, &vec![], &dir);
    let shared_pool = ThreadPool::new(3);
    for (kind, model) in [("jit", jit(&path, &vec![])), ("so", so)] {
        let info = model.info().clone();
        let all: Vec<Vec<Tensor>> = (0..8).map(|t| inputs(&info, 100 + t)).collect();
        let want: Vec<Vec<Vec<u8>>> = all.iter().map(|x| bits(&model.run(x).unwrap())).collect();
        for n in [2usize, 4, 8] {
            for pool in [None, Some(&shared_pool)] {
                std::thread::scope(|s| {
                    for t in 0..n {
                        let (model, x, want) = (&model, &all[t], &want[t]);
                        s.spawn(move || {
                            let mut ws = model.new_workspace().unwrap();
                            for it in 0..50 {
                                let got = bits(&model.run_with(x, &mut ws, pool).unwrap());
                                assert!(
                                    got == *want,
                                    "{kind}: {n} threads (pool: {}), thread {t} iteration {it}: result differs",
                                    pool.is_some()
                                );
                            }
                        });
                    }
                });
            }
        }
    }
}

/// Runs through ThreadPools of several sizes equal single-threaded runs bit
/// for bit, for every example and odd-size model.
#[test]
fn thread_pool_matches_single_threaded_bit_for_bit() {
    let dir = TempDir::new("pool");
    let pools: Vec<ThreadPool> = [1, 2, 3, 4, 7].into_iter().map(ThreadPool::new).collect();
    for (name, path, shapes) in all_models(&dir) {
        let model = jit(&path, &shapes);
        let x = inputs(model.info(), 3);
        let want = bits(&model.run(&x).unwrap());
        let mut ws = model.new_workspace().unwrap();
        for pool in &pools {
            let got = bits(&model.run_with(&x, &mut ws, Some(pool)).unwrap());
            assert!(
                got == want,
                "{name}: {}-thread pool differs from single-threaded",
                pool.num_threads()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 5. Reproducible builds
// ---------------------------------------------------------------------------

fn first_difference(a: &[u8], b: &[u8]) -> String {
    let n = a.iter().zip(b).filter(|(x, y)| x != y).count();
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "{n} bytes differ, first at offset {i:#x} (sizes {} / {})",
            a.len(),
            b.len()
        ),
        None => format!("sizes differ: {} / {}", a.len(), b.len()),
    }
}

/// The same model compiled twice into different directories (same file
/// name) gives byte-identical .so and .h: with the CLI (two processes, so
/// nothing may depend on the pid or the output directory) and with the
/// library.
#[test]
fn builds_are_byte_identical() {
    let dir = TempDir::new("repro");
    let models: [(&str, &[&str]); 2] = [
        ("mnist_cnn.onnx", &[]),
        ("attention.onnx", &["--input-shape", "x=16,1,64"]),
    ];
    let mut checked = 0;
    if let Some(nnc) = nnc_cli() {
        for (m, extra) in models {
            let mut outs = Vec::new();
            for sub in ["a", "b/c"] {
                let d = dir.join(format!("cli/{sub}"));
                std::fs::create_dir_all(&d).unwrap();
                let out = d.join("model.so");
                let r = run_with_timeout(
                    Command::new(&nnc)
                        .arg("compile")
                        .arg(example(m))
                        .arg("-o")
                        .arg(&out)
                        .args(extra),
                    Duration::from_secs(120),
                )
                .unwrap()
                .expect("nnc compile timed out");
                assert!(r.status.success(), "nnc compile {m}: {}", r.stderr);
                outs.push(out);
            }
            for ext in ["so", "h"] {
                let a = std::fs::read(outs[0].with_extension(ext)).unwrap();
                let b = std::fs::read(outs[1].with_extension(ext)).unwrap();
                assert!(
                    a == b,
                    "CLI, {m}: the two .{ext} files differ: {}",
                    first_difference(&a, &b)
                );
                checked += 1;
            }
        }
    } else {
        skip("builds_are_byte_identical (CLI half)", "no nnc binary");
    }
    for (m, _) in models {
        let shapes = if m == "attention.onnx" {
            vec![("x".to_string(), vec![16, 1, 64])]
        } else {
            vec![]
        };
        let mut outs = Vec::new();
        for sub in ["x", "y/z"] {
            let d = dir.join(format!("lib/{sub}"));
            std::fs::create_dir_all(&d).unwrap();
            let out = d.join("model.so");
            nnc::compile_file(example(m), &out, None, false, &opts(&shapes)).unwrap();
            outs.push(out);
        }
        for ext in ["so", "h"] {
            let a = std::fs::read(outs[0].with_extension(ext)).unwrap();
            let b = std::fs::read(outs[1].with_extension(ext)).unwrap();
            assert!(
                a == b,
                "library, {m}: the two .{ext} files differ: {}",
                first_difference(&a, &b)
            );
            checked += 1;
        }
    }
    eprintln!("{checked} pairs of build outputs are byte-identical");
}

// ---------------------------------------------------------------------------
// 6. Numerics: NaN and ±Inf
// ---------------------------------------------------------------------------

const NAN: f32 = f32::NAN;
const LN2: f32 = std::f32::consts::LN_2;
const INF: f32 = f32::INFINITY;

/// The special inputs; 18 values, so the tests' rows of 55 put each one in
/// several SIMD lanes and in the scalar tail.
const X: [f32; 18] = [
    NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 88.8, -88.8, 1e30, -1e30, 3.4e38, -3.4e38, 1e-40, 1e4,
    -1e4, 0.5, -20.0,
];

/// onnxruntime 1.32.0 (CPU) outputs for X, op by op (opset in the middle),
/// produced once with a one-node model per op. Exact ops must match
/// exactly; the others within 2e-5 relative (plus 1e-37 absolute, so
/// denormal results may flush to zero). NaN must be NaN.
#[rustfmt::skip]
const ORT_UNARY: &[(&str, i64, &[f32])] = &[
    ("Relu", 17, &[NAN, INF, 0.0, 0.0, -0.0, 1.0, 0.0, 88.8, 0.0, 1e30, 0.0, 3.4e38, 0.0, 1e-40, 10000.0, 0.0, 0.5, 0.0]),
    ("Sigmoid", 17, &[NAN, 1.0, 0.0, 0.5, 0.5, 0.7310586, 0.26894143, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.5, 1.0, 0.0, 0.6224593, 0.0]),
    ("Tanh", 17, &[NAN, 1.0, -1.0, 0.0, -0.0, 0.7615942, -0.7615942, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 9.9939e-41, 1.0, -1.0, 0.46211717, -1.0]),
    ("Exp", 17, &[NAN, INF, 0.0, 1.0, 1.0, 2.7182817, 0.36787945, INF, 2.7205e-39, INF, 0.0, INF, 0.0, 1.0, INF, 0.0, 1.6487212, 2.0611537e-09]),
    ("Erf", 17, &[NAN, 1.0, -1.0, 0.0, -0.0, 0.8427008, -0.8427008, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.12837e-40, 1.0, -1.0, 0.5204999, -1.0]),
    ("Log", 17, &[NAN, INF, NAN, -INF, -INF, 0.0, NAN, 4.486387, NAN, 69.07755, NAN, 88.72201, NAN, -92.10341, 9.2103405, NAN, -LN2, NAN]),
    ("Sqrt", 17, &[NAN, INF, NAN, 0.0, -0.0, 1.0, NAN, 9.423375, NAN, 1e15, NAN, 1.8439089e19, NAN, 9.999973e-21, 100.0, NAN, 0.70710677, NAN]),
    ("Abs", 17, &[NAN, INF, INF, 0.0, 0.0, 1.0, 1.0, 88.8, 88.8, 1e30, 1e30, 3.4e38, 3.4e38, 1e-40, 10000.0, 10000.0, 0.5, 20.0]),
    ("Neg", 17, &[NAN, -INF, INF, -0.0, 0.0, -1.0, 1.0, -88.8, 88.8, -1e30, 1e30, -3.4e38, 3.4e38, -1e-40, -10000.0, 10000.0, -0.5, 20.0]),
    ("Softplus", 17, &[NAN, INF, 0.0, LN2, LN2, 1.3132617, 0.3132617, 88.8, 2.7205e-39, 1e30, 0.0, 3.4e38, 0.0, LN2, 10000.0, 0.0, 0.974077, 2.0611537e-09]),
    ("Elu", 17, &[NAN, INF, -1.0, 0.0, -0.0, 1.0, -0.63212055, 88.8, -1.0, 1e30, -1.0, 3.4e38, -1.0, 1e-40, 10000.0, -1.0, 0.5, -1.0]),
    ("Selu", 17, &[NAN, INF, -1.7580993, 0.0, 0.0, 1.050701, -1.1113307, 93.30225, -1.7580993, 1.050701e30, -1.7580993, INF, -1.7580993, 1.0507e-40, 10507.01, -1.7580993, 0.5253505, -1.7580993]),
    ("Softsign", 17, &[NAN, NAN, NAN, 0.0, -0.0, 0.5, -0.5, 0.9888641, -0.9888641, 1.0, -1.0, 1.0000001, -1.0000001, 1e-40, 0.9999, -0.9999, 0.33333334, -0.95238096]),
    ("HardSigmoid", 17, &[NAN, 1.0, 0.0, 0.5, 0.5, 0.7, 0.3, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.5, 1.0, 0.0, 0.6, 0.0]),
    ("HardSwish", 17, &[NAN, INF, NAN, 0.0, -0.0, 0.6666667, -0.3333333, 88.8, -0.0, 1e30, -0.0, 3.4e38, -0.0, 5e-41, 10000.0, -0.0, 0.29166666, -0.0]),
    ("Reciprocal", 17, &[NAN, 0.0, -0.0, INF, -INF, 1.0, -1.0, 0.011261261, -0.011261261, 1e-30, -1e-30, 2.941177e-39, -2.941177e-39, INF, 0.0001, -0.0001, 2.0, -0.05]),
    ("Floor", 17, &[NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 88.0, -89.0, 1e30, -1e30, 3.4e38, -3.4e38, 0.0, 10000.0, -10000.0, 0.0, -20.0]),
    ("Ceil", 17, &[NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 89.0, -88.0, 1e30, -1e30, 3.4e38, -3.4e38, 1.0, 10000.0, -10000.0, 1.0, -20.0]),
    ("LeakyRelu", 17, &[NAN, INF, -INF, 0.0, -0.0, 1.0, -0.1, 88.8, -8.88, 1e30, -1e29, 3.4e38, -3.4e37, 1e-40, 10000.0, -1000.0, 0.5, -2.0]),
    ("Gelu", 20, &[NAN, INF, NAN, 0.0, -0.0, 0.8413447, -0.15865526, 88.8, -0.0, 1e30, -0.0, 3.4e38, -0.0, 5e-41, 10000.0, -0.0, 0.34573123, -0.0]),
    ("Mish", 18, &[NAN, INF, NAN, 0.0, -0.0, 0.8650985, -0.30340144, 88.8, -2.4157137e-37, 1e30, -0.0, 3.4e38, -0.0, 6e-41, 10000.0, -0.0, 0.37524524, -4.1223068e-08]),
];

/// Where onnxruntime's NaN comes from an intermediate inf·0 or inf/inf
/// rather than from the function itself, the mathematical limit is
/// accepted too: Softsign(±inf) = ±1, HardSwish/Gelu/Mish(-inf) = 0.
fn limit(op: &str, x: f32) -> Option<f32> {
    match (op, x) {
        ("Softsign", x) if x.is_infinite() => Some(x.signum()),
        ("HardSwish" | "Gelu" | "Mish", x) if x == -INF => Some(0.0),
        _ => None,
    }
}

fn close(got: f32, want: f32, exact: bool) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() || exact {
        return got == want;
    }
    // The absolute term accepts results that ORT flushes to 0 and nnc
    // does not, or the other way round (Sigmoid(-20) = 2.06e-9, ORT 0).
    (got - want).abs() <= 2e-5 * want.abs() + 1e-6
}

/// Known deviations, checked by `log_of_denormal_is_accurate` instead:
/// (op, input).
const KNOWN_UNARY: &[(&str, f32)] = &[("Log", 1e-40)];

/// One-node model `op(x)` on f32[shape], extra inputs as initializers.
fn one_node(
    op: &str,
    opset: i64,
    shape: &[usize],
    inits: Vec<onnx_protobuf::TensorProto>,
    attrs: Vec<onnx_protobuf::AttributeProto>,
) -> M {
    let mut names = vec!["x".to_string()];
    names.extend(inits.iter().map(|t| t.name.clone()));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut m =
        M::new(opset)
            .input_f32("x", shape)
            .output("y")
            .node("n", op, &names, &["y"], attrs);
    for t in inits {
        m = m.init(t);
    }
    m
}

fn run_f32(dir: &TempDir, name: &str, m: &M, x: Vec<f32>) -> Result<Vec<f32>, String> {
    let path = save(dir, name, m);
    let model = nnc::jit::compile_file(&path, &nnc::Options::default())
        .map_err(|e| format!("compile: {e}"))?;
    let shape = model.info().inputs[0].shape.clone();
    let x = Tensor::from_f32(&shape, x).unwrap();
    // Garbage in the output, so a kernel that skips elements is visible.
    let mut out: Vec<Tensor> = model
        .info()
        .outputs
        .iter()
        .map(|t| t.zeros().unwrap())
        .collect();
    for o in &mut out {
        if let Some(v) = o.as_f32_mut() {
            v.fill(-12345.0);
        }
    }
    let mut ws = model.new_workspace().unwrap();
    model
        .run_into(&[x], &mut out, &mut ws, None)
        .map_err(|e| format!("run: {e}"))?;
    Ok(out[0].as_f32().unwrap().to_vec())
}

/// Elementwise ops on NaN, ±Inf, ±0, huge, tiny and denormal inputs give
/// what onnxruntime gives (ORT_UNARY).
#[test]
fn special_values_unary_match_onnxruntime() {
    let dir = TempDir::new("num-unary");
    let exact = ["Relu", "Abs", "Neg", "Floor", "Ceil", "LeakyRelu"];
    let n = 3 * X.len() + 1;
    let xs: Vec<f32> = (0..n).map(|i| X[i % X.len()]).collect();
    let mut problems = Vec::new();
    for &(op, opset, want) in ORT_UNARY {
        let attrs = if op == "LeakyRelu" {
            vec![af("alpha", 0.1)]
        } else {
            vec![]
        };
        let m = one_node(op, opset, &[1, n], vec![], attrs);
        let got = match run_f32(&dir, op, &m, xs.clone()) {
            Ok(g) => g,
            Err(e) => {
                problems.push(format!("{op}: {e}"));
                continue;
            }
        };
        let mut bad = Vec::new();
        for (i, &g) in got.iter().enumerate() {
            let (x, w) = (xs[i], want[i % X.len()]);
            let known = KNOWN_UNARY
                .iter()
                .any(|&(o, v)| o == op && v.to_bits() == x.to_bits());
            let ok = known
                || close(g, w, exact.contains(&op))
                || limit(op, x).is_some_and(|l| close(g, l, false));
            if !ok
                && !bad
                    .iter()
                    .any(|(bx, _, _): &(f32, f32, f32)| bx.to_bits() == x.to_bits())
            {
                bad.push((x, g, w));
            }
        }
        if !bad.is_empty() {
            let list: Vec<String> = bad
                .iter()
                .map(|(x, g, w)| format!("{op}({x:e}) = {g:e}, ORT {w:e}"))
                .collect();
            problems.push(list.join("; "));
        }
    }
    assert!(
        problems.is_empty(),
        "mismatches with onnxruntime:\n{}",
        problems.join("\n")
    );
}

fn check_rows(
    what: &str,
    got: &[f32],
    rows: &[(&[f32], Vec<Vec<f32>>)],
    problems: &mut Vec<String>,
) {
    let mut off = 0;
    for (input, alternatives) in rows {
        let g = &got[off..off + input.len()];
        off += input.len();
        let ok = alternatives
            .iter()
            .any(|w| g.iter().zip(w).all(|(&g, &w)| close(g, w, false)));
        if !ok {
            problems.push(format!(
                "{what}{input:?} = {g:?}; acceptable: {alternatives:?}"
            ));
        }
    }
}

/// Softmax / LogSoftmax rows with NaN, ±Inf and ±1e4 logits: NaN rows where
/// onnxruntime gives them (for the ill-defined +inf and all -inf rows the
/// limits one-hot / uniform are accepted too), and logits of ±1e4 never
/// overflow.
#[test]
fn special_values_softmax() {
    let dir = TempDir::new("num-softmax");
    let nan4 = vec![NAN; 4];
    // (logits, acceptable Softmax rows, acceptable LogSoftmax rows)
    type Row<'a> = (&'a [f32], Vec<Vec<f32>>, Vec<Vec<f32>>);
    let rows: Vec<Row> = vec![
        (
            &[1.0, 2.0, NAN, 3.0],
            vec![nan4.clone()],
            vec![nan4.clone()],
        ),
        (
            &[1.0, INF, 2.0, 3.0],
            vec![nan4.clone(), vec![0.0, 1.0, 0.0, 0.0]],
            vec![nan4.clone(), vec![-INF, 0.0, -INF, -INF]],
        ),
        (
            &[1e4, -1e4, 0.0, 1e4],
            vec![vec![0.5, 0.0, 0.0, 0.5]],
            // The second form is the known imprecision that
            // log_softmax_of_large_logits_is_accurate checks.
            vec![
                vec![-LN2, -20000.693, -10000.693, -LN2],
                vec![-0.6933594, -20000.693, -10000.693, -0.6933594],
            ],
        ),
        (
            &[-INF, 0.0, 1.0, 2.0],
            vec![vec![0.0, 0.09003057, 0.24472848, 0.66524094]],
            vec![vec![-INF, -2.407606, -1.407606, -0.40760595]],
        ),
        (
            &[-INF, -INF, -INF, -INF],
            vec![nan4.clone(), vec![0.25; 4]],
            vec![nan4.clone(), vec![-1.3862944; 4]],
        ),
        (
            &[INF, INF, 0.0, 0.0],
            vec![nan4.clone(), vec![0.5, 0.5, 0.0, 0.0]],
            vec![nan4.clone(), vec![-LN2, -LN2, -INF, -INF]],
        ),
    ];
    let x: Vec<f32> = rows.iter().flat_map(|r| r.0.iter().copied()).collect();
    let mut problems = Vec::new();
    for (op, pick) in [("Softmax", 1usize), ("LogSoftmax", 2)] {
        let m = one_node(op, 17, &[rows.len(), 4], vec![], vec![ai("axis", 1)]);
        match run_f32(&dir, op, &m, x.clone()) {
            Ok(got) => {
                let r: Vec<(&[f32], Vec<Vec<f32>>)> = rows
                    .iter()
                    .map(|r| (r.0, if pick == 1 { r.1.clone() } else { r.2.clone() }))
                    .collect();
                check_rows(op, &got, &r, &mut problems);
            }
            Err(e) => problems.push(format!("{op}: {e}")),
        }
    }
    // Long rows (vector body + tail) of ±1e4 logits: finite, summing to 1.
    let (rows_n, len) = (3, 37);
    let x: Vec<f32> = (0..rows_n * len)
        .map(|i| if i % 3 == 0 { 1e4 } else { -1e4 + i as f32 })
        .collect();
    let m = one_node("Softmax", 17, &[rows_n, len], vec![], vec![ai("axis", -1)]);
    match run_f32(&dir, "softmax_big", &m, x) {
        Ok(got) => {
            for r in 0..rows_n {
                let row = &got[r * len..(r + 1) * len];
                let sum: f32 = row.iter().sum();
                if !row.iter().all(|v| v.is_finite()) || (sum - 1.0).abs() > 1e-5 {
                    problems.push(format!(
                        "Softmax of ±1e4 logits, row {r}: sum {sum}, values {row:?}"
                    ));
                }
            }
        }
        Err(e) => problems.push(format!("Softmax big: {e}")),
    }
    assert!(
        problems.is_empty(),
        "softmax special values:\n{}",
        problems.join("\n")
    );
}

/// Max/Min propagate NaN (numpy and onnxruntime do); pools and reductions
/// with NaN/Inf: a NaN in a MaxPool window / ReduceMax gives NaN or the max
/// of the rest (onnxruntime's result depends on the position), sums and
/// means with NaN or inf - inf are NaN, inf·0 in MatMul is NaN, and
/// LayerNorm of a row with inf or NaN is a NaN row.
#[test]
fn special_values_binary_pool_reduce() {
    let dir = TempDir::new("num-misc");
    let mut problems = Vec::new();
    // Max / Min with NaN on either side (ORT: [nan, nan, nan, 5, inf, .., 2, 0]).
    let a = [NAN, 1.0, NAN, -INF, INF, 0.0, 2.0, -0.0];
    let b = [1.0, NAN, NAN, 5.0, -5.0, -0.0, 1.0, 0.0];
    for (op, want) in [
        ("Max", [NAN, NAN, NAN, 5.0, INF, 0.0, 2.0, 0.0]),
        ("Min", [NAN, NAN, NAN, -INF, -5.0, 0.0, 1.0, 0.0]),
    ] {
        let m = one_node(op, 17, &[8], vec![tf32("b", &[8], &b)], vec![]);
        match run_f32(&dir, op, &m, a.to_vec()) {
            Ok(got) => {
                for i in 0..8 {
                    if !close(got[i], want[i], true) {
                        problems.push(format!(
                            "{op}({}, {}) = {}, ORT {}",
                            a[i], b[i], got[i], want[i]
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("{op}: {e}")),
        }
    }
    // MaxPool / AveragePool 2x2 stride 2 on a 4x4 image.
    let img = [
        NAN, 1.0, 2.0, 3.0, 0.0, NAN, 5.0, 6.0, 1.0, 2.0, 3.0, 4.0, INF, -INF, 0.0, 1.0,
    ];
    let pool = vec![ais("kernel_shape", &[2, 2]), ais("strides", &[2, 2])];
    match run_f32(
        &dir,
        "maxpool",
        &one_node("MaxPool", 17, &[1, 1, 4, 4], vec![], pool.clone()),
        img.to_vec(),
    ) {
        Ok(g) => {
            let ok = (g[0].is_nan() || g[0] == 1.0) && g[1] == 6.0 && g[2] == INF && g[3] == 4.0;
            if !ok {
                problems.push(format!("MaxPool with NaN/inf = {g:?}; want [NaN or 1, 6, inf, 4] (ORT [NaN, 6, inf, 4])"));
            }
        }
        Err(e) => problems.push(format!("MaxPool: {e}")),
    }
    match run_f32(
        &dir,
        "avgpool",
        &one_node("AveragePool", 17, &[1, 1, 4, 4], vec![], pool),
        img.to_vec(),
    ) {
        Ok(g) => {
            let ok = g[0].is_nan() && g[1] == 4.0 && g[2].is_nan() && g[3] == 2.0;
            if !ok {
                problems.push(format!(
                    "AveragePool with NaN/inf = {g:?}; ORT [NaN, 4, NaN, 2]"
                ));
            }
        }
        Err(e) => problems.push(format!("AveragePool: {e}")),
    }
    // Reductions over rows [1, nan, 3], [inf, 1, 2], [inf, -inf, 0], [-inf x3].
    let r = [
        1.0, NAN, 3.0, INF, 1.0, 2.0, INF, -INF, 0.0, -INF, -INF, -INF,
    ];
    for (op, check) in [
        (
            "ReduceMax",
            (|g: &[f32]| {
                (g[0].is_nan() || g[0] == 3.0) && g[1] == INF && g[2] == INF && g[3] == -INF
            }) as fn(&[f32]) -> bool,
        ),
        ("ReduceMin", |g: &[f32]| {
            (g[0].is_nan() || g[0] == 1.0) && g[1] == 1.0 && g[2] == -INF && g[3] == -INF
        }),
        ("ReduceSum", |g: &[f32]| {
            g[0].is_nan() && g[1] == INF && g[2].is_nan() && g[3] == -INF
        }),
        ("ReduceMean", |g: &[f32]| {
            g[0].is_nan() && g[1] == INF && g[2].is_nan() && g[3] == -INF
        }),
    ] {
        let m = one_node(
            op,
            13,
            &[4, 3],
            vec![],
            vec![ais("axes", &[1]), ai("keepdims", 0)],
        );
        let m = if op == "ReduceSum" {
            one_node(
                op,
                13,
                &[4, 3],
                vec![ti64("axes", &[1], &[1])],
                vec![ai("keepdims", 0)],
            )
        } else {
            m
        };
        match run_f32(&dir, op, &m, r.to_vec()) {
            Ok(g) if check(&g) => {}
            Ok(g) => problems.push(format!(
                "{op} over rows [1,NaN,3] [inf,1,2] [inf,-inf,0] [-inf x3] = {g:?}"
            )),
            Err(e) => problems.push(format!("{op}: {e}")),
        }
    }
    // MatMul: inf * 0 = NaN, even where the other terms are finite.
    let m = one_node(
        "MatMul",
        17,
        &[2, 2],
        vec![tf32("w", &[2, 2], &[0.0, 1.0, 1.0, 1.0])],
        vec![],
    );
    match run_f32(&dir, "matmul", &m, vec![INF, 1.0, 0.0, 1.0]) {
        Ok(g) if g[0].is_nan() && g[1] == INF && g[2] == 1.0 && g[3] == 1.0 => {}
        Ok(g) => problems.push(format!(
            "MatMul [[inf,1],[0,1]] x [[0,1],[1,1]] = {g:?}, ORT [NaN, inf, 1, 1]"
        )),
        Err(e) => problems.push(format!("MatMul: {e}")),
    }
    // MatMul with K = 0 writes zeros (the output buffer starts as garbage).
    let path_dir = TempDir::new("num-k0");
    let m = M::new(17)
        .input_f32("x", &[2, 0])
        .output("y")
        .init(tf32("w", &[0, 3], &[]))
        .node("mm", "MatMul", &["x", "w"], &["y"], vec![]);
    match run_f32(&path_dir, "k0", &m, vec![]) {
        Ok(g) if g == [0.0; 6] => {}
        Ok(g) => problems.push(format!("MatMul with K=0 = {g:?}, want zeros")),
        Err(e) => problems.push(format!("MatMul K=0: {e}")),
    }
    // LayerNorm rows: inf -> NaN row, NaN -> NaN row, ±1e30 -> finite.
    let m = one_node(
        "LayerNormalization",
        17,
        &[3, 4],
        vec![tf32("g", &[4], &[1.0; 4])],
        vec![ai("axis", -1)],
    );
    match run_f32(
        &dir,
        "ln",
        &m,
        vec![
            1.0, 2.0, 3.0, INF, 1.0, 2.0, NAN, 4.0, 1e30, -1e30, 1e30, -1e30,
        ],
    ) {
        Ok(g) if g[..8].iter().all(|v| v.is_nan()) && g[8..].iter().all(|v| v.is_finite()) => {}
        Ok(g) => problems.push(format!(
            "LayerNorm rows [1,2,3,inf] [1,2,NaN,4] [±1e30] = {g:?}; ORT [NaN x8, 0, -0, 0, -0]"
        )),
        Err(e) => problems.push(format!("LayerNorm: {e}")),
    }
    assert!(
        problems.is_empty(),
        "special values:\n{}",
        problems.join("\n")
    );
}

#[test]
fn log_of_denormal_is_accurate() {
    let dir = TempDir::new("num-log");
    let xs = [1e-40f32, 1e-45, 5e-39];
    let got = run_f32(
        &dir,
        "log",
        &one_node("Log", 17, &[3], vec![], vec![]),
        xs.to_vec(),
    )
    .unwrap();
    for (x, g) in xs.iter().zip(&got) {
        let want = (*x as f64).ln() as f32;
        assert!(
            (g - want).abs() <= 1e-4 * want.abs(),
            "Log({x:e}) = {g}, want {want}"
        );
    }
}

#[test]
fn log_softmax_of_large_logits_is_accurate() {
    let dir = TempDir::new("num-lsm");
    let m = one_node("LogSoftmax", 17, &[1, 4], vec![], vec![ai("axis", 1)]);
    let got = run_f32(&dir, "lsm", &m, vec![1e4, -1e4, 0.0, 1e4]).unwrap();
    let want = [
        -std::f32::consts::LN_2,
        -20000.693,
        -10000.693,
        -std::f32::consts::LN_2,
    ];
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "LogSoftmax = {got:?}, want {want:?}"
        );
    }
}

/// A Conv without bias (as in every Conv -> BatchNormalization pair)
/// compiles and matches a direct convolution. (Found by tests/fuzz.rs
/// while codegen was being reworked: the bias pointer was read from a
/// capture list that only held a, b, c.)
#[test]
fn conv_without_bias_compiles_and_runs() {
    let dir = TempDir::new("conv-nobias");
    let (c, m, h) = (32usize, 64usize, 13usize);
    let w: Vec<f32> = (0..m * c * 9)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 100.0)
        .collect();
    let model = M::new(17)
        .input_f32("x", &[1, c, h, h])
        .output("y")
        .init(tf32("w", &[m as i64, c as i64, 3, 3], &w))
        .node("conv", "Conv", &["x", "w"], &["y"], vec![]);
    let path = save(&dir, "conv", &model);
    let model = jit(&path, &vec![]);
    let x = inputs(model.info(), 5);
    let xs = x[0].as_f32().unwrap().to_vec();
    let y = model.run(&x).unwrap();
    let y = y[0].as_f32().unwrap();
    let o = h - 2;
    for oc in 0..m {
        for i in 0..o {
            for j in 0..o {
                let mut acc = 0f64;
                for ic in 0..c {
                    for ki in 0..3 {
                        for kj in 0..3 {
                            acc += xs[(ic * h + i + ki) * h + j + kj] as f64
                                * w[((oc * c + ic) * 3 + ki) * 3 + kj] as f64;
                        }
                    }
                }
                let got = y[(oc * o + i) * o + j];
                assert!(
                    (got as f64 - acc).abs() < 1e-4,
                    "y[{oc},{i},{j}] = {got}, want {acc}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Compile-time scaling
// ---------------------------------------------------------------------------

/// A Conv over a batch of 4096 small images, and a grouped Conv with 4096
/// groups of 2 channels (inputs of 256 KiB and 512 KiB), each compile in
/// well under 10 s (the limit allows for debug builds and slow machines).
/// Found by tests/fuzz.rs while conv codegen unrolled the batch and group
/// loops at compile time: batch 1024 took 10 s (dev), 4096 over 120 s, and
/// a fuzzed batch of 2^20 used 20 GB.
#[test]
fn conv_compile_time_is_bounded_in_batch_and_groups() {
    const NAME: &str = "conv_compile_time_is_bounded_in_batch_and_groups";
    let cases = [("batch", 4096usize, 1usize, 1usize), ("groups", 1, 4096, 2)];
    if in_child(NAME) {
        let dir = TempDir::new("conv-scale");
        for (what, n, groups, cpg) in cases {
            let c = groups * cpg;
            let m = M::new(17)
                .input_f32("x", &[n, c, 4, 4])
                .output("y")
                .init(tf32(
                    "w",
                    &[c as i64, cpg as i64, 3, 3],
                    &vec![0.1; c * cpg * 9],
                ))
                .node(
                    "conv",
                    "Conv",
                    &["x", "w"],
                    &["y"],
                    vec![ai("group", groups as i64)],
                );
            let path = save(&dir, what, &m);
            let t = std::time::Instant::now();
            nnc::compile_file(
                &path,
                &dir.join(format!("{what}.so")),
                None,
                false,
                &nnc::Options::default(),
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            println!(
                "scale: {what} compiled in {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        return;
    }
    let r = run_in_child(NAME, Duration::from_secs(30));
    let r = r.unwrap_or_else(|| {
        panic!("the two Convs (batch 4096; 4096 groups) did not compile within 30 s")
    });
    assert!(r.status.success(), "{}: {}", describe_exit(&r), r.stderr);
    // The harness prints "test NAME ... " before the first line.
    let lines: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_once("scale: ").map(|(_, l)| l))
        .collect();
    assert_eq!(lines.len(), cases.len(), "child output:\n{}", r.stdout);
    for l in lines {
        eprintln!("{l}");
        let secs: f64 = l
            .rsplit(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::MAX);
        assert!(secs < 10.0, "{l}");
    }
}
