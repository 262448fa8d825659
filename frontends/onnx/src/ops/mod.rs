//! Op translation: one table from ONNX op type to builder, one module per
//! op family. A builder returns the IR values of the node's outputs in order;
//! it may return fewer than the node declares (e.g. MaxPool's Indices), and
//! the driver refuses the node only if such an output is actually used.

mod attention;
mod einsum;
mod elementwise;
mod loss;
mod nn;
mod resize;
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
    ("Round", elementwise::unary),
    ("Sign", elementwise::sign),
    ("IsNaN", elementwise::is_nan),
    ("IsInf", elementwise::is_inf),
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
    ("ConvTranspose", nn::conv_transpose),
    ("MaxPool", nn::pool),
    ("AveragePool", nn::pool),
    ("GlobalAveragePool", nn::global_pool),
    ("GlobalMaxPool", nn::global_pool),
    ("BatchNormalization", nn::batch_norm),
    ("InstanceNormalization", nn::instance_norm),
    ("LayerNormalization", nn::layer_norm),
    ("RMSNormalization", nn::rms_norm),
    ("Softmax", nn::softmax),
    ("LogSoftmax", nn::softmax),
    ("Gemm", nn::gemm),
    ("MatMul", nn::matmul),
    ("Einsum", einsum::einsum),
    ("Attention", attention::attention),
    ("RotaryEmbedding", attention::rotary_embedding),
    ("NegativeLogLikelihoodLoss", loss::nll_loss),
    ("SoftmaxCrossEntropyLoss", loss::softmax_cross_entropy),
    ("Hardmax", nn::hardmax),
    ("SwiGLU", elementwise::swiglu),
    ("OneHot", shape::one_hot),
    ("Compress", shape::compress),
    ("GroupNormalization", nn::group_norm),
    ("LpPool", nn::lp_pool),
    ("MeanVarianceNormalization", shape::mvn),
    ("CenterCropPad", shape::center_crop_pad),
    ("LpNormalization", nn::lp_norm),
    ("Swish", elementwise::swish),
    ("Celu", elementwise::celu),
    ("Shrink", elementwise::shrink),
    ("DepthToSpace", shape::depth_space),
    ("SpaceToDepth", shape::depth_space),
    ("EyeLike", shape::eye_like),
    ("Resize", resize::resize),
    ("Upsample", resize::resize),
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
    ("GatherElements", shape::gather_elements),
    ("Expand", shape::expand),
    ("Tile", shape::tile),
    ("Trilu", shape::trilu),
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
    ("ReduceLogSum", shape::reduce),
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
