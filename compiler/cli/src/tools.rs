//! `nnc run`, `nnc info` and `nnc bench`: use a model without writing code.
//! An .onnx argument is compiled with the JIT (same code as a .so); a .so
//! argument is loaded with dlopen.

use crate::{npy, usage};
use anyhow::{bail, Context, Result};
use nnc::{DType, Model, Tensor, ThreadPool};
use std::path::{Path, PathBuf};
use std::time::Instant;

const RUN_HELP: &str = "\
nnc run — run a model on .npy or random inputs

USAGE:
    nnc run MODEL.onnx|MODEL.so [OPTIONS]

OPTIONS:
    --input NAME=FILE.npy      Input from a .npy file (repeatable)
    --input NAME=random        Seeded random input (the default for every input)
    --seed N                   Seed for random inputs (default 0)
    --output-dir DIR           Write every output as DIR/<name>.npy
    --input-shape NAME=D0,D1   Fix symbolic dims (.onnx only; repeatable)
    --threads N                Thread-pool size (default 1)

EXAMPLES:
    nnc run examples/mnist_cnn.onnx --input input=digit.npy
    nnc run mnist.so --input input=random --output-dir out/
";

const INFO_HELP: &str = "\
nnc info — describe a model or a compiled library

USAGE:
    nnc info MODEL.onnx [--input-shape NAME=D0,D1]...   opsets, op histogram, signature, plan, kernels
    nnc info MODEL.so                                   signature and workspace of a compiled library
";

const BENCH_HELP: &str = "\
nnc bench — measure latency

USAGE:
    nnc bench MODEL.onnx|MODEL.so [OPTIONS]

OPTIONS:
    --iters N                  Timed runs (default: as many as fit in ~2 s, at least 10)
    --warmup N                 Untimed runs first (default 5)
    --threads N                Thread-pool size (default 1)
    --input-shape NAME=D0,D1   Fix symbolic dims (of the .onnx, or of --onnx)
    --compare-ort              Also time onnxruntime (Python) on the same inputs and
                               thread count, print the ratio and the max error
    --onnx PATH                The model for --compare-ort and GFLOP/s when benchmarking a .so
    --python PATH              Python with onnxruntime (default: $PY, .venv/bin/python, python3)
";

/// Options shared by run/info/bench.
#[derive(Default)]
struct Common {
    model: Option<PathBuf>,
    input_shapes: Vec<(String, Vec<usize>)>,
    inputs: Vec<(String, String)>,
    seed: u64,
    output_dir: Option<PathBuf>,
    threads: usize,
    iters: Option<usize>,
    warmup: usize,
    compare_ort: bool,
    onnx: Option<PathBuf>,
    python: Option<String>,
}

fn parse(args: &[String], help: &str) -> Result<Option<Common>> {
    let mut c = Common {
        threads: 1,
        warmup: 5,
        ..Default::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |f: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| usage(format!("{f} needs a value")))
        };
        let num = |f: &str, v: String| {
            v.parse::<usize>()
                .map_err(|_| usage(format!("{f} '{v}' is not a number")))
        };
        match a.as_str() {
            "-h" | "--help" => {
                print!("{help}");
                return Ok(None);
            }
            "--input-shape" => c
                .input_shapes
                .push(nnc_onnx::Options::parse_input_shape(&val(a)?).map_err(usage)?),
            "--input" => {
                let v = val(a)?;
                let (n, f) = v.rsplit_once('=').ok_or_else(|| {
                    usage(format!(
                        "--input '{v}' should be NAME=FILE.npy or NAME=random"
                    ))
                })?;
                c.inputs.push((n.to_string(), f.to_string()));
            }
            "--seed" => c.seed = num(a, val(a)?)? as u64,
            "--output-dir" => c.output_dir = Some(val(a)?.into()),
            "--threads" => c.threads = num(a, val(a)?)?.max(1),
            "--iters" => c.iters = Some(num(a, val(a)?)?.max(1)),
            "--warmup" => c.warmup = num(a, val(a)?)?,
            "--compare-ort" => c.compare_ort = true,
            "--onnx" => c.onnx = Some(val(a)?.into()),
            "--python" => c.python = Some(val(a)?),
            s if s.starts_with('-') => return Err(usage(format!("unknown option '{s}'"))),
            s => {
                if c.model.replace(s.into()).is_some() {
                    return Err(usage("expected one model file"));
                }
            }
        }
    }
    if c.model.is_none() {
        return Err(usage("expected a model file (.onnx or .so)"));
    }
    Ok(Some(c))
}

