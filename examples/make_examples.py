#!/usr/bin/env python3
"""Generate the example ONNX models shipped with nnc.

    python examples/make_examples.py [--out-dir examples] [--no-verify]

Writes, deterministically (fixed seeds; re-running reproduces the same bytes):

  examples/mnist_cnn.onnx   input  "input" float32 [1,1,28,28]
                            output "probs" float32 [1,10]
  examples/attention.onnx   input  "x"           float32 [L,1,64]  (L symbolic)
                            output "attn_output" float32 [L,1,64]
                            nn.MultiheadAttention(64, 8) self-attention; the
                            1/sqrt(head_dim) scale is applied the torch >= 2.0
                            way: Mul by sqrt(scale) on both q and k^T, with
                            scale computed from Shape(q) (see build_mha_model)

Torch cannot be installed in the build environment, so the graphs are built
with onnx.helper, node by node, mirroring what `torch.onnx.export` (the
TorchScript exporter, opset 17) emits.  The point is to give the compiler the
same awkward structure real exports have -- Constant nodes, Shape-derived
Reshape targets, integer arithmetic on shape scalars -- not a tidied-up graph.

The builders are also imported by tests/models/make_models.py, which makes
static-shape and batched variants of the same models.
"""

import argparse
import os
import sys
from collections import defaultdict

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# IR version 8 is what torch emits for opset 17; keeping it low keeps the files
# loadable by older runtimes and protobuf readers.
IR_VERSION = 8
INT64_MAX = np.iinfo(np.int64).max


class GraphBuilder:
    """Small helper that names nodes/values the way the torch exporter does
    ("/Shape_1", "/Shape_1_output_0"), so the graphs read like real exports."""

    def __init__(self, name):
        self.name = name
        self.nodes = []
        self.initializers = []
        self._counts = defaultdict(int)

    def _node_name(self, op_type, scope):
        key = (scope, op_type)
        k = self._counts[key]
        self._counts[key] += 1
        base = f"{scope}/{op_type}" if scope else f"/{op_type}"
        return base if k == 0 else f"{base}_{k}"

    def op(self, op_type, inputs, scope="", num_outputs=1, outputs=None, **attrs):
        """Append a node; returns its output name (or a list of them)."""
        name = self._node_name(op_type, scope)
        if outputs is None:
            outputs = [f"{name}_output_{i}" for i in range(num_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def const(self, value, dtype=np.int64, scope=""):
        """A Constant *node* (torch emits shape scalars and axes this way,
        not as initializers)."""
        arr = np.array(value, dtype=dtype)
        name = self._node_name("Constant", scope)
        out = f"{name}_output_0"
        self.nodes.append(
            helper.make_node("Constant", [], [out], name=name,
                             value=numpy_helper.from_array(arr, name=""))
        )
        return out

    def init(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name=name))
        return name

    def model(self, inputs, outputs, doc=""):
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="nnc-examples",
            producer_version="1",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        return model


def _f32(a):
    return np.asarray(a, dtype=np.float32)


# --------------------------------------------------------------------------
# MNIST CNN
# --------------------------------------------------------------------------

def mnist_cnn_weights(seed=0):
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        # He-normal: keeps activation variance roughly constant through the
        # ReLU stack, so logits are O(1..10) rather than vanishing.
        return _f32(rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape))

    def bias(n):
        return _f32(rng.uniform(-0.1, 0.1, size=n))

    return {
        "conv1.weight": he((32, 1, 3, 3), 1 * 9),
        "conv1.bias": bias(32),
        "conv2.weight": he((64, 32, 3, 3), 32 * 9),
        "conv2.bias": bias(64),
        # PyTorch Linear layout [out, in]; exported as Gemm(transB=1).
        "fc1.weight": he((64, 64 * 5 * 5), 64 * 5 * 5),
        "fc1.bias": bias(64),
        "fc2.weight": he((10, 64), 64),
        "fc2.bias": bias(10),
    }


