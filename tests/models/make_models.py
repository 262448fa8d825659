#!/usr/bin/env python3
"""Generate the (uncommitted) model-level test models for nnc.

    python tests/models/make_models.py [OUT_DIR] [--verify]   # default .cache/models/

--verify runs the models with onnxruntime and checks MHA and MNIST against
independent numpy references (BERT and ResNet only for sane outputs).

All models are opset 17, float32, with fixed seeds (identical bytes on every
run), and written only -- they are regenerated on demand, never committed.

  mha_L16.onnx       x [16,1,64]                          -> attn_output [16,1,64]
  mha_L128.onnx      x [128,1,64]                         -> attn_output [128,1,64]
  bert_layer.onnx    hidden [1,128,768], mask [1,1,1,128] -> output [1,128,768]
  resnet18.onnx      input [1,3,224,224]                  -> logits [1,1000]
  mnist_cnn_b64.onnx input [64,1,28,28]                   -> probs [64,10]

The MHA and MNIST graphs come from examples/make_examples.py (same
structure as the shipped examples, static shapes).  BERT and ResNet mirror
what `torch.onnx.export` produces for HuggingFace `BertLayer` and
torchvision `resnet18` (with BatchNormalization kept as its own node rather
than folded into the convolutions).
"""

import os
import sys
import time

import numpy as np
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "examples"))

from make_examples import (GraphBuilder, build_mha_model, build_mnist_cnn, ort_run,  # noqa: E402
                           save, verify_mha, verify_mnist)


def _f32(a):
    return np.asarray(a, dtype=np.float32)


# --------------------------------------------------------------------------
# BERT-base encoder layer (HuggingFace BertLayer, eager attention)
# --------------------------------------------------------------------------

