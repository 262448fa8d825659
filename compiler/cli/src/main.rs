//! The `nnc` command line: `nnc compile model.onnx -o model.so`.
//!
//! Exit codes: 0 success, 1 the model could not be compiled (the message
//! says which node and why), 2 bad command line.

mod npy;
mod tools;

use anyhow::Result;
use nnc_compiler::{codegen::target, ir};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

const USAGE: &str = "\
nnc — compile ONNX models to native shared libraries

USAGE:
    nnc compile MODEL.onnx -o OUT.so [OPTIONS]    compile to a shared library + C header
    nnc run MODEL.onnx|MODEL.so [--input NAME=FILE.npy|random]... [--output-dir DIR]
    nnc info MODEL.onnx|MODEL.so                  signature, ops, workspace, kernels
    nnc bench MODEL.onnx|MODEL.so [--iters N] [--threads N] [--compare-ort]
    nnc --version | --help

Run `nnc <command> --help` for the options of each command.

EXIT CODES:
    0 success, 1 the model could not be compiled or run, 2 bad command line
";

const COMPILE_HELP: &str = "\
nnc compile — compile an ONNX model into a shared library and a C header

USAGE:
    nnc compile MODEL.onnx -o OUT.so [OPTIONS]

OPTIONS:
    -o, --output PATH          Output library (default: MODEL stem + .so)
    --header PATH              Where to write the C header (default: OUT with .h)
    --name NAME                Symbol prefix (default: output file stem, non-alphanumerics -> _)
    --input-shape NAME=D0,D1   Fix the symbolic dims of input NAME (repeatable)
    --bind-input NAME=FILE.npy Bind input NAME to this constant value at compile time; it
                               leaves the library's inputs, and shapes, axes, pads, ...
                               computed from it become constants (repeatable)
    --emit KIND                so (default), obj (object file only), ir, opt-ir (print IR to stdout),
                               egraph-stats (optimizer statistics)
    --no-opt                   Skip the egg optimizer,
                               egraph-stats (optimizer statistics)
    --no-opt                   Skip the egg optimizer
    --target TRIPLE            Target triple (default: host), e.g. aarch64-unknown-linux-gnu
    --cpu LEVEL                native (host default), generic, x86-64-v2, x86-64-v3, x86-64-v4
    --linker PATH              C compiler used to link (default: cc, or <triple>-gcc when cross)
    --timings                  Print the time of each phase to stderr

EXAMPLES:
    nnc compile examples/mnist_cnn.onnx -o mnist.so
    nnc compile examples/attention.onnx -o attn.so --input-shape x=128,1,64
    nnc compile model.onnx --emit ir

EXIT CODES:
    0 success, 1 the model could not be compiled, 2 bad command line
";