def build_mnist_cnn(batch=1, seed=0):
    """Classic MNIST CNN, as torch exports an nn.Module built from
    Conv2d/ReLU/MaxPool2d/Flatten/Linear/Softmax (no padding):
    28 -conv3-> 26 -pool2-> 13 -conv3-> 11 -pool2-> 5; 64*5*5 = 1600 features."""
    w = mnist_cnn_weights(seed)
    g = GraphBuilder("mnist_cnn")
    for k, v in w.items():
        g.init(k, v)

    x = "input"
    h = g.op("Conv", [x, "conv1.weight", "conv1.bias"], scope="/conv1",
             dilations=[1, 1], group=1, kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[1, 1])
    h = g.op("Relu", [h], scope="/relu1")
    h = g.op("MaxPool", [h], scope="/pool1", ceil_mode=0, kernel_shape=[2, 2],
             pads=[0, 0, 0, 0], strides=[2, 2])
    h = g.op("Conv", [h, "conv2.weight", "conv2.bias"], scope="/conv2",
             dilations=[1, 1], group=1, kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[1, 1])
    h = g.op("Relu", [h], scope="/relu2")
    h = g.op("MaxPool", [h], scope="/pool2", ceil_mode=0, kernel_shape=[2, 2],
             pads=[0, 0, 0, 0], strides=[2, 2])
    h = g.op("Flatten", [h], scope="/flatten", axis=1)
    h = g.op("Gemm", [h, "fc1.weight", "fc1.bias"], scope="/fc1", alpha=1.0, beta=1.0, transB=1)
    h = g.op("Relu", [h], scope="/relu3")
    h = g.op("Gemm", [h, "fc2.weight", "fc2.bias"], scope="/fc2", alpha=1.0, beta=1.0, transB=1)
    g.op("Softmax", [h], scope="/softmax", outputs=["probs"], axis=1)

    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, 28, 28])]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 10])]
    return g.model(inputs, outputs, doc="MNIST CNN (random He-initialised weights, seed %d)" % seed)


def mnist_cnn_reference(x, w):
    """Plain numpy (float64) forward pass of build_mnist_cnn, used to check
    the graph wiring, not onnxruntime."""
    x = x.astype(np.float64)

    def conv(x, wt, b):
        n, c, hgt, wid = x.shape
        o, _, kh, kw = wt.shape
        oh, ow = hgt - kh + 1, wid - kw + 1
        cols = np.stack([x[:, :, i:i + oh, j:j + ow] for i in range(kh) for j in range(kw)], axis=2)
        # cols: [n, c, kh*kw, oh, ow]
        out = np.einsum("nckhw,ock->nohw", cols, wt.reshape(o, c, kh * kw).astype(np.float64))
        return out + b.astype(np.float64)[None, :, None, None]

    def pool(x):
        n, c, hgt, wid = x.shape
        h2, w2 = hgt // 2, wid // 2
        return x[:, :, :h2 * 2, :w2 * 2].reshape(n, c, h2, 2, w2, 2).max(axis=(3, 5))

    h = pool(np.maximum(conv(x, w["conv1.weight"], w["conv1.bias"]), 0))
    h = pool(np.maximum(conv(h, w["conv2.weight"], w["conv2.bias"]), 0))
    h = h.reshape(h.shape[0], -1)
    h = np.maximum(h @ w["fc1.weight"].T + w["fc1.bias"], 0)
    h = h @ w["fc2.weight"].T + w["fc2.bias"]
    h = np.exp(h - h.max(axis=1, keepdims=True))
    return h / h.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------
# Multi-head self-attention (nn.MultiheadAttention, torch >= 2.0 export)
# --------------------------------------------------------------------------

def mha_weights(embed_dim=64, seed=1):
    rng = np.random.default_rng(seed)
    e = embed_dim
    # Torch initialises in_proj_weight with xavier_uniform and biases with 0.
    # We use twice the xavier bound so the softmax is noticeably non-uniform
    # and non-zero biases so a dropped bias Add cannot go unnoticed.
    bound_in = 2.0 * np.sqrt(6.0 / (e + 3 * e))
    bound_out = 1.0 / np.sqrt(e)  # kaiming_uniform(a=sqrt(5)) of nn.Linear
    return {
        "in_proj_weight": _f32(rng.uniform(-bound_in, bound_in, size=(3 * e, e))),
        "in_proj_bias": _f32(rng.uniform(-0.2, 0.2, size=3 * e)),
        "out_proj.weight": _f32(rng.uniform(-bound_out, bound_out, size=(e, e))),
        "out_proj.bias": _f32(rng.uniform(-0.2, 0.2, size=e)),
    }


