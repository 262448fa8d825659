//! Runtime for models compiled by nnc.
//!
//! nnc turns an ONNX model into a native shared library with a small C ABI
//! (`include/nnc.h`): an info function describing inputs, outputs and
//! scratch needs, and a run function taking dense buffers. This crate holds
//! the Rust mirror of that ABI ([`abi`]), a thread pool that generated code
//! can use ([`ThreadPool`]), and a safe API to load and run a library
//! ([`Model`]) that checks every tensor against the model's signature before
//! any pointer crosses the boundary.
//!
//! ```no_run
//! use nnc_runtime::{Model, Tensor, ThreadPool};
//!
//! # fn main() -> Result<(), nnc_runtime::Error> {
//! let model = Model::load("./resnet18.so")?;
//! let input = &model.info().inputs[0];
//! let x = Tensor::from_f32(&input.shape, vec![0.5; input.numel()])?;
//!
//! // One-off run: single-threaded, fresh workspace.
//! let outputs = model.run(std::slice::from_ref(&x))?;
//! println!("{:?}", outputs[0]);
//!
//! // Serving loop: reuse the workspace and run on 4 threads.
//! let pool = ThreadPool::new(4);
//! let mut ws = model.new_workspace()?;
//! for _ in 0..10 {
//!     let outputs = model.run_with(std::slice::from_ref(&x), &mut ws, Some(&pool))?;
//!     let _logits = outputs[0].as_f32();
//! }
//! # Ok(())
//! # }
//! ```

pub mod abi;
mod error;
mod info;
mod model;
mod tensor;
mod threads;

pub use error::{Error, Result};
pub use info::{ModelInfo, TensorInfo, MAX_RANK, MAX_TENSORS};
pub use model::{Model, Workspace};
pub use tensor::{DType, Tensor};
pub use threads::ThreadPool;

/// Text of `include/nnc.h`, so tools can ship the header next to the
/// libraries they generate without locating this crate's sources.
pub const HEADER: &str = include_str!("../include/nnc.h");
