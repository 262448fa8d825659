//! nnc's intermediate representation: a typed tensor graph with static
//! shapes, a verifier, a text form, and a reference evaluator used for
//! constant folding and as the oracle in kernel tests.

pub mod eval;
mod flops;
mod fused;
mod graph;
mod op;
mod tensor;
pub mod text;
pub mod view;

pub use flops::flops;
pub use fused::FusedExpr;
pub use graph::{Graph, IrError, Output, Value, ValueId, ValueKind};
pub use op::{
    broadcast_shapes, matmul_shape, AttnViews, BinaryOp, ConvAlgo, DirectTile, GemmTile, Op,
    PadMode, PoolKind, ReduceOp, SliceDim, UnaryOp, Window,
};
pub use tensor::{
    contiguous_strides, DType, F32Bits, Tensor, TensorData, TensorType, MAX_TENSOR_BYTES,
};
pub use view::View;