def build_mha_model(seq_len="L", embed_dim=64, num_heads=8, seed=1):
    """Self-attention with the node structure torch 2.x emits for
    `nn.MultiheadAttention(embed_dim, num_heads)(x, x, x, need_weights=False)`
    with x: [L, 1, E] (batch_first=False, eval mode), opset 17.  Reconstructed
    from the torch sources, since torch itself cannot be run here.

    `seq_len` is either a dim_param name (dynamic axis) or an int (static
    shapes; the Shape-derived subgraphs are kept regardless).

    Structure, following torch/nn/functional.py::multi_head_attention_forward
    and the opset-13/14 symbolics:
      * _in_projection_packed: linear on a 3-D input -> MatMul(x, W^T) + Add(b);
        then proj.unflatten(-1, (3, E)).unsqueeze(0).transpose(0, -2)
        .squeeze(-2) -> Shape/Slice/Concat/Reshape, Unsqueeze, Transpose,
        Squeeze; q, k, v = proj[0], proj[1], proj[2] -> Gather(axis 0).
      * q.view(tgt_len, bsz * num_heads, head_dim).transpose(0, 1), likewise
        k and v with k.shape[0]; tgt_len/bsz/embed_dim come from Shape->Gather,
        bsz*num_heads is a Mul and head_dim = embed_dim // num_heads a Div on
        int64 scalars; view targets are Unsqueeze->Concat.
      * q.view(bsz, num_heads, tgt_len, head_dim) (and k, v with src_len =
        k.size(1)), then scaled_dot_product_attention, exported by the
        opset-14 symbolic: scale = Cast(1 / Sqrt(Cast(Shape(q)[-1:]))) and
        *sqrt(scale) applied to both q and k^T* (Mul, Mul), MatMul,
        Softmax(axis=-1), MatMul with v.
      * attn.permute(2, 0, 1, 3).view(bsz * tgt_len, embed_dim), output
        projection, view(tgt_len, bsz, out.size(1)).

    The unflatten's tail Slice yields an empty int64 tensor that goes into
    the Concat; that is what the exporter produces and is kept on purpose.

    One deliberate deviation: torch emits the 2-D output projection as
    Gemm(transB=1); here it is MatMul(W^T) + Add like the in-projection, as
    the nnc test plan asks for (Gemm is covered by the CNN models).
    """
    e, nh = embed_dim, num_heads
    assert e % nh == 0
    w = mha_weights(e, seed)
    g = GraphBuilder("multihead_attention")
    # torch constant-folds weight.t() into a transposed initializer.
    g.init("in_proj_weight_t", w["in_proj_weight"].T)
    g.init("in_proj_bias", w["in_proj_bias"])
    g.init("out_proj.weight_t", w["out_proj.weight"].T)
    g.init("out_proj.bias", w["out_proj.bias"])

    def c(v, dtype=np.int64):
        return g.const(v, dtype)

    def scalar_dim(t, i):  # t.shape[i] / t.size(i) while tracing
        return g.op("Gather", [g.op("Shape", [t]), c(i)], axis=0)

    def unsq(s):  # int64 scalar -> [1], as ListConstruct is exported
        return g.op("Unsqueeze", [s, c([0])])

    x = "x"
    tgt_len = scalar_dim(x, 0)
    bsz = scalar_dim(x, 1)
    embed = scalar_dim(x, 2)
    head_dim = g.op("Div", [embed, c(nh)])  # embed_dim // num_heads

    # ---- _in_projection_packed --------------------------------------------
    # torch emits linear's bias Add with the bias as the *first* operand.
    proj = g.op("MatMul", [x, "in_proj_weight_t"])
    proj = g.op("Add", ["in_proj_bias", proj])
    # unflatten(-1, (3, E)): Shape[:2] ++ [3, E] ++ Shape[3:] (empty tail).
    pshape = g.op("Shape", [proj])
    head = g.op("Slice", [pshape, c([0]), c([2])])
    tail = g.op("Slice", [pshape, c([3]), c([INT64_MAX])])
    proj = g.op("Reshape", [proj, g.op("Concat", [head, c([3, e]), tail], axis=0)])
    proj = g.op("Unsqueeze", [proj, c([0])])
    proj = g.op("Transpose", [proj], perm=[3, 1, 2, 0, 4])  # transpose(0, -2)
    proj = g.op("Squeeze", [proj, c([3])])                   # squeeze(-2)
    q, k, v = (g.op("Gather", [proj, c(i)], axis=0) for i in range(3))

    # ---- split heads: view(len, bsz*H, hd).transpose(0, 1) ------------------
    def heads_first(t, length):
        bh = g.op("Mul", [bsz, c(nh)])
        shape = g.op("Concat", [unsq(length), unsq(bh), unsq(head_dim)], axis=0)
        return g.op("Transpose", [g.op("Reshape", [t, shape])], perm=[1, 0, 2])

    q = heads_first(q, tgt_len)
    k = heads_first(k, scalar_dim(k, 0))
    v = heads_first(v, scalar_dim(v, 0))
    src_len = scalar_dim(k, 1)

    def to_4d(t, length):  # view(bsz, num_heads, len, head_dim)
        shape = g.op("Concat", [unsq(bsz), c([nh]), unsq(length), unsq(head_dim)], axis=0)
        return g.op("Reshape", [t, shape])

    q, k, v = to_4d(q, tgt_len), to_4d(k, src_len), to_4d(v, src_len)

    # ---- scaled_dot_product_attention (opset-14 symbolic) ------------------
    last = g.op("Slice", [g.op("Shape", [q]), c([-1]), c([INT64_MAX])])
    emb = g.op("Cast", [last], to=TensorProto.FLOAT)
    scale = g.op("Div", [c([1.0], np.float32), g.op("Sqrt", [emb])])
    scale = g.op("Cast", [scale], to=TensorProto.FLOAT)
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    qs = g.op("Mul", [q, g.op("Sqrt", [scale])])
    kts = g.op("Mul", [kt, g.op("Sqrt", [scale])])
    attn = g.op("Softmax", [g.op("MatMul", [qs, kts])], axis=-1)
    attn = g.op("MatMul", [attn, v])

    # ---- merge heads + output projection -----------------------------------
    attn = g.op("Transpose", [attn], perm=[2, 0, 1, 3])
    rows = g.op("Mul", [bsz, tgt_len])
    attn = g.op("Reshape", [attn, g.op("Concat", [unsq(rows), unsq(embed)], axis=0)])
    out = g.op("MatMul", [attn, "out_proj.weight_t"])
    out = g.op("Add", ["out_proj.bias", out])
    out_dim = scalar_dim(out, 1)
    final_shape = g.op("Concat", [unsq(tgt_len), unsq(bsz), unsq(out_dim)], axis=0)
    g.op("Reshape", [out, final_shape], outputs=["attn_output"])

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq_len, 1, e])]
    outputs = [helper.make_tensor_value_info("attn_output", TensorProto.FLOAT, [seq_len, 1, e])]
    return g.model(inputs, outputs,
                   doc=f"nn.MultiheadAttention(embed_dim={e}, num_heads={nh}) self-attention, "
                       f"torch 2.x export structure (seed {seed})")


