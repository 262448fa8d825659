//! Op translation: one table from ONNX op type to builder, one module per
//! op family. A builder returns the IR values of the node's outputs in order;
//! it may return fewer than the node declares (e.g. MaxPool's Indices), and
//! the driver refuses the node only if such an output is actually used.

mod elementwise;
mod nn;
mod shape;

use crate::builder::Ctx;
use crate::node::{Node, Result};
use nnc_compiler::ir::ValueId;

pub(crate) type Build = fn(&mut Ctx<'_>, &Node) -> Result<Vec<ValueId>>;

const TABLE: &[(&str, Build)] = &[
    // elementwise.rs
    ("Abs", elementwise::unary),
    ("Ceil", elementwise::unary),
    ("Elu", elementwise::unary),
    ("Erf", elementwise::unary),
    ("Exp", elementwise::unary),
    ("Floor", elementwise::unary),
    ("HardSigmoid", elementwise::unary),
    ("HardSwish", elementwise::unary),
    ("LeakyRelu", elementwise::unary),
    ("Log", elementwise::unary),
    ("Neg", elementwise::unary),
    ("Not", elementwise::unary),
    ("Reciprocal", elementwise::unary),
    ("Relu", elementwise::unary),
    ("Selu", elementwise::unary),
    ("Sigmoid", elementwise::unary),
    ("Sqrt", elementwise::unary),
    ("Tanh", elementwise::unary),
    ("Gelu", elementwise::gelu),
    ("Softplus", elementwise::softplus),
    ("Softsign", elementwise::softsign),
    ("Mish", elementwise::mish),
    ("ThresholdedRelu", elementwise::thresholded_relu),
    ("Clip", elementwise::clip),
    ("PRelu", elementwise::prelu),
    ("Add", elementwise::binary),
    ("Sub", elementwise::binary),
    ("Mul", elementwise::binary),
    ("Div", elementwise::binary),
    ("Pow", elementwise::binary),
    ("Equal", elementwise::binary),
    ("Less", elementwise::binary),
    ("Greater", elementwise::binary),
    ("LessOrEqual", elementwise::binary),
    ("GreaterOrEqual", elementwise::binary),
    ("And", elementwise::binary),
    ("Or", elementwise::binary),
    ("Xor", elementwise::binary),
    ("Mod", elementwise::binary),
    ("Max", elementwise::variadic),
    ("Min", elementwise::variadic),
    ("Sum", elementwise::variadic),
    ("Mean", elementwise::variadic),
    ("Where", elementwise::where_),
    ("Cast", elementwise::cast),
    ("CastLike", elementwise::cast),
    ("Identity", elementwise::identity),
    ("Dropout", elementwise::dropout),
    // nn.rs
    ("Conv", nn::conv),
    ("MaxPool", nn::pool),
    ("AveragePool", nn::pool),
    ("GlobalAveragePool", nn::global_pool),
    ("GlobalMaxPool", nn::global_pool),
    ("BatchNormalization", nn::batch_norm),
    ("InstanceNormalization", nn::instance_norm),
    ("LayerNormalization", nn::layer_norm),
    ("Softmax", nn::softmax),
    ("LogSoftmax", nn::softmax),
    ("Gemm", nn::gemm),
    ("MatMul", nn::matmul),
    // shape.rs
    ("Flatten", shape::flatten),
    ("Reshape", shape::reshape),
    ("Transpose", shape::transpose),
    ("Squeeze", shape::squeeze),
    ("Unsqueeze", shape::unsqueeze),
    ("Concat", shape::concat),
    ("Split", shape::split),
    ("Slice", shape::slice),
    ("Gather", shape::gather),
    ("Expand", shape::expand),
    ("Tile", shape::tile),
    ("Pad", shape::pad),
    ("Shape", shape::shape),
    ("Size", shape::size),
    ("ConstantOfShape", shape::constant_of_shape),
    ("Range", shape::range),
    ("Constant", shape::constant),
    ("ReduceMean", shape::reduce),
    ("ReduceSum", shape::reduce),
    ("ReduceMax", shape::reduce),
    ("ReduceMin", shape::reduce),
    ("ReduceProd", shape::reduce),
    ("ReduceL1", shape::reduce),
    ("ReduceL2", shape::reduce),
    ("ReduceSumSquare", shape::reduce),
    ("ReduceLogSumExp", shape::reduce),
    ("ArgMax", shape::arg_max),
    ("ArgMin", shape::arg_max),
];

pub(crate) fn lookup(op_type: &str) -> Option<Build> {
    TABLE
        .iter()
        .find(|(name, _)| *name == op_type)
        .map(|&(_, b)| b)
}

pub(crate) fn supported() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = TABLE.iter().map(|&(name, _)| name).collect();
    v.sort_unstable();
    v
}
