//! nnc as a library: compile ONNX files into shared libraries, or into
//! in-memory models with the JIT. Both give an [`nnc_runtime::Model`], so
//! code that runs models does not care how they were built.
//!
//! ```
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/mnist_cnn.onnx");
//! // JIT-compile the bundled MNIST CNN (`path` is examples/mnist_cnn.onnx) and run it.
//! let model = nnc::jit::compile_file(path, &nnc::Options::default())?;
//! let input = nnc::Tensor::from_f32(&[1, 1, 28, 28], vec![0.5; 784])?;
//! let outputs = model.run(&[input])?;
//! let probs = outputs[0].as_f32().unwrap();
//! assert_eq!(probs.len(), 10);
//! assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
//!
//! // The same model as a shared library + header, loaded back with dlopen.
//! let out = std::env::temp_dir().join("nnc_doc_mnist.so");
//! nnc::compile_file(path, &out, None, false, &nnc::Options::default())?;
//! let lib = nnc::Model::load(&out)?;
//! assert_eq!(lib.info().outputs[0].shape, vec![1, 10]);
//! # Ok::<(), nnc::Error>(())
//! ```

use nnc_compiler::codegen::target::{self, Cpu};
use nnc_compiler::{artifact, ir, lower::Plan, pipeline};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use nnc_compiler::ir::Graph;
pub use nnc_runtime::{DType, Model, ModelInfo, Tensor, TensorInfo, ThreadPool};
pub use target_lexicon::Triple;

/// Everything that can go wrong, by stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Frontend(#[from] nnc_onnx::Error),
    #[error("{path}: {source}", path = .0.display(), source = .1)]
    Pipeline(PathBuf, pipeline::PipelineError),
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    #[error("{0}")]
    Target(String),
    #[error("JIT: {0}")]
    Jit(String),
    #[error(transparent)]
    Runtime(#[from] nnc_runtime::Error),
}

/// Compile options shared by the AOT and JIT paths.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Concrete shapes for symbolic input dims (`--input-shape`).
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// Graph inputs bound to constant values at compile time
    /// (`--bind-input NAME=FILE.npy`); they leave the library's inputs.
    pub bind_inputs: Vec<(String, ir::Tensor)>,
    /// Target triple (default: the host).
    pub target: Option<Triple>,
    /// CPU feature level (default: native for the host, generic when cross).
    pub cpu: Option<Cpu>,
    /// Symbol prefix (default: the output file stem).
    pub name: Option<String>,
    /// Linker driver (default: `cc`, or `<triple>-gcc` when cross).
    pub linker: Option<String>,
    /// Skip the egg optimizer (`--no-opt`).
    pub no_opt: bool,
}

/// Wall time of each compile phase.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub phases: Vec<(&'static str, Duration)>,
}

impl Timings {
    fn lap(&mut self, what: &'static str, since: &mut Instant) {
        self.phases.push((what, since.elapsed()));
        *since = Instant::now();
    }
}

/// A model after the frontend and the middle end: ready for codegen.
pub struct Prepared {
    pub graph: Graph,
    pub plan: Plan,
    pub timings: Timings,
    /// What the optimizer did (None with `no_opt`).
    pub opt_stats: Option<nnc_compiler::opt::Stats>,
}

/// The cost model's machine for the compile target (and its CPU level).
pub fn machine_for(opts: &Options) -> nnc_compiler::opt::cost::Machine {
    use nnc_compiler::codegen::x86::Level;
    use nnc_compiler::opt::cost::Machine;
    let triple = opts.target.clone().unwrap_or_else(target::host_triple);
    if let target_lexicon::Architecture::Aarch64(_) = triple.architecture {
        return Machine::aarch64();
    }
    match target_of(opts, true).ok().and_then(|(t, _)| t.gemm_level) {
        Some(Level::Avx512) => Machine::x86_64_avx512(),
        Some(Level::Avx2Fma) => Machine::x86_64_avx2(),
        None => Machine::x86_64_sse(),
    }
}

/// Parses, infers shapes, folds, legalizes and plans.
pub fn prepare_file(path: impl AsRef<Path>, opts: &Options) -> Result<Prepared, Error> {
    let path = path.as_ref();
    let mut timings = Timings::default();
    let mut t = Instant::now();
    let g = nnc_onnx::load_model(
        path,
        &nnc_onnx::Options {
            input_shapes: opts.input_shapes.clone(),
            bind_inputs: opts.bind_inputs.clone(),
        },
    )?;
    timings.lap("parse + shape inference + folding", &mut t);
    let machine = machine_for(opts);
    let limits = nnc_compiler::opt::Limits::default();
    let opt = (!opts.no_opt).then_some((&machine, &limits));
    let (graph, plan, opt_stats) =
        pipeline::prepare_with(g, opt).map_err(|e| Error::Pipeline(path.to_path_buf(), e))?;
    timings.lap("optimize + legalize + plan", &mut t);
    Ok(Prepared {
        graph,
        plan,
        timings,
        opt_stats,
    })
}