def mha_reference(x, w, num_heads=8):
    """Textbook multi-head attention in float64, written independently of the
    graph above (no packed-projection tricks, plain 1/sqrt(d) scaling)."""
    x = x.astype(np.float64)
    seq, batch, e = x.shape
    hd = e // num_heads
    win = w["in_proj_weight"].astype(np.float64)
    bin_ = w["in_proj_bias"].astype(np.float64)
    q = x @ win[:e].T + bin_[:e]
    k = x @ win[e:2 * e].T + bin_[e:2 * e]
    v = x @ win[2 * e:].T + bin_[2 * e:]

    def split(t):  # [L, N, E] -> [N, H, L, hd]
        return t.reshape(seq, batch, num_heads, hd).transpose(1, 2, 0, 3)

    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    o = (p @ v).transpose(2, 0, 1, 3).reshape(seq, batch, e)
    return o @ w["out_proj.weight"].astype(np.float64).T + w["out_proj.bias"]


# --------------------------------------------------------------------------

def ort_run(model, feeds):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def verify_mha(model, seq_len, seed=1, tol=1e-5):
    x = np.random.default_rng(1234).standard_normal((seq_len, 1, 64)).astype(np.float32)
    (got,) = ort_run(model, {"x": x})
    want = mha_reference(x, mha_weights(64, seed))
    err = float(np.max(np.abs(got - want)))
    print(f"  attention L={seq_len}: onnxruntime vs numpy MHA max abs err {err:.2e}"
          f" (|out| max {np.max(np.abs(want)):.2f})")
    assert got.shape == (seq_len, 1, 64), got.shape
    assert err < tol, f"MHA mismatch: {err}"


def verify_mnist(model, batch=1, seed=0, tol=1e-5):
    x = np.random.default_rng(4321).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    (got,) = ort_run(model, {"input": x})
    want = mnist_cnn_reference(x, mnist_cnn_weights(seed))
    err = float(np.max(np.abs(got - want)))
    print(f"  mnist_cnn batch={batch}: onnxruntime vs numpy max abs err {err:.2e},"
          f" top-1 {np.argmax(got, axis=1)[:8]}, max prob {got.max():.3f}")
    assert got.shape == (batch, 10)
    assert err < tol, f"MNIST mismatch: {err}"
    # Random weights must still give a non-degenerate distribution.
    assert 0.15 < got.max() < 0.9999, got


def save(model, path):
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime checks")
    args = ap.parse_args(argv)

    mnist = build_mnist_cnn(batch=1)
    attention = build_mha_model("L")
    save(mnist, os.path.join(args.out_dir, "mnist_cnn.onnx"))
    save(attention, os.path.join(args.out_dir, "attention.onnx"))
    if not args.no_verify:
        verify_mnist(mnist)
        for seq_len in (16, 128):
            verify_mha(attention, seq_len)
    return 0


if __name__ == "__main__":
    sys.exit(main())