def build_bert_layer(seq=128, hidden=768, heads=12, ffn=3072, seed=2):
    """One BertLayer as HF transformers exports it with torch (opset 17).

    BertSelfAttention: query/key/value Linear -> MatMul + Add(bias first);
    transpose_for_scores -> Reshape to x.size()[:-1] + (heads, head_size)
    (Shape->Gather->Unsqueeze->Concat) then Transpose(0,2,1,3); for the key
    the exporter fuses permute(0,2,1,3) with transpose(-1,-2) into one
    Transpose(0,2,3,1).  scores = MatMul(q, k^T) / sqrt(64) (Div by 8),
    + additive mask, Softmax(-1), MatMul(probs, v), Transpose(0,2,1,3),
    Reshape to size()[:-2] + (768,).
    BertSelfOutput: dense, residual Add, LayerNormalization(eps 1e-12).
    BertIntermediate: dense to 3072 + erf GELU, exported by torch as
    Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5.
    BertOutput: dense back to 768, residual Add, LayerNormalization.
    """
    hd = hidden // heads
    rng = np.random.default_rng(seed)
    # BERT initialises N(0, 0.02).  At that scale the attention is almost
    # uniform and the FFN nearly linear, which would let wrong scaling or a
    # wrong GELU slip through, so the dense weights use 2.5x that.
    wstd = 0.05

    def dense(n_in, n_out):
        return _f32(rng.normal(0, wstd, (n_in, n_out))), _f32(rng.normal(0, 0.02, n_out))

    def ln(n):
        return _f32(1.0 + rng.normal(0, 0.1, n)), _f32(rng.normal(0, 0.1, n))

    g = GraphBuilder("bert_layer")
    p = "bert.encoder.layer.0"

    def linear(x, name, n_in, n_out, scope):
        # HF Linear weights are [out, in]; torch constant-folds the transpose
        # into an [in, out] initializer named onnx::MatMul_*.
        w, b = dense(n_in, n_out)
        wn = g.init(f"onnx::MatMul_{name}", w)
        bn = g.init(f"{p}.{name}.bias", b)
        y = g.op("MatMul", [x, wn], scope=scope)
        return g.op("Add", [bn, y], scope=scope)

    def layer_norm(x, name, scope):
        gamma, beta = ln(hidden)
        g.init(f"{p}.{name}.weight", gamma)
        g.init(f"{p}.{name}.bias", beta)
        return g.op("LayerNormalization", [x, f"{p}.{name}.weight", f"{p}.{name}.bias"],
                    scope=scope, axis=-1, epsilon=1e-12)

    sa = f"/{p}/attention/self"

    def dim(t, i):
        shape = g.op("Shape", [t], scope=sa)
        return g.op("Gather", [shape, g.const(i, scope=sa)], scope=sa, axis=0)

    def unsq(s):
        return g.op("Unsqueeze", [s, g.const([0], scope=sa)], scope=sa)

    def transpose_for_scores(x, perm):
        shape = g.op("Concat", [unsq(dim(x, 0)), unsq(dim(x, 1)),
                                g.const([heads], scope=sa), g.const([hd], scope=sa)],
                     scope=sa, axis=0)
        return g.op("Transpose", [g.op("Reshape", [x, shape], scope=sa)], scope=sa, perm=perm)

    x = "hidden"
    q = linear(x, "attention.self.query", hidden, hidden, f"{sa}/query")
    k = linear(x, "attention.self.key", hidden, hidden, f"{sa}/key")
    kt = transpose_for_scores(k, [0, 2, 3, 1])
    v = linear(x, "attention.self.value", hidden, hidden, f"{sa}/value")
    v = transpose_for_scores(v, [0, 2, 1, 3])
    q = transpose_for_scores(q, [0, 2, 1, 3])
    s = g.op("MatMul", [q, kt], scope=sa)
    s = g.op("Div", [s, g.const(np.sqrt(hd), np.float32, scope=sa)], scope=sa)
    s = g.op("Add", [s, "mask"], scope=sa)
    s = g.op("Softmax", [s], scope=sa, axis=-1)
    ctx = g.op("MatMul", [s, v], scope=sa)
    ctx = g.op("Transpose", [ctx], scope=sa, perm=[0, 2, 1, 3])
    shape = g.op("Concat", [unsq(dim(ctx, 0)), unsq(dim(ctx, 1)), g.const([hidden], scope=sa)],
                 scope=sa, axis=0)
    ctx = g.op("Reshape", [ctx, shape], scope=sa)

    so = f"/{p}/attention/output"
    h = linear(ctx, "attention.output.dense", hidden, hidden, f"{so}/dense")
    h = g.op("Add", [h, x], scope=so)
    h1 = layer_norm(h, "attention.output.LayerNorm", f"{so}/LayerNorm")

    it = f"/{p}/intermediate"
    f = linear(h1, "intermediate.dense", hidden, ffn, f"{it}/dense")
    act = f"{it}/intermediate_act_fn"
    e = g.op("Div", [f, g.const(1.4142135381698608, np.float32, scope=act)], scope=act)
    e = g.op("Erf", [e], scope=act)
    e = g.op("Add", [e, g.const(1.0, np.float32, scope=act)], scope=act)
    e = g.op("Mul", [f, e], scope=act)
    f = g.op("Mul", [e, g.const(0.5, np.float32, scope=act)], scope=act)

    out = f"/{p}/output"
    h = linear(f, "output.dense", ffn, hidden, f"{out}/dense")
    h = g.op("Add", [h, h1], scope=out)
    gamma, beta = ln(hidden)
    g.init(f"{p}.output.LayerNorm.weight", gamma)
    g.init(f"{p}.output.LayerNorm.bias", beta)
    g.op("LayerNormalization", [h, f"{p}.output.LayerNorm.weight", f"{p}.output.LayerNorm.bias"],
         scope=f"{out}/LayerNorm", outputs=["output"], axis=-1, epsilon=1e-12)

    inputs = [
        helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, seq, hidden]),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 1, seq]),
    ]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, seq, hidden])]
    return g.model(inputs, outputs, doc=f"BERT-base encoder layer, HF export structure (seed {seed})")


# --------------------------------------------------------------------------
# ResNet-18 (torchvision layout, BatchNormalization not folded)
# --------------------------------------------------------------------------

