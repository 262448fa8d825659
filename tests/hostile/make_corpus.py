#!/usr/bin/env python3
"""Write nnc's hostile-model corpus: files that nnc must refuse cleanly.

    python tests/hostile/make_corpus.py OUT_DIR

Every file is deterministic (fixed seeds).  tests/hostile/expected.txt maps
each file to a substring its one-line error must contain; tests/hostile.rs
generates the corpus into a temporary directory, loads every file through
the library (load_model, prepare_file) and the `nnc` CLI, and checks that
each one is an error -- never a panic, a hang or a crash -- whose message
contains that substring.

A few cases need more than one file (external data, a symlink): they get a
subdirectory of OUT_DIR holding `model.onnx` plus the data files, and are
named `SUBDIR/model.onnx` in expected.txt.  Files an external-data case
must not be able to read live in OUT_DIR itself (`secret.bin`).

Add a case: write it below with case(...), run the script into a scratch
directory and `target/release/nnc compile FILE -o /tmp/x.so` to see the
message, then add a line to expected.txt.
"""

import os
import random
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
OUT = None
WRITTEN = []


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def write_bytes(name, data):
    path = os.path.join(OUT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    WRITTEN.append(name)


def model_bytes(nodes, inputs, outputs, inits=(), opset=OPSET, ir_version=8,
                opsets=None, value_info=()):
    g = helper.make_graph(list(nodes), "hostile", list(inputs), list(outputs),
                          initializer=list(inits), value_info=list(value_info))
    imports = opsets if opsets is not None else [helper.make_opsetid("", opset)]
    m = helper.make_model(g, opset_imports=imports, producer_name="nnc-hostile")
    m.ir_version = ir_version
    return m.SerializeToString()


def case(name, nodes, inputs, outputs, **kw):
    write_bytes(name, model_bytes(nodes, inputs, outputs, **kw))


def vi(name, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def out(name):
    """An output with no declared type (nnc infers it)."""
    v = onnx.ValueInfoProto()
    v.name = name
    return v


def f32(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name=name)


def i64(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.int64), name=name)


def bare_tensor(name, dtype, dims):
    """A TensorProto with dims and no data (onnx.helper would check sizes)."""
    t = onnx.TensorProto()
    t.name = name
    t.data_type = dtype
    t.dims.extend(dims)
    return t


def node(op, ins, outs, name=None, **attrs):
    return helper.make_node(op, ins, outs, name=name or f"n_{op}_{outs[0]}", **attrs)


# Raw protobuf encoding, for files onnx.helper refuses to make.
def varint(v):
    v &= (1 << 64) - 1
    b = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            b.append(byte | 0x80)
        else:
            b.append(byte)
            return bytes(b)


def key(field, wire):
    return varint((field << 3) | wire)


def ld(field, payload):
    """A length-delimited field."""
    return key(field, 2) + varint(len(payload)) + payload


def vint(field, v):
    return key(field, 0) + varint(v)


def fixed32(field, v):
    return key(field, 5) + struct.pack("<f", v)


def conv_model():
    """A small valid Conv -> Relu -> MaxPool model (the truncation source)."""
    rng = np.random.default_rng(0)
    w = f32("w", rng.standard_normal((4, 1, 3, 3)))
    b = f32("b", rng.standard_normal(4))
    nodes = [node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             node("Relu", ["c"], ["r"], name="relu"),
             node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
    return model_bytes(nodes, [vi("x", [1, 1, 8, 8])], [vi("y", [1, 4, 4, 4])], inits=[w, b])


def relu_graph_bytes(ir_version=8, opset=OPSET):
    return model_bytes([node("Relu", ["x"], ["y"], name="relu")],
                       [vi("x", [2, 3])], [out("y")], ir_version=ir_version, opset=opset)


# --------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------

def raw_files():
    good = conv_model()
    write_bytes("empty.onnx", b"")
    for n in (1, 7, 40, len(good) // 2, len(good) - 1):
        write_bytes(f"truncated_{n}.onnx", good[:n])
    rnd = random.Random(1234)
    for k, n in enumerate((16, 300, 5000)):
        write_bytes(f"random_{k}.onnx", bytes([0xFF, 0xFF]) + bytes(rnd.getrandbits(8) for _ in range(n)))
    write_bytes("text_file.onnx", b"this is not an onnx model, just some text\n")
    # Wire type mismatches: a fixed32 float where a string / varint belongs.
    graph = ld(1, node("Relu", ["x"], ["y"], name="r").SerializeToString())
    write_bytes("float_for_producer_name.onnx", vint(1, 8) + fixed32(2, 1.5) + ld(7, graph))
    write_bytes("string_for_ir_version.onnx", ld(1, b"eight") + ld(7, graph))
    # NodeProto{input "x", output "y", name "r", op_type: 2.0f}: protobuf
    # skips the mistyped field, leaving a node with an empty op_type.
    bad_node = ld(1, b"x") + ld(2, b"y") + ld(3, b"r") + fixed32(4, 2.0)
    g = (ld(1, bad_node) + ld(2, b"g") + ld(11, vi("x", [2, 3]).SerializeToString())
         + ld(12, vi("y", [2, 3]).SerializeToString()))
    write_bytes("float_for_op_type.onnx", vint(1, 8) + ld(7, g) + ld(8, vint(2, OPSET)))
    write_bytes("invalid_utf8_name.onnx",
                vint(1, 8) + ld(7, ld(1, ld(4, b"\xff\xfe\xfd"))) + ld(8, vint(2, OPSET)))
    # A length prefix pointing far past the end of the data.
    write_bytes("length_past_end.onnx", vint(1, 8) + key(7, 2) + varint(1 << 40) + b"\x00" * 8)
    # Deeply nested graphs (If -> then_branch -> If -> ...), 2000 levels.
    inner = b""
    for _ in range(2000):
        attr = ld(1, b"then_branch") + vint(20, 5) + ld(6, inner)  # AttributeProto{name, type=GRAPH, g}
        inner = ld(1, ld(4, b"If") + ld(5, attr))  # GraphProto{node: NodeProto{op_type, attribute}}
    write_bytes("nested_2000_levels.onnx", vint(1, 8) + ld(7, inner) + ld(8, vint(2, OPSET)))


def graph_files():
    x23 = [vi("x", [2, 3])]
    # Structure.
    case("cycle.onnx", [node("Add", ["x", "z"], ["y"], name="a"), node("Relu", ["y"], ["z"], name="b")],
         x23, [out("y")])
    case("self_loop.onnx", [node("Relu", ["y"], ["y"], name="self")], x23, [out("y")])
    case("undefined_input.onnx", [node("Add", ["x", "nope"], ["y"], name="a")], x23, [out("y")])
    case("duplicate_output.onnx", [node("Relu", ["x"], ["y"], name="a"), node("Sigmoid", ["x"], ["y"], name="b")],
         x23, [out("y")])
    case("output_redefines_input.onnx", [node("Relu", ["x"], ["x"], name="a")], x23, [out("x")])
    case("zero_outputs.onnx", [node("Relu", ["x"], ["y"], name="a")], x23, [])
    case("missing_output_name.onnx", [node("Relu", ["x"], ["y"], name="a")], x23, [out("ghost")])
    case("duplicate_initializer.onnx", [node("Add", ["x", "w"], ["y"], name="a")], x23, [out("y")],
         inits=[f32("w", np.ones((2, 3))), f32("w", np.ones((2, 3)))])
    case("duplicate_graph_output.onnx", [node("Relu", ["x"], ["y"], name="a")], x23, [out("y"), out("y")])
    case("no_graph_inputs_symbolic.onnx", [node("Relu", ["x"], ["y"], name="a")],
         [vi("x", ["batch", 3])], [out("y")])
    # Versions and domains.
    write_bytes("opset_99.onnx", relu_graph_bytes(opset=99))
    write_bytes("opset_1.onnx", relu_graph_bytes(opset=1))
    write_bytes("ir_version_99.onnx", relu_graph_bytes(ir_version=99))
    write_bytes("ir_version_1.onnx", relu_graph_bytes(ir_version=1))
    case("no_default_opset.onnx", [node("Relu", ["x"], ["y"], name="a")], x23, [out("y")],
         opsets=[helper.make_opsetid("com.example", 1)])
    n = node("FancyOp", ["x"], ["y"], name="fancy")
    n.domain = "com.example.hostile"
    case("unknown_domain.onnx", [n], x23, [out("y")],
         opsets=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example.hostile", 1)])
    case("unknown_op.onnx", [node("FrobnicateTensor", ["x"], ["y"], name="frob")], x23, [out("y")])
    # Dims and dtypes of inputs.
    case("negative_dim_input.onnx", [node("Relu", ["x"], ["y"], name="a")], [vi("x", [2, -5])], [out("y")])
    case("huge_dims_overflow_u64.onnx", [node("Relu", ["x"], ["y"], name="a")],
         [vi("x", [1 << 40, 1 << 40, 1 << 40])], [out("y")])
    case("dims_over_16gib.onnx", [node("Relu", ["x"], ["y"], name="a")], [vi("x", [1 << 31, 3])], [out("y")])
    case("initializer_over_16gib.onnx", [node("Add", ["x", "w"], ["y"], name="a")], x23, [out("y")],
         inits=[bare_tensor("w", TensorProto.FLOAT, [1 << 20, 1 << 13])])
    case("initializer_negative_dim.onnx", [node("Add", ["x", "w"], ["y"], name="a")], x23, [out("y")],
         inits=[bare_tensor("w", TensorProto.FLOAT, [-2, 3])])
    case("expand_to_over_16gib.onnx", [node("Expand", ["x", "s"], ["y"], name="expand")],
         [vi("x", [1, 1])], [out("y")], inits=[i64("s", [1 << 20, 1 << 13])])
    case("tile_to_overflow.onnx", [node("Tile", ["x", "r"], ["y"], name="tile")],
         [vi("x", [2, 3])], [out("y")], inits=[i64("r", [1 << 62, 1 << 62])])
    for dt, tag in ((TensorProto.FLOAT16, "float16"), (TensorProto.DOUBLE, "float64"), (TensorProto.INT8, "int8"),
                    (TensorProto.STRING, "string")):
        case(f"input_dtype_{tag}.onnx", [node("Identity", ["x"], ["y"], name="a")], [vi("x", [2], dt)], [out("y")])
    seq_in = helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, [2])
    case("input_sequence.onnx", [node("Identity", ["x"], ["y"], name="a")], [seq_in], [out("y")])
    # Tensor data.
    raw = bare_tensor("w", TensorProto.FLOAT, [2, 3])
    raw.raw_data = np.zeros(5, np.float32).tobytes()
    case("raw_data_length_mismatch.onnx", [node("Add", ["x", "w"], ["y"], name="a")], x23, [out("y")], inits=[raw])
    fd = bare_tensor("w", TensorProto.FLOAT, [2, 3])
    fd.float_data.extend([1.0, 2.0, 3.0, 4.0])
    case("float_data_length_mismatch.onnx", [node("Add", ["x", "w"], ["y"], name="a")], x23, [out("y")], inits=[fd])
    case("initializer_dtype_float16.onnx", [node("Add", ["x", "w"], ["y"], name="a")], x23, [out("y")],
         inits=[numpy_helper.from_array(np.ones((2, 3), np.float16), "w")])
    # Attributes.
    rng = np.random.default_rng(0)
    w = f32("w", rng.standard_normal((4, 1, 3, 3)))
    x = [vi("x", [1, 1, 8, 8])]
    conv_strides_float = node("Conv", ["x", "w"], ["y"], name="conv")
    conv_strides_float.attribute.append(helper.make_attribute("strides", 2.0))
    case("conv_strides_float.onnx", [conv_strides_float], x, [out("y")], inits=[w])
    case("conv_kernel_shape_mismatch.onnx", [node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[5, 5])],
         x, [out("y")], inits=[w])
    case("conv_zero_stride.onnx", [node("Conv", ["x", "w"], ["y"], name="conv", strides=[0, 1])],
         x, [out("y")], inits=[w])
    case("conv_huge_pads.onnx", [node("Conv", ["x", "w"], ["y"], name="conv", pads=[1 << 40, 0, 0, 0])],
         x, [out("y")], inits=[w])
    case("conv_channel_mismatch.onnx", [node("Conv", ["x", "w"], ["y"], name="conv")],
         [vi("x", [1, 3, 8, 8])], [out("y")], inits=[w])
    case("conv_kernel_larger_than_input.onnx", [node("Conv", ["x", "w"], ["y"], name="conv")],
         [vi("x", [1, 1, 2, 2])], [out("y")], inits=[w])
    case("conv_group_zero.onnx", [node("Conv", ["x", "w"], ["y"], name="conv", group=0)], x, [out("y")], inits=[w])
    case("maxpool_no_kernel.onnx", [node("MaxPool", ["x"], ["y"], name="pool")], x, [out("y")])
    n = node("Softmax", ["x"], ["y"], name="sm")
    a = onnx.AttributeProto()
    a.name = "axis"
    a.type = onnx.AttributeProto.INT
    a.ref_attr_name = "outer_axis"
    n.attribute.append(a)
    case("attr_ref_to_function.onnx", [n], x23, [out("y")])
    # Shape ops on constants.
    case("gather_const_index_out_of_range.onnx", [node("Gather", ["w", "i"], ["y"], name="gather", axis=0)],
         [], [out("y")], inits=[f32("w", np.ones((3, 2))), i64("i", [0, 7])])
    case("gather_axis_out_of_range.onnx", [node("Gather", ["x", "i"], ["y"], name="gather", axis=5)],
         x23, [out("y")], inits=[i64("i", [0])])
    case("slice_absurd_starts.onnx", [node("Slice", ["w", "s", "e"], ["y"], name="slice")],
         [], [out("y")], inits=[f32("w", np.ones((4, 4))), i64("s", [-(1 << 62)]), i64("e", [1 << 62]),
                                ])
    case("slice_zero_step.onnx", [node("Slice", ["x", "s", "e", "ax", "st"], ["y"], name="slice")],
         x23, [out("y")], inits=[i64("s", [0]), i64("e", [2]), i64("ax", [0]), i64("st", [0])])
    case("reshape_incompatible.onnx", [node("Reshape", ["x", "s"], ["y"], name="reshape")],
         x23, [out("y")], inits=[i64("s", [4, 4])])
    case("reshape_two_minus_one.onnx", [node("Reshape", ["x", "s"], ["y"], name="reshape")],
         x23, [out("y")], inits=[i64("s", [-1, -1])])
    case("reshape_runtime_shape.onnx", [node("Reshape", ["x", "s"], ["y"], name="reshape")],
         [vi("x", [2, 3]), vi("s", [2], TensorProto.INT64)], [out("y")])
    case("concat_rank_mismatch.onnx", [node("Concat", ["x", "z"], ["y"], name="concat", axis=0)],
         [vi("x", [2, 3]), vi("z", [2, 3, 1])], [out("y")])
    case("concat_axis_out_of_range.onnx", [node("Concat", ["x", "x"], ["y"], name="concat", axis=9)],
         x23, [out("y")])
    case("matmul_inner_mismatch.onnx", [node("MatMul", ["x", "w"], ["y"], name="matmul")],
         x23, [out("y")], inits=[f32("w", np.ones((4, 5)))])
    case("gemm_inner_mismatch.onnx", [node("Gemm", ["x", "w"], ["y"], name="gemm")],
         x23, [out("y")], inits=[f32("w", np.ones((4, 5)))])
    case("add_broadcast_mismatch.onnx", [node("Add", ["x", "w"], ["y"], name="add")],
         x23, [out("y")], inits=[f32("w", np.ones((4,)))])
    case("softmax_axis_out_of_range.onnx", [node("Softmax", ["x"], ["y"], name="softmax", axis=7)], x23, [out("y")])
    case("transpose_bad_perm.onnx", [node("Transpose", ["x"], ["y"], name="transpose", perm=[0, 0])],
         x23, [out("y")])
    case("split_sizes_mismatch.onnx", [node("Split", ["x", "s"], ["y", "z"], name="split", axis=1)],
         x23, [out("y")], inits=[i64("s", [2, 5])])
    case("relu_missing_input.onnx", [node("Relu", [], ["y"], name="relu")], x23, [out("y")])
    case("output_declared_wrong_dtype.onnx", [node("Relu", ["x"], ["y"], name="relu")], x23,
         [vi("y", [2, 3], TensorProto.INT64)])
    I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
    case("slice_step_i64_min.onnx", [node("Slice", ["x", "s", "e", "ax", "st"], ["y"], name="slice")],
         x23, [out("y")], inits=[i64("s", [0]), i64("e", [I64_MAX]), i64("ax", [1]), i64("st", [I64_MIN])])
    case("slice_step_i64_min_axis0.onnx", [node("Slice", ["x", "s", "e", "ax", "st"], ["y"], name="slice")],
         x23, [out("y")], inits=[i64("s", [0]), i64("e", [0]), i64("ax", [0]), i64("st", [I64_MIN])])
    case("pad_i64_min.onnx", [node("Pad", ["x", "p"], ["y"], name="pad")],
         x23, [out("y")], inits=[i64("p", [0, I64_MIN, 0, 0])])
    case("pad_two_i64_min.onnx", [node("Pad", ["x", "p"], ["y"], name="pad")],
         x23, [out("y")], inits=[i64("p", [0, I64_MIN, 0, I64_MIN])])
    case("slice_const_i64_extremes.onnx", [node("Slice", ["w", "s", "e", "ax", "st"], ["y"], name="slice")],
         [], [out("y")], inits=[f32("w", np.ones((4, 4))), i64("s", [I64_MIN, I64_MAX]), i64("e", [I64_MAX, I64_MIN]),
                                i64("ax", [0, 1]), i64("st", [I64_MAX, -1])])
    case("slice_axis_out_of_range.onnx", [node("Slice", ["x", "s", "e", "ax"], ["y"], name="slice")],
         x23, [out("y")], inits=[i64("s", [0]), i64("e", [1]), i64("ax", [I64_MIN])])
    case("range_zero_delta.onnx", [node("Range", ["a", "b", "d"], ["y"], name="range")],
         [], [out("y")], inits=[i64("a", 0), i64("b", 10), i64("d", 0)])
    case("range_huge.onnx", [node("Range", ["a", "b", "d"], ["y"], name="range")],
         [], [out("y")], inits=[i64("a", I64_MIN), i64("b", I64_MAX), i64("d", 1)])
    case("range_float_huge.onnx", [node("Range", ["a", "b", "d"], ["y"], name="range")],
         [], [out("y")], inits=[f32("a", 0.0), f32("b", 3e38), f32("d", 1e-30)])
    case("pad_huge.onnx", [node("Pad", ["x", "p"], ["y"], name="pad")],
         x23, [out("y")], inits=[i64("p", [0, 1 << 40, 0, 1 << 40])])
    case("pad_i64_extremes.onnx", [node("Pad", ["x", "p"], ["y"], name="pad")],
         x23, [out("y")], inits=[i64("p", [I64_MAX, 0, I64_MAX, 0])])
    case("pad_crop_too_much.onnx", [node("Pad", ["x", "p"], ["y"], name="pad")],
         x23, [out("y")], inits=[i64("p", [0, -5, 0, 0])])
    case("constant_of_shape_negative.onnx", [node("ConstantOfShape", ["s"], ["y"], name="cos")],
         [], [out("y")], inits=[i64("s", [-1, 3])])
    case("constant_of_shape_huge.onnx", [node("ConstantOfShape", ["s"], ["y"], name="cos")],
         [], [out("y")], inits=[i64("s", [I64_MAX, I64_MAX])])
    case("expand_negative_shape.onnx", [node("Expand", ["x", "s"], ["y"], name="expand")],
         x23, [out("y")], inits=[i64("s", [-2, 3])])
    case("unsqueeze_axis_out_of_range.onnx", [node("Unsqueeze", ["x", "a"], ["y"], name="unsq")],
         x23, [out("y")], inits=[i64("a", [I64_MIN])])
    case("unsqueeze_duplicate_axes.onnx", [node("Unsqueeze", ["x", "a"], ["y"], name="unsq")],
         x23, [out("y")], inits=[i64("a", [0, 0])])
    case("squeeze_non_one_dim.onnx", [node("Squeeze", ["x", "a"], ["y"], name="sq")],
         x23, [out("y")], inits=[i64("a", [0])])
    case("flatten_axis_out_of_range.onnx", [node("Flatten", ["x"], ["y"], name="flatten", axis=I64_MIN)],
         x23, [out("y")])
    case("argmax_axis_out_of_range.onnx", [node("ArgMax", ["x"], ["y"], name="argmax", axis=I64_MAX)],
         x23, [out("y")])
    case("transpose_huge_perm.onnx", [node("Transpose", ["x"], ["y"], name="transpose", perm=[I64_MAX, 0])],
         x23, [out("y")])
    case("cast_to_float16.onnx", [node("Cast", ["x"], ["y"], name="cast", to=TensorProto.FLOAT16)],
         x23, [out("y")])
    case("constant_without_value.onnx", [node("Constant", [], ["y"], name="const")], [], [out("y")])
    case("div_int_by_zero_const.onnx", [node("Div", ["a", "b"], ["y"], name="div")],
         [], [out("y")], inits=[i64("a", [1, 2]), i64("b", [0, 1])])
    case("maxpool_huge_kernel.onnx", [node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[(1 << 31) - 1] * 2)],
         [vi("x", [1, 1, 8, 8])], [out("y")])
    case("layernorm_axis_out_of_range.onnx", [node("LayerNormalization", ["x", "g"], ["y"], name="ln", axis=-9)],
         x23, [out("y")], inits=[f32("g", np.ones(3))])
    case("gemm_trans_not_bool.onnx", [node("Gemm", ["x", "w"], ["y"], name="gemm", transB=5)],
         x23, [out("y")], inits=[f32("w", np.ones((3, 4)))])
    case("concat_no_inputs.onnx", [node("Concat", [], ["y"], name="concat", axis=0)], [], [out("y")])
    case("split_no_outputs.onnx", [node("Split", ["x"], [], name="split", axis=0), node("Relu", ["x"], ["y"])],
         x23, [out("y")])
    case("softmax_on_scalar.onnx", [node("Softmax", ["x"], ["y"], name="softmax")], [vi("x", [])], [out("y")])
    case("where_broadcast_mismatch.onnx", [node("Where", ["c", "x", "w"], ["y"], name="where")],
         [vi("c", [2, 3], TensorProto.BOOL), vi("x", [2, 3])], [out("y")], inits=[f32("w", np.ones((5,)))])
    case("topk_unsupported.onnx", [node("TopK", ["x", "k"], ["y", "i"], name="topk")],
         x23, [out("y")], inits=[i64("k", [1])])
    # Names that would break a one-line message or a terminal.
    case("newline_in_node_name.onnx", [node("Add", ["x", "z"], ["y"], name="evil\nname"),
                                       node("Relu", ["y"], ["z"], name="b")], x23, [out("y")])
    case("escape_in_node_name.onnx", [node("Add", ["x", "nope"], ["y"], name="\x1b[2Jevil")], x23, [out("y")])
    case("newline_in_op_type.onnx", [node("Not\nAnOp", ["x"], ["y"], name="n")], x23, [out("y")])
    # Valid-but-odd models: any clean outcome (most compile).
    case("zero_dim_relu.onnx", [node("Relu", ["x"], ["y"], name="relu")], [vi("x", [0, 3])], [out("y")])
    case("matmul_k_zero.onnx", [node("MatMul", ["x", "w"], ["y"], name="matmul")],
         [vi("x", [2, 0])], [out("y")], inits=[f32("w", np.ones((0, 3)))])
    case("reduce_max_empty_axis.onnx", [node("ReduceMax", ["x"], ["y"], name="rmax", axes=[1], keepdims=0)],
         [vi("x", [2, 0])], [out("y")], opset=13)
    case("conv_zero_batch.onnx", [node("Conv", ["x", "w"], ["y"], name="conv")],
         [vi("x", [0, 1, 8, 8])], [out("y")], inits=[w])
    case("avgpool_pads_exceed_kernel.onnx",
         [node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], pads=[3, 3, 3, 3])],
         [vi("x", [1, 1, 4, 4])], [out("y")])
    chain = [node("Relu", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"], name=f"r{i}") for i in range(3000)]
    case("deep_chain_3000.onnx", chain, x23, [out("t2999")])
    # Control flow: If with a Loop inside its branch (2 levels of subgraphs).
    body = helper.make_graph([node("Identity", ["v"], ["v_out"], name="body_id"),
                              node("Identity", ["c"], ["c_out"], name="body_cond")], "body",
                             [vi("i", [], TensorProto.INT64), vi("c", [], TensorProto.BOOL), vi("v", [2, 3])],
                             [vi("c_out", [], TensorProto.BOOL), vi("v_out", [2, 3])])
    loop = helper.make_node("Loop", ["", "", "x"], ["lx"], name="inner_loop", body=body)
    then_g = helper.make_graph([loop], "then", [], [vi("lx", [2, 3])])
    else_g = helper.make_graph([node("Identity", ["x"], ["ex"], name="else_id")], "else", [], [vi("ex", [2, 3])])
    iff = helper.make_node("If", ["cond"], ["y"], name="outer_if", then_branch=then_g, else_branch=else_g)
    case("nested_if_loop.onnx", [iff], [vi("cond", [], TensorProto.BOOL), vi("x", [2, 3])], [out("y")])


def external_files():
    """External data: each case in its own directory with model.onnx."""
    secret = os.path.join(OUT, "secret.bin")
    with open(secret, "wb") as f:
        f.write(np.arange(6, dtype=np.float32).tobytes())

    def ext_model(sub, location, offset=None, length=None, data=None):
        d = os.path.join(OUT, sub)
        os.makedirs(d, exist_ok=True)
        if data is not None:
            with open(os.path.join(d, "w.bin"), "wb") as f:
                f.write(data)
        t = onnx.TensorProto()
        t.name = "w"
        t.data_type = TensorProto.FLOAT
        t.dims.extend([2, 3])
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", offset), ("length", length)):
            if v is not None:
                e = t.external_data.add()
                e.key, e.value = k, str(v)
        case(f"{sub}/model.onnx", [node("Add", ["x", "w"], ["y"], name="a")], [vi("x", [2, 3])], [out("y")],
             inits=[t])

    ok = np.ones(6, np.float32).tobytes()
    ext_model("ext_dotdot", "../secret.bin")
    ext_model("ext_absolute", secret)
    ext_model("ext_symlink", "link.bin")
    os.symlink(secret, os.path.join(OUT, "ext_symlink", "link.bin"))
    ext_model("ext_offset_past_end", "w.bin", offset=20, data=ok)
    ext_model("ext_offset_overflow", "w.bin", offset=(1 << 64) - 8, data=ok)
    ext_model("ext_length_mismatch", "w.bin", length=12, data=ok)
    ext_model("ext_missing_file", "nothere.bin")
    ext_model("ext_no_location", None, data=ok)
    ext_model("ext_directory", ".", data=ok)
    ext_model("ext_bad_offset", "w.bin", offset="12abc", data=ok)


def main(argv):
    global OUT
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    OUT = argv[1]
    os.makedirs(OUT, exist_ok=True)
    raw_files()
    graph_files()
    external_files()
    with open(os.path.join(OUT, "INDEX"), "w") as f:
        f.write("\n".join(sorted(WRITTEN)) + "\n")
    print(f"wrote {len(WRITTEN)} hostile models to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
