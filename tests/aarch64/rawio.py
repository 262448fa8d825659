#!/usr/bin/env python3
"""Raw-file helpers for the AArch64 cross tests (tests/aarch64/run.sh).

    rawio.py prepare MODEL.onnx DIR [--input-shape NAME=D0,...]... [--seed N]
        Seeded random inputs (the same distributions as tests/ort_compare.py)
        -> DIR/in/input<i>.bin; onnxruntime's outputs -> DIR/ort/output<i>.bin;
        dtypes and shapes of the outputs -> DIR/meta.json.

    rawio.py compare DIR --tol-ort T [--tol-cross T] [--name NAME]
        Compares DIR/a64/output<i>.bin (the AArch64 library under qemu) with
        DIR/x86/output<i>.bin (the same model compiled for the host) and both
        with DIR/ort/, using metric = max |a - b| / (|b| + 1e-3) (non-float
        outputs must match exactly).  Prints one line
            COMPARE name=NAME a64_x86=M a64_ort=M x86_ort=M status=PASS|FAIL
        and exits 1 on a mismatch (a64 vs x86 > --tol-cross, default 1e-4, or
        either vs onnxruntime > --tol-ort).
"""

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/ for ort_compare

REL_FLOOR = 1e-3


def parse_shapes(items):
    shapes = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        if not sep:
            raise SystemExit(f"bad --input-shape {item!r}")
        shapes[name] = [int(d) for d in dims.split(",")] if dims else []
    return shapes


class _Sig:  # what ort_compare.make_input looks at
    def __init__(self, name, np_dtype):
        self.name, self.np_dtype = name, np_dtype


def prepare(args):
    import onnx
    from onnx import helper
    from ort_compare import make_input, ort_session

    model = onnx.load(args.model, load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in inits]
    user = parse_shapes(args.input_shape)
    rng = np.random.default_rng(args.seed)
    os.makedirs(os.path.join(args.dir, "in"), exist_ok=True)
    os.makedirs(os.path.join(args.dir, "ort"), exist_ok=True)
    feeds = {}
    for i, vi in enumerate(graph_inputs):
        tt = vi.type.tensor_type
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        if vi.name in user:
            shape = user[vi.name]
        else:
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            if any(d < 0 for d in shape):
                raise SystemExit(f"input {vi.name}: open dims {shape}; pass --input-shape")
        a = np.ascontiguousarray(make_input(rng, _Sig(vi.name, dt), shape))
        a.tofile(os.path.join(args.dir, "in", f"input{i}.bin"))
        feeds[vi.name] = a
    sess = ort_session(args.model)
    outs = sess.run(None, feeds)
    meta = {"outputs": []}
    for i, (o, ref) in enumerate(zip(sess.get_outputs(), outs)):
        ref = np.ascontiguousarray(ref)
        ref.tofile(os.path.join(args.dir, "ort", f"output{i}.bin"))
        meta["outputs"].append({"name": o.name, "dtype": ref.dtype.str, "shape": list(ref.shape)})
    with open(os.path.join(args.dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return 0


def metric(a, b):
    """max |a - b| / (|b| + 1e-3); NaN/inf only where b has the same."""
    if a.dtype.kind != "f":
        return float((a != b).sum())
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    same = (np.isnan(a) & np.isnan(b)) | ((a == b) & np.isinf(b))
    with np.errstate(all="ignore"):
        d = np.where(same, 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), np.inf, d)
    if d.size == 0:
        return 0.0
    return float(np.max(d / (np.abs(np.where(np.isfinite(b), b, 0.0)) + REL_FLOOR)))


def load_outputs(d, meta):
    out = []
    for i, m in enumerate(meta["outputs"]):
        p = os.path.join(d, f"output{i}.bin")
        if not os.path.exists(p):
            return None
        a = np.fromfile(p, dtype=np.dtype(m["dtype"]))
        if a.size != int(np.prod(m["shape"], dtype=np.int64)):
            raise SystemExit(f"{p}: {a.size} elements, expected shape {m['shape']}")
        out.append(a.reshape(m["shape"]))
    return out


def compare(args):
    with open(os.path.join(args.dir, "meta.json")) as f:
        meta = json.load(f)
    a64 = load_outputs(os.path.join(args.dir, "a64"), meta)
    x86 = load_outputs(os.path.join(args.dir, "x86"), meta)
    ort = load_outputs(os.path.join(args.dir, "ort"), meta)

    def worst(x, y):
        if x is None or y is None:
            return float("inf")
        return max((metric(p, q) for p, q in zip(x, y)), default=0.0)

    m_ax, m_ao, m_xo = worst(a64, x86), worst(a64, ort), worst(x86, ort)
    ok = m_ax <= args.tol_cross and m_ao <= args.tol_ort and m_xo <= args.tol_ort
    bitexact = a64 is not None and x86 is not None and all(
        p.tobytes() == q.tobytes() for p, q in zip(a64, x86))
    print(f"COMPARE name={args.name or os.path.basename(args.dir)} a64_x86={m_ax:.3e} "
          f"a64_ort={m_ao:.3e} x86_ort={m_xo:.3e} bitexact={'yes' if bitexact else 'no'} "
          f"status={'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("model")
    p.add_argument("dir")
    p.add_argument("--input-shape", action="append")
    p.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare")
    c.add_argument("dir")
    c.add_argument("--tol-ort", type=float, required=True)
    c.add_argument("--tol-cross", type=float, default=1e-4)
    c.add_argument("--name")
    args = ap.parse_args(argv)
    return prepare(args) if args.cmd == "prepare" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