def build_resnet18(num_classes=1000, seed=3):
    rng = np.random.default_rng(seed)
    g = GraphBuilder("resnet18")

    def conv(x, name, c_in, c_out, k, stride, pad):
        fan_in = c_in * k * k
        w = _f32(rng.normal(0, np.sqrt(2.0 / fan_in), (c_out, c_in, k, k)))
        g.init(f"{name}.weight", w)
        return g.op("Conv", [x, f"{name}.weight"], scope=f"/{name}", dilations=[1, 1], group=1,
                    kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride])

    def bn(x, name, c, gamma_range=(0.5, 1.0)):
        # Running statistics are random, not measured, so each BN is only
        # roughly normalising.  gamma < 1 on the residual branch keeps the
        # residual stream from growing block after block (the same idea as
        # torchvision's zero_init_residual, without zeroing anything).
        gamma = _f32(rng.uniform(*gamma_range, c))
        beta = _f32(rng.normal(0, 0.1, c))
        mean = _f32(rng.normal(0, 0.1, c))
        var = _f32(rng.uniform(0.5, 1.5, c))
        for suffix, arr in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)):
            g.init(f"{name}.{suffix}", arr)
        return g.op("BatchNormalization",
                    [x, f"{name}.weight", f"{name}.bias", f"{name}.running_mean", f"{name}.running_var"],
                    scope=f"/{name}", epsilon=1e-5, momentum=0.9)

    def basic_block(x, name, c_in, c_out, stride):
        h = conv(x, f"{name}.conv1", c_in, c_out, 3, stride, 1)
        h = g.op("Relu", [bn(h, f"{name}.bn1", c_out)], scope=f"/{name}/relu")
        h = conv(h, f"{name}.conv2", c_out, c_out, 3, 1, 1)
        h = bn(h, f"{name}.bn2", c_out, gamma_range=(0.2, 0.5))
        if stride != 1 or c_in != c_out:
            x = conv(x, f"{name}.downsample.0", c_in, c_out, 1, stride, 0)
            x = bn(x, f"{name}.downsample.1", c_out)
        h = g.op("Add", [h, x], scope=f"/{name}")
        return g.op("Relu", [h], scope=f"/{name}/relu_1")

    h = conv("input", "conv1", 3, 64, 7, 2, 3)
    h = g.op("Relu", [bn(h, "bn1", 64)], scope="/relu")
    h = g.op("MaxPool", [h], scope="/maxpool", ceil_mode=0, kernel_shape=[3, 3],
             pads=[1, 1, 1, 1], strides=[2, 2])
    c_in = 64
    for stage, c_out in enumerate((64, 128, 256, 512), start=1):
        for blk in range(2):
            stride = 2 if (stage > 1 and blk == 0) else 1
            h = basic_block(h, f"layer{stage}.{blk}", c_in, c_out, stride)
            c_in = c_out
    h = g.op("GlobalAveragePool", [h], scope="/avgpool")
    h = g.op("Flatten", [h], scope="/flatten", axis=1)
    # Scaled so the logits come out O(1): the comparison metric is relative
    # with a 1e-3 floor, which only means something for moderate magnitudes.
    g.init("fc.weight", _f32(rng.normal(0, 0.5 / np.sqrt(512), (num_classes, 512))))
    g.init("fc.bias", _f32(rng.uniform(-0.1, 0.1, num_classes)))
    g.op("Gemm", [h, "fc.weight", "fc.bias"], scope="/fc", outputs=["logits"],
         alpha=1.0, beta=1.0, transB=1)

    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, num_classes])]
    return g.model(inputs, outputs, doc=f"ResNet-18 (random weights, seed {seed})")


# --------------------------------------------------------------------------

MODELS = {
    "mha_L16.onnx": lambda: build_mha_model(16),
    "mha_L128.onnx": lambda: build_mha_model(128),
    "bert_layer.onnx": build_bert_layer,
    "resnet18.onnx": build_resnet18,
    "mnist_cnn_b64.onnx": lambda: build_mnist_cnn(batch=64),
}


def verify(models):
    """Sanity checks with onnxruntime: MHA and MNIST against their numpy
    references, BERT/ResNet for finite, non-degenerate outputs."""
    verify_mha(models["mha_L16.onnx"], 16)
    verify_mha(models["mha_L128.onnx"], 128)
    verify_mnist(models["mnist_cnn_b64.onnx"], batch=64)
    rng = np.random.default_rng(0)
    mask = np.zeros((1, 1, 1, 128), np.float32)
    mask[..., 100:] = -10000.0
    for name, feeds in (
        ("bert_layer.onnx", {"hidden": rng.standard_normal((1, 128, 768), np.float32), "mask": mask}),
        ("resnet18.onnx", {"input": rng.standard_normal((1, 3, 224, 224), np.float32)}),
    ):
        (out,) = ort_run(models[name], feeds)
        print(f"  {name}: output {list(out.shape)} mean {out.mean():.3f} std {out.std():.3f}")
        assert np.all(np.isfinite(out)) and 0.1 < out.std() < 10, name


def main(argv):
    args = [a for a in argv[1:] if a != "--verify"]
    out_dir = args[0] if args else os.path.join(ROOT, ".cache", "models")
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    models = {name: build() for name, build in MODELS.items()}
    for name, model in models.items():
        save(model, os.path.join(out_dir, name))
    print(f"generated {len(MODELS)} models in {time.time() - t0:.1f} s")
    if "--verify" in argv:
        verify(models)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
