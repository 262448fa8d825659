//! ONNX frontend: `ModelProto` → [`nnc_compiler::ir::Graph`].
//!
//! The frontend resolves everything ONNX leaves dynamic (symbolic dims,
//! value-dependent attributes such as Reshape's target shape, opset-dependent
//! attribute forms) into the static IR, folding shape computations on the way,
//! so the optimizer never sees ONNX. It must never panic: models come from
//! anywhere, and every failure is a one-line [`Error`] naming the node.

mod builder;
mod error;
mod model;
mod node;
mod ops;
mod tensor;

pub use error::{Error, SymbolicInput, Unsupported};

use nnc_compiler::ir::{Graph, Tensor};
use std::path::Path;

/// Default-domain opsets nnc understands. Opsets 26–28 changed no op nnc
/// translates in a way that matters to it (onnx 1.23's schema history:
/// Cast-28 and Einsum-28 only add float6/bfloat16 types, Range-27 a
/// stash_type for float16/bfloat16, ReduceLogSum(Exp)-28 drop integer types,
/// Mod-28 allows fmod=0 on floats, which nnc refuses by name).
pub const MIN_OPSET: i64 = 7;
pub const MAX_OPSET: i64 = 28;

/// User choices that the model itself leaves open.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Concrete shapes for inputs with symbolic or unknown dims
    /// (`--input-shape NAME=D0,D1,..`).
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// Graph inputs bound to constants at compile time (`--bind-input
    /// NAME=FILE.npy`): each named input becomes a constant of this value,
    /// so value-dependent operands computed from it (shapes, axes, pads, …)
    /// fold, and it disappears from the compiled library's inputs. The
    /// tensor's dtype must be the input's (integer inputs take int64) and its
    /// shape must agree with every dim the model fixes.
    pub bind_inputs: Vec<(String, Tensor)>,
}

impl Options {
    /// Parses one `--input-shape` argument, `NAME=D0,D1,...` (`NAME=` for a
    /// scalar). The name may itself contain `=`; the last one separates.
    pub fn parse_input_shape(arg: &str) -> Result<(String, Vec<usize>), String> {
        let (name, dims) = arg
            .rsplit_once('=')
            .ok_or_else(|| format!("--input-shape {arg:?}: expected NAME=D0,D1,..."))?;
        if name.is_empty() {
            return Err(format!("--input-shape {arg:?}: the input name is empty"));
        }
        let dims = if dims.trim().is_empty() {
            Vec::new()
        } else {
            dims.split(',')
                .map(|d| d.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("--input-shape {arg:?}: dims must be non-negative integers"))?
        };
        Ok((name.to_string(), dims))
    }
}

/// Loads an ONNX file; external tensor data is read relative to its directory.
pub fn load_model(path: &Path, opts: &Options) -> Result<Graph, Error> {
    let bytes = read_file(path)?;
    let dir = model_dir(path);
    model::load(&bytes, &path.display().to_string(), Some(dir), opts)
}

/// Loads a model from memory. Without `base_dir`, tensors stored as external
/// data are refused (there is nowhere safe to read them from).
pub fn load_model_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    opts: &Options,
) -> Result<Graph, Error> {
    model::load(bytes, "model", base_dir, opts)
}

/// What `nnc info` shows about a model without compiling it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSummary {
    /// Opset imports as (domain, version); the default domain is "".
    pub opsets: Vec<(String, i64)>,
    /// `producer_name producer_version`.
    pub producer: String,
    /// Node count per op type (`domain.Op` outside the default domain), most
    /// frequent first.
    pub op_histogram: Vec<(String, usize)>,
    pub ir_version: i64,
}

/// Parses a model and summarizes it; succeeds even if nnc cannot compile it.
pub fn summarize(path: &Path) -> Result<ModelSummary, Error> {
    let bytes = read_file(path)?;
    model::summarize(&bytes, &path.display().to_string())
}

/// Op types (default domain) the frontend can translate, sorted.
pub fn supported_ops() -> Vec<&'static str> {
    ops::supported()
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

fn model_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