fn main() -> ExitCode {
    restore_sigpipe();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<UsageError>() {
                eprintln!("nnc: {u}\n(see `nnc --help`)");
                return ExitCode::from(2);
            }
            eprintln!("nnc: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A command-line mistake (exit code 2), as opposed to a model problem (1).
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("-V" | "--version") => {
            println!("{}", nnc_compiler::codegen::PRODUCER);
            Ok(())
        }
        Some("compile") => compile(&args[1..]),
        Some("run") => tools::run_cmd(&args[1..]),
        Some("info") => tools::info_cmd(&args[1..]),
        Some("bench") => tools::bench_cmd(&args[1..]),
        Some(other) => Err(usage(format!("unknown command '{other}'"))),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Emit {
    So,
    Obj,
    Ir,
    OptIr,
    EgraphStats,
}

struct CompileArgs {
    model: PathBuf,
    output: Option<PathBuf>,
    header: Option<PathBuf>,
    name: Option<String>,
    input_shapes: Vec<(String, Vec<usize>)>,
    bind_inputs: Vec<(String, PathBuf)>,
    emit: Emit,
    target: Option<String>,
    cpu: Option<String>,
    linker: Option<String>,
    timings: bool,
    no_opt: bool,
}

fn parse_input_shape(s: &str) -> Result<(String, Vec<usize>)> {
    let (name, dims) = s.rsplit_once('=').ok_or_else(|| {
        usage(format!(
            "--input-shape '{s}' should look like NAME=D0,D1,..."
        ))
    })?;
    let dims = dims
        .split(',')
        .map(|d| {
            d.trim().parse::<usize>().map_err(|_| {
                usage(format!(
                    "--input-shape '{s}': '{d}' is not a non-negative integer"
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((name.to_string(), dims))
}

fn parse_compile(args: &[String]) -> Result<Option<CompileArgs>> {
    let mut it = args.iter();
    let mut a = CompileArgs {
        model: PathBuf::new(),
        output: None,
        header: None,
        name: None,
        input_shapes: vec![],
        bind_inputs: vec![],
        emit: Emit::So,
        target: None,
        cpu: None,
        linker: None,
        timings: false,
        no_opt: false,
    };
    let mut model = None;
    while let Some(arg) = it.next() {
        let mut val = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| usage(format!("{flag} needs a value")))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{COMPILE_HELP}");
                return Ok(None);
            }
            "-o" | "--output" => a.output = Some(val(arg)?.into()),
            "--header" => a.header = Some(val(arg)?.into()),
            "--name" => a.name = Some(val(arg)?),
            "--input-shape" => a.input_shapes.push(parse_input_shape(&val(arg)?)?),
            "--bind-input" => {
                let v = val(arg)?;
                let (name, file) = v
                    .split_once('=')
                    .filter(|(n, f)| !n.is_empty() && !f.is_empty())
                    .ok_or_else(|| {
                        usage(format!("--bind-input '{v}' should look like NAME=FILE.npy"))
                    })?;
                a.bind_inputs.push((name.to_string(), PathBuf::from(file)));
            }
            "--emit" => {
                a.emit = match val(arg)?.as_str() {
                    "so" => Emit::So,
                    "obj" => Emit::Obj,
                    "ir" => Emit::Ir,
                    "opt-ir" => Emit::OptIr,
                    "egraph-stats" => Emit::EgraphStats,
                    o => {
                        return Err(usage(format!(
                            "--emit '{o}': expected so, obj, ir, opt-ir or egraph-stats"
                        )))
                    }
                }
            }
            "--target" => a.target = Some(val(arg)?),
            "--cpu" => a.cpu = Some(val(arg)?),
            "--linker" => a.linker = Some(val(arg)?),
            "--timings" => a.timings = true,
            "--no-opt" => a.no_opt = true,
            s if s.starts_with('-') => {
                return Err(usage(format!("unknown option '{s}' for compile")))
            }
            s => {
                if model.replace(PathBuf::from(s)).is_some() {
                    return Err(usage("compile takes one model file"));
                }
            }
        }
    }
    a.model = model
        .ok_or_else(|| usage("compile needs a model file: nnc compile MODEL.onnx -o OUT.so"))?;
    Ok(Some(a))
}

/// A runtime tensor (from .npy) as the IR's constant tensor.
fn to_ir_tensor(t: &nnc::Tensor) -> Result<ir::Tensor> {
    let shape = t.shape().to_vec();
    let r = match t.dtype() {
        nnc::DType::F32 => ir::Tensor::f32(shape, t.as_f32().unwrap_or_default().to_vec()),
        nnc::DType::I64 => ir::Tensor::i64(shape, t.as_i64().unwrap_or_default().to_vec()),
        nnc::DType::Bool => ir::Tensor::bool(shape, t.to_bools().unwrap_or_default()),
    };
    r.map_err(|e| anyhow::anyhow!(e))
}

fn compile(args: &[String]) -> Result<()> {
    let Some(a) = parse_compile(args)? else {
        return Ok(());
    };
    let mut bind_inputs = Vec::with_capacity(a.bind_inputs.len());
    for (name, file) in &a.bind_inputs {
        let t = npy::read(file).map_err(|e| anyhow::anyhow!("--bind-input {name}: {e:#}"))?;
        bind_inputs.push((name.clone(), to_ir_tensor(&t)?));
    }
    let opts = nnc::Options {
        input_shapes: a.input_shapes.clone(),
        bind_inputs,
        target: match &a.target {
            Some(t) => Some(
                target_lexicon::Triple::from_str(t)
                    .map_err(|e| usage(format!("--target '{t}': {e}")))?,
            ),
            None => None,
        },
        cpu: match &a.cpu {
            Some(c) => Some(target::Cpu::from_str(c).map_err(usage)?),
            None => None,
        },
        name: a.name.clone(),
        linker: a.linker.clone(),
        no_opt: a.no_opt,
    };
    let total = std::time::Instant::now();
    let prepared = if a.emit == Emit::Ir {
        let g = nnc_onnx::load_model(
            &a.model,
            &nnc_onnx::Options {
                input_shapes: opts.input_shapes.clone(),
                bind_inputs: opts.bind_inputs.clone(),
            },
        )?;
        print!("{}", ir::text::print(&g));
        return Ok(());
    } else {
        nnc::prepare_file(&a.model, &opts)?
    };
    if a.emit == Emit::EgraphStats {
        match &prepared.opt_stats {
            Some(s) => print!("{s}"),
            None => println!("optimizer disabled (--no-opt)"),
        }
        return Ok(());
    }
    if a.emit == Emit::EgraphStats {
        match &prepared.opt_stats {
            Some(s) => print!("{s}"),
            None => println!("optimizer disabled (--no-opt)"),
        }
        return Ok(());
    }
    if a.emit == Emit::OptIr {
        print!("{}", ir::text::print(&prepared.graph));
        println!(
            "# workspace: {} bytes, {} kernel steps",
            prepared.plan.workspace_size,
            prepared.plan.steps.len()
        );
        return Ok(());
    }
    let output = match &a.output {
        Some(o) => o.clone(),
        None => a
            .model
            .with_extension(if a.emit == Emit::Obj { "o" } else { "so" }),
    };
    let c = nnc::compile_prepared(
        prepared,
        &output,
        a.header.as_deref(),
        a.emit == Emit::Obj,
        &opts,
    )?;
    if a.timings {
        for (what, d) in &c.timings.phases {
            eprintln!("  {what:<36} {:>8.1} ms", d.as_secs_f64() * 1e3);
        }
        eprintln!(
            "  {:<36} {:>8.1} ms",
            "total",
            total.elapsed().as_secs_f64() * 1e3
        );
    }
    eprintln!(
        "nnc: wrote {} and {} (workspace {} bytes)",
        c.library.display(),
        c.header.display(),
        c.workspace_size
    );
    Ok(())
}

/// `nnc … | head` should end quietly like other Unix tools, not panic on a
/// closed pipe: restore the default SIGPIPE action Rust replaces at startup.
fn restore_sigpipe() {
    #[cfg(unix)]
    {
        extern "C" {
            fn signal(signum: i32, handler: usize) -> usize;
        }
        const SIGPIPE: i32 = 13;
        const SIG_DFL: usize = 0;
        // SAFETY: setting a signal disposition to the default is always sound.
        unsafe {
            signal(SIGPIPE, SIG_DFL);
        }
    }
}