fn is_library(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "so" || e == "dylib")
}

/// Loads `.so` files, JIT-compiles anything else as ONNX.
fn load(c: &Common) -> Result<(Model, Option<nnc::Prepared>)> {
    let path = c.model.as_ref().unwrap();
    if is_library(path) {
        return Ok((Model::load(path)?, None));
    }
    let opts = nnc::Options {
        input_shapes: c.input_shapes.clone(),
        ..Default::default()
    };
    let p = nnc::prepare_file(path, &opts)?;
    let m = nnc::jit::compile_prepared(&p, path)?;
    Ok((m, Some(p)))
}

/// xorshift64* with Box–Muller: reproducible inputs without a rand crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

fn inputs_for(m: &Model, c: &Common) -> Result<Vec<Tensor>> {
    let info = m.info();
    for (n, _) in &c.inputs {
        if !info.inputs.iter().any(|i| &i.name == n) {
            let names: Vec<&str> = info.inputs.iter().map(|i| i.name.as_str()).collect();
            bail!(
                "--input {n}: the model has no input named '{n}' (inputs: {})",
                names.join(", ")
            );
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ c.seed.wrapping_mul(0x100_0000_01b3));
    let mut out = Vec::new();
    for ti in &info.inputs {
        let src = c
            .inputs
            .iter()
            .find(|(n, _)| n == &ti.name)
            .map(|(_, s)| s.as_str())
            .unwrap_or("random");
        let t = if src == "random" {
            let n = ti.numel();
            match ti.dtype {
                DType::F32 => Tensor::from_f32(&ti.shape, (0..n).map(|_| rng.normal()).collect())?,
                DType::I64 => Tensor::from_i64(
                    &ti.shape,
                    (0..n).map(|_| (rng.next() % 10) as i64).collect(),
                )?,
                DType::Bool => {
                    Tensor::from_bool(&ti.shape, (0..n).map(|_| rng.next() & 1 == 1).collect())?
                }
            }
        } else {
            let t = npy::read(Path::new(src))?;
            if t.shape() != ti.shape.as_slice() || t.dtype() != ti.dtype {
                bail!(
                    "input '{}': {src} holds {} {:?}, the model expects {} {:?}",
                    ti.name,
                    t.dtype().name(),
                    t.shape(),
                    ti.dtype.name(),
                    ti.shape
                );
            }
            t
        };
        out.push(t);
    }
    Ok(out)
}

fn summarize(name: &str, t: &Tensor) {
    print!("  {name}: {} {:?}", t.dtype().name(), t.shape());
    if let Some(x) = t.as_f32() {
        if x.is_empty() {
            println!();
            return;
        }
        let (mut lo, mut hi, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
        for &v in x {
            lo = lo.min(v);
            hi = hi.max(v);
            sum += v as f64;
        }
        println!("  min {lo:.6} max {hi:.6} mean {:.6}", sum / x.len() as f64);
        let sh = t.shape();
        if (sh.len() == 1 || sh.len() == 2) && *sh.last().unwrap() > 1 {
            let n = *sh.last().unwrap();
            let rows = if sh.len() == 2 { sh[0].min(4) } else { 1 };
            for r in 0..rows {
                let row = &x[r * n..(r + 1) * n];
                let mut idx: Vec<usize> = (0..n).collect();
                idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                let top: Vec<String> = idx
                    .iter()
                    .take(5)
                    .map(|&i| format!("{i} ({:.4})", row[i]))
                    .collect();
                println!("    row {r} top-5: {}", top.join(", "));
            }
        }
    } else if let Some(x) = t.as_i64() {
        println!("  first {:?}", &x[..x.len().min(8)]);
    } else {
        println!();
    }
}

pub fn run_cmd(args: &[String]) -> Result<()> {
    let Some(c) = parse(args, RUN_HELP)? else {
        return Ok(());
    };
    let (m, _) = load(&c)?;
    let inputs = inputs_for(&m, &c)?;
    let pool = (c.threads > 1).then(|| ThreadPool::new(c.threads));
    let mut ws = m.new_workspace()?;
    let t = Instant::now();
    let outs = m.run_with(&inputs, &mut ws, pool.as_ref())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!("ran {} in {ms:.3} ms", c.model.as_ref().unwrap().display());
    for (ti, o) in m.info().outputs.iter().zip(&outs) {
        summarize(&ti.name, o);
    }
    if let Some(dir) = &c.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (ti, o) in m.info().outputs.iter().zip(&outs) {
            let safe: String = ti
                .name
                .chars()
                .map(|ch| {
                    if ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' || ch == '.' {
                        ch
                    } else {
                        '_'
                    }
                })
                .collect();
            let p = dir.join(format!("{safe}.npy"));
            npy::write(&p, o)?;
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

pub fn info_cmd(args: &[String]) -> Result<()> {
    let Some(c) = parse(args, INFO_HELP)? else {
        return Ok(());
    };
    let path = c.model.clone().unwrap();
    if is_library(&path) {
        let m = Model::load(&path)?;
        print_signature(m.info());
        return Ok(());
    }
    let s = nnc_onnx::summarize(&path)?;
    println!(
        "model {} (ir_version {}, producer '{}')",
        path.display(),
        s.ir_version,
        s.producer
    );
    let ops: Vec<String> = s
        .opsets
        .iter()
        .map(|(d, v)| format!("{}:{v}", if d.is_empty() { "ai.onnx" } else { d }))
        .collect();
    println!("opsets: {}", ops.join(", "));
    println!("ONNX ops:");
    for (op, n) in &s.op_histogram {
        println!("  {op:<24} {n}");
    }
    let opts = nnc::Options {
        input_shapes: c.input_shapes.clone(),
        ..Default::default()
    };
    let p = nnc::prepare_file(&path, &opts)?;
    let g = &p.graph;
    println!("inputs:");
    for &i in &g.inputs {
        println!("  {:<24} {}", g.value(i).name, g.ty(i));
    }
    println!("outputs:");
    for o in &g.outputs {
        println!("  {:<24} {}", o.name, g.ty(o.value));
    }
    let weights: usize = p.plan.weights.iter().map(|&w| g.ty(w).bytes()).sum();
    println!(
        "weights: {} bytes in {} tensors",
        weights,
        p.plan.weights.len()
    );
    println!("workspace: {} bytes", p.plan.workspace_size);
    println!("FLOPs per run: {}", nnc::flops(g));
    println!("kernels ({}):", p.plan.steps.len());
    for st in &p.plan.steps {
        match st {
            nnc_compiler::lower::Step::Kernel { value, .. } => {
                let v = g.value(*value);
                if let nnc_compiler::ir::ValueKind::Op { op, .. } = &v.kind {
                    println!(
                        "  {:<14} {} -> {}",
                        op.name(),
                        v.origin.as_deref().unwrap_or(&v.name),
                        v.ty
                    );
                }
            }
            nnc_compiler::lower::Step::Copy { src, output } => {
                println!("  copy           {} -> output {output}", g.value(*src).name)
            }
        }
    }
    Ok(())
}

fn print_signature(info: &nnc::ModelInfo) {
    println!("producer: {}", info.producer);
    println!("inputs:");
    for t in &info.inputs {
        println!("  {:<24} {} {:?}", t.name, t.dtype.name(), t.shape);
    }
    println!("outputs:");
    for t in &info.outputs {
        println!("  {:<24} {} {:?}", t.name, t.dtype.name(), t.shape);
    }
    println!(
        "workspace: {} bytes (align {})",
        info.workspace_size, info.workspace_align
    );
}

const ORT_SCRIPT: &str = r#"
import sys, time, json, numpy as np, onnxruntime as ort
model, threads, iters, warmup, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
feeds = {i.name: np.load(f"{d}/in_{k}.npy") for k, i in enumerate(s.get_inputs())}
for _ in range(warmup): s.run(None, feeds)
ts = []
for _ in range(iters):
    t = time.perf_counter(); outs = s.run(None, feeds); ts.append(time.perf_counter() - t)
for k, o in enumerate(outs): np.save(f"{d}/ort_{k}.npy", np.asarray(o))
print(json.dumps({"median_ms": float(np.median(ts) * 1e3), "min_ms": float(np.min(ts) * 1e3)}))
"#;

pub fn bench_cmd(args: &[String]) -> Result<()> {
    let Some(c) = parse(args, BENCH_HELP)? else {
        return Ok(());
    };
    let (m, prepared) = load(&c)?;
    let inputs = inputs_for(&m, &c)?;
    let pool = (c.threads > 1).then(|| ThreadPool::new(c.threads));
    let mut ws = m.new_workspace()?;
    let mut outs: Vec<Tensor> = m
        .info()
        .outputs
        .iter()
        .map(|o| o.zeros())
        .collect::<Result<_, _>>()?;
    for _ in 0..c.warmup {
        m.run_into(&inputs, &mut outs, &mut ws, pool.as_ref())?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    loop {
        let t = Instant::now();
        m.run_into(&inputs, &mut outs, &mut ws, pool.as_ref())?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let done = match c.iters {
            Some(n) => times.len() >= n,
            None => {
                times.len() >= 10 && (start.elapsed().as_secs_f64() > 2.0 || times.len() >= 10_000)
            }
        };
        if done {
            break;
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let med = pct(0.5);
    println!(
        "{}: {} runs, {} thread(s)",
        c.model.as_ref().unwrap().display(),
        times.len(),
        c.threads
    );
    println!(
        "  latency ms: min {:.4}  median {:.4}  p90 {:.4}",
        sorted[0],
        med,
        pct(0.9)
    );
    println!("  throughput: {:.1} runs/s", 1e3 / med);
    let flops = match (&prepared, &c.onnx) {
        (Some(p), _) => Some(nnc::flops(&p.graph)),
        (None, Some(onnx)) => {
            let opts = nnc::Options {
                input_shapes: c.input_shapes.clone(),
                ..Default::default()
            };
            nnc::prepare_file(onnx, &opts)
                .ok()
                .map(|p| nnc::flops(&p.graph))
        }
        _ => None,
    };
    if let Some(f) = flops {
        println!(
            "  {:.3} GFLOP per run, {:.1} GFLOP/s",
            f as f64 / 1e9,
            f as f64 / 1e6 / med
        );
    }
    if c.compare_ort {
        let onnx = match (&c.onnx, is_library(c.model.as_ref().unwrap())) {
            (Some(o), _) => o.clone(),
            (None, false) => c.model.clone().unwrap(),
            (None, true) => bail!("--compare-ort on a .so needs --onnx MODEL.onnx"),
        };
        compare_ort(&c, &onnx, &inputs, &outs, med)?;
    }
    Ok(())
}

fn compare_ort(
    c: &Common,
    onnx: &Path,
    inputs: &[Tensor],
    outs: &[Tensor],
    nnc_ms: f64,
) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("nnc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (k, t) in inputs.iter().enumerate() {
        npy::write(&dir.join(format!("in_{k}.npy")), t)?;
    }
    let py = c
        .python
        .clone()
        .or_else(|| std::env::var("PY").ok())
        .unwrap_or_else(|| {
            if Path::new(".venv/bin/python").exists() {
                ".venv/bin/python".into()
            } else {
                "python3".into()
            }
        });
    let iters = c.iters.unwrap_or(50).to_string();
    let o = std::process::Command::new(&py)
        .args(["-c", ORT_SCRIPT])
        .arg(onnx)
        .arg(c.threads.to_string())
        .arg(&iters)
        .arg(c.warmup.to_string())
        .arg(&dir)
        .output()
        .with_context(|| {
            format!("running {py} (pass --python or set PY to a python with onnxruntime)")
        })?;
    if !o.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        bail!(
            "onnxruntime run failed:\n{}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    let line = String::from_utf8_lossy(&o.stdout);
    let ort_ms: f64 = line
        .split("\"median_ms\": ")
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(f64::NAN);
    let mut worst = 0f64;
    for (k, t) in outs.iter().enumerate() {
        let r = npy::read(&dir.join(format!("ort_{k}.npy")))?;
        if let (Some(a), Some(b)) = (t.as_f32(), r.as_f32()) {
            for (x, y) in a.iter().zip(b) {
                worst = worst.max(((x - y).abs() / (y.abs() + 1e-3)) as f64);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "  onnxruntime median {ort_ms:.4} ms ({} thread(s)); nnc/ort = {:.3}",
        c.threads,
        nnc_ms / ort_ms
    );
    println!("  max |nnc-ort|/(|ort|+1e-3) = {worst:.3e}");
    Ok(())
}
