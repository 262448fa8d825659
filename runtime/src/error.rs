//! The one error type of the runtime.

use std::path::PathBuf;

use crate::DType;

/// Everything that can go wrong loading or running a model. Bad user input
/// (wrong tensors, a file that is not a model) is reported here, never by a
/// panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The dynamic loader refused the file (missing, not a library, wrong
    /// architecture, unresolved symbols...).
    #[error("cannot load model library {}: {}", path.display(), chain(error))]
    Load {
        path: PathBuf,
        error: libloading::Error,
    },
    /// The loader only takes UTF-8 paths.
    #[error("model library path {} is not valid UTF-8", path.display())]
    NonUtf8Path { path: PathBuf },
    /// The library loaded but lacks an nnc entry point: not an nnc model.
    #[error(
        "{} is not an nnc model library: missing symbol `{symbol}` ({})",
        path.display(),
        chain(error)
    )]
    MissingSymbol {
        path: PathBuf,
        symbol: &'static str,
        error: libloading::Error,
    },
    /// The library was built for another version of the ABI.
    #[error("model library uses nnc ABI version {found}, this runtime supports {expected}")]
    AbiVersion { found: u32, expected: u32 },
    /// The library's `nnc_model_info` is malformed (null pointers, negative
    /// ranks or dimensions, unknown dtypes...).
    #[error("invalid model info: {reason}")]
    InvalidInfo { reason: String },
    #[error("model takes {expected} inputs, got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("input `{name}`: expected dtype {expected}, got {got}")]
    InputDtype {
        name: String,
        expected: DType,
        got: DType,
    },
    #[error("input `{name}`: expected shape {expected:?}, got {got:?}")]
    InputShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("model produces {expected} outputs, got {got} output buffers")]
    OutputCount { expected: usize, got: usize },
    #[error("output `{name}`: expected dtype {expected}, got {got}")]
    OutputDtype {
        name: String,
        expected: DType,
        got: DType,
    },
    #[error("output `{name}`: expected shape {expected:?}, got {got:?}")]
    OutputShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A tensor constructor got a data vector whose length does not match
    /// the product of the shape.
    #[error("shape {shape:?} has {expected} elements, but {got} values were given")]
    DataLength {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    /// A shape whose element or byte count does not fit in memory.
    #[error("shape {shape:?} is too large")]
    ShapeOverflow { shape: Vec<usize> },
    /// A workspace too small or under-aligned for the model it was used with.
    #[error(
        "workspace of {size} bytes aligned to {align} is too small for this model \
         (needs {required_size} bytes aligned to {required_align})"
    )]
    Workspace {
        size: usize,
        align: usize,
        required_size: usize,
        required_align: usize,
    },
    /// The allocator could not provide a workspace.
    #[error("cannot allocate {size} bytes aligned to {align}")]
    Alloc { size: usize, align: usize },
    /// The generated code reported a failure (non-zero return code).
    #[error("model run failed with code {code}")]
    Run { code: i32 },
}

/// The loader's message with its causes: libloading puts the useful text
/// (dlerror's) in `source()`, which a plain `{}` would drop. The libloading
/// error is therefore not exposed as our `source()`, so chain-printing
/// reporters do not repeat it.
fn chain(e: &libloading::Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