fn target_of(opts: &Options, pic: bool) -> Result<(target::Target, bool), Error> {
    let triple = opts.target.clone().unwrap_or_else(target::host_triple);
    let cross = triple != target::host_triple();
    let cpu = opts
        .cpu
        .unwrap_or(if cross { Cpu::Generic } else { Cpu::Native });
    Ok((
        target::build(&triple, cpu, pic).map_err(Error::Target)?,
        cross,
    ))
}

/// What [`compile_file`] wrote.
pub struct Compiled {
    pub library: PathBuf,
    pub header: PathBuf,
    pub workspace_size: usize,
    pub timings: Timings,
}

/// The symbol prefix for an output path, validating `--name`.
pub fn prefix_for(out: &Path, name: Option<&str>) -> Result<String, Error> {
    match name {
        Some(n) => {
            let p = artifact::prefix_from_stem(n);
            if p != n {
                return Err(Error::Target(format!(
                    "--name '{n}' is not a C identifier (try '{p}')"
                )));
            }
            Ok(p)
        }
        None => Ok(artifact::prefix_from_stem(
            &out.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )),
    }
}

/// Default linker for a triple: the host `cc`, or Debian's cross driver name.
pub fn default_linker(triple: &Triple) -> String {
    if *triple == target::host_triple() {
        "cc".into()
    } else {
        format!("{triple}-gcc").replace("-unknown", "")
    }
}

/// Compiles `model` into the shared library `out` (+ header next to it, or
/// at `header`). With `object_only`, writes the relocatable object instead.
pub fn compile_file(
    model: impl AsRef<Path>,
    out: &Path,
    header: Option<&Path>,
    object_only: bool,
    opts: &Options,
) -> Result<Compiled, Error> {
    let p = prepare_file(model, opts)?;
    compile_prepared(p, out, header, object_only, opts)
}

/// The back half of [`compile_file`].
pub fn compile_prepared(
    p: Prepared,
    out: &Path,
    header: Option<&Path>,
    object_only: bool,
    opts: &Options,
) -> Result<Compiled, Error> {
    let Prepared {
        graph,
        plan,
        mut timings,
        ..
    } = p;
    let mut t = Instant::now();
    let prefix = prefix_for(out, opts.name.as_deref())?;
    let (tgt, _) = target_of(opts, true)?;
    let triple = tgt.isa.triple().clone();
    let obj = artifact::object(&graph, &plan, &prefix, tgt)?;
    timings.lap("codegen (cranelift)", &mut t);
    let io = |path: &Path, e| {
        Error::Artifact(artifact::ArtifactError::Io {
            path: path.to_path_buf(),
            source: e,
        })
    };
    if object_only {
        std::fs::write(out, &obj).map_err(|e| io(out, e))?;
    } else {
        let linker = opts
            .linker
            .clone()
            .unwrap_or_else(|| default_linker(&triple));
        artifact::link(&obj, out, &linker)?;
        timings.lap("link", &mut t);
    }
    let header = header
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out.with_extension("h"));
    std::fs::write(&header, artifact::header(&graph, &plan, &prefix))
        .map_err(|e| io(&header, e))?;
    Ok(Compiled {
        library: out.to_path_buf(),
        header,
        workspace_size: plan.workspace_size,
        timings,
    })
}

/// The JIT: compile in memory (no linker) to a [`Model`].
pub mod jit {
    use super::*;
    use nnc_compiler::jit::JitModel;

    /// Compiles an ONNX file in memory.
    pub fn compile_file(path: impl AsRef<Path>, opts: &Options) -> Result<Model, Error> {
        let path = path.as_ref();
        let p = prepare_file(path, opts)?;
        compile_prepared(&p, path)
    }

    /// JIT-compiles an already prepared model; `label` names it in errors.
    pub fn compile_prepared(p: &Prepared, label: &Path) -> Result<Model, Error> {
        let j = JitModel::compile(&p.graph, &p.plan).map_err(Error::Jit)?;
        // SAFETY: same ABI as generated libraries; the code lives in `j.code`,
        // which the Model owns.
        let model = unsafe {
            Model::from_entry_points(
                std::mem::transmute::<nnc_compiler::jit::InfoFn, nnc_runtime::abi::nnc_info_fn>(
                    j.info,
                ),
                std::mem::transmute::<nnc_compiler::jit::RunFn, nnc_runtime::abi::nnc_run_fn>(
                    j.run,
                ),
                label,
                Box::new(j.code),
            )?
        };
        Ok(model)
    }
}

/// FLOPs of one run (for GFLOP/s reports).
pub fn flops(g: &Graph) -> u64 {
    ir::flops(g)
}
