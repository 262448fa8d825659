#!/usr/bin/env python3
"""Check an nnc-compiled model library against onnxruntime.

    ort_compare.py MODEL.onnx LIB.so [--seed N] [--tol 1e-4]
                   [--input-shape NAME=D0,D1,...]... [--threads N]
                   [--bench] [--repeat N]

LIB.so is loaded with ctypes through the nnc C ABI (NNC_ABI_VERSION 1):
`nnc_model_info()` describes the inputs/outputs, `nnc_model_run()` runs it.
Seeded random inputs are fed to both the library and onnxruntime (one
thread), and every output is compared with

    metric = max_i |nnc_i - ort_i| / (|ort_i| + 1e-3)

Checks, each of which fails the run (exit status 1):
  * the library's signature agrees with the ONNX model (input/output count,
    dtypes, static dims) and its output shapes with what onnxruntime produced;
  * nnc_model_run returns 0;
  * metric <= --tol for every output (non-float outputs must match exactly);
  * a run with a caller-allocated workspace (workspace_size bytes aligned to
    workspace_align, pre-filled with 0xFF) is bit-identical to the run with
    workspace = NULL, so the model neither depends on zeroed scratch memory
    nor behaves differently when it allocates its own;
  * the input buffers are left untouched;
  * with --threads N: a run through a real thread pool (Python threads
    calling the task function concurrently; ctypes drops the GIL) passes
    the same tolerance.

--bench additionally times nnc (caller workspace, threads = NULL) and
onnxruntime (1 intra-op thread, IO binding) as the median of --repeat runs
after warm-up, and prints the latency ratio nnc/ort.

The last line of output is machine-readable for tests/models/run_model_tests.sh:
    RESULT PASS|FAIL metric=<worst> [nnc_ms=<t> ort_ms=<t> ratio=<r>]
"""

import argparse
import ctypes
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

NNC_ABI_VERSION = 1
REL_FLOOR = 1e-3  # the "+ 1e-3" of the metric


# ---- the C ABI, field for field ------------------------------------------

class TensorInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_int32),  # ONNX TensorProto.DataType
        ("rank", ctypes.c_int32),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
    ]


class ModelInfo(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("num_inputs", ctypes.c_uint32),
        ("num_outputs", ctypes.c_uint32),
        ("inputs", ctypes.POINTER(TensorInfo)),
        ("outputs", ctypes.POINTER(TensorInfo)),
        ("workspace_size", ctypes.c_uint64),
        ("workspace_align", ctypes.c_uint64),
        ("producer", ctypes.c_char_p),
    ]


TASK_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t)
PARALLEL_FOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t, TASK_FN, ctypes.c_void_p)


class Threads(ctypes.Structure):
    _fields_ = [
        ("num_threads", ctypes.c_size_t),
        ("pool", ctypes.c_void_p),
        ("parallel_for", PARALLEL_FOR),
    ]


class Sig:
    """One tensor of the signature, decoded from TensorInfo."""

    def __init__(self, name, dtype, shape):
        self.name, self.dtype, self.shape = name, dtype, list(shape)

    @property
    def np_dtype(self):
        return np.dtype(helper.tensor_dtype_to_np_dtype(self.dtype))

    def __repr__(self):
        try:
            dt = self.np_dtype.name
        except Exception:  # unknown code: show the number
            dt = f"dtype{self.dtype}"
        return f"{self.name}: {dt}{self.shape}"


class NncLib:
    def __init__(self, path):
        # RTLD_LOCAL: several models export the same nnc_model_* symbols.
        self.lib = ctypes.CDLL(os.path.abspath(path), mode=os.RTLD_NOW | os.RTLD_LOCAL)
        self.lib.nnc_model_info.restype = ctypes.POINTER(ModelInfo)
        self.lib.nnc_model_info.argtypes = []
        self.lib.nnc_model_run.restype = ctypes.c_int
        self.lib.nnc_model_run.argtypes = [
            ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_void_p, ctypes.POINTER(Threads),
        ]
        p = self.lib.nnc_model_info()
        if not p:
            raise RuntimeError("nnc_model_info() returned NULL")
        info = p.contents
        self.abi_version = info.abi_version
        self.workspace_size = int(info.workspace_size)
        self.workspace_align = int(info.workspace_align)
        self.producer = info.producer.decode() if info.producer else ""

        def decode(arr, n):
            out = []
            for i in range(n):
                t = arr[i]
                shape = [t.shape[d] for d in range(t.rank)]
                out.append(Sig(t.name.decode() if t.name else f"#{i}", t.dtype, shape))
            return out

        self.inputs = decode(info.inputs, info.num_inputs)
        self.outputs = decode(info.outputs, info.num_outputs)

    def run(self, inputs, outputs, workspace=None, threads=None):
        in_ptrs = (ctypes.c_void_p * max(1, len(inputs)))(*[a.ctypes.data for a in inputs])
        out_ptrs = (ctypes.c_void_p * max(1, len(outputs)))(*[a.ctypes.data for a in outputs])
        ws = None if workspace is None else workspace.ctypes.data
        return self.lib.nnc_model_run(in_ptrs, out_ptrs, ws, threads)


def aligned_workspace(size, align, fill=0xFF):
    """`size` bytes at an `align`-aligned address, backed by a numpy buffer."""
    align = max(int(align), 1)
    raw = np.empty(size + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    ws = raw[off:off + size]
    ws.fill(fill)
    assert ws.ctypes.data % align == 0
    return ws


class PythonPool:
    """An nnc_threads backed by a ThreadPoolExecutor.  The task function is
    called through ctypes, which releases the GIL, so tasks really do run
    concurrently -- enough to expose races in the generated code."""

    def __init__(self, n):
        self.executor = ThreadPoolExecutor(max_workers=n)
        self.errors = []
        self.calls = 0
        self.tasks = 0
        lock = threading.Lock()

        def parallel_for(_pool, num_tasks, fn, ctx):
            try:
                with lock:
                    self.calls += 1
                    self.tasks += num_tasks
                list(self.executor.map(lambda i: fn(ctx, i), range(num_tasks)))
            except BaseException as e:  # must not unwind into C
                self.errors.append(repr(e))

        self._cb = PARALLEL_FOR(parallel_for)  # keep alive while in use
        self.threads = Threads(n, None, self._cb)

    def close(self):
        self.executor.shutdown()


# ---- inputs / reference -----------------------------------------------------

def parse_shapes(items):
    shapes = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"bad --input-shape {item!r}, expected NAME=D0,D1,...")
        shapes[name] = [int(d) for d in dims.split(",")] if dims else []
    return shapes


def make_input(rng, sig, shape):
    dt = sig.np_dtype
    if dt.kind == "f":
        if "mask" in sig.name.lower():
            # Additive attention mask: 0 = attend, -10000 = masked.
            return np.where(rng.random(shape) < 0.25, -10000.0, 0.0).astype(dt)
        return rng.standard_normal(shape).astype(dt)
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        # Small non-negative values stay valid as indices / token ids for
        # any reasonably sized table.
        return rng.integers(0, 10, size=shape).astype(dt)
    raise SystemExit(f"unsupported input dtype {sig!r}")


def onnx_io(model):
    inits = {i.name for i in model.graph.initializer}
    ins = [v for v in model.graph.input if v.name not in inits]
    return ins, list(model.graph.output)


def onnx_dims(vi):
    """Declared dims; None for symbolic/unknown ones."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def compare(nnc, ref):
    """(metric, max abs err) -- NaN anywhere that ort has none counts as inf."""
    if nnc.dtype.kind != "f":
        diff = (nnc != ref)
        return (float(diff.sum()), float(diff.sum())) if diff.size else (0.0, 0.0)
    a = nnc.astype(np.float64)
    b = ref.astype(np.float64)
    same_special = (np.isnan(a) & np.isnan(b)) | ((a == b) & np.isinf(b))
    d = np.where(same_special, 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), np.inf, d)
    if d.size == 0:
        return 0.0, 0.0
    return float(np.max(d / (np.abs(np.where(np.isfinite(b), b, 0.0)) + REL_FLOOR))), float(np.max(d))


def ort_session(model_path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


def median_ms(fn, repeat, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


# ---- main ------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("lib")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                    help="shape for an input whose dims the library leaves open (-1); "
                         "for fixed inputs it must agree with the library")
    ap.add_argument("--threads", type=int, default=0,
                    help="also run through a Python thread pool of N threads")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--repeat", type=int, default=20, help="timed runs for --bench")
    args = ap.parse_args(argv)

    failures = []

    def fail(msg):
        failures.append(msg)

    model = onnx.load(args.model)
    try:
        lib = NncLib(args.lib)
    except (OSError, AttributeError, RuntimeError) as e:  # not loadable / symbols missing
        fail(f"cannot use {args.lib}: {e}")
        return finish(failures, 0.0)
    user_shapes = parse_shapes(args.input_shape)
    print(f"{os.path.basename(args.lib)}: abi {lib.abi_version}, producer {lib.producer!r}, "
          f"workspace {lib.workspace_size} B (align {lib.workspace_align})")
    print(f"  inputs  {lib.inputs}\n  outputs {lib.outputs}")

    if lib.abi_version != NNC_ABI_VERSION:
        fail(f"abi_version {lib.abi_version} != {NNC_ABI_VERSION}")
    if lib.workspace_align & (lib.workspace_align - 1):
        fail(f"workspace_align {lib.workspace_align} is not a power of two")
    elif lib.workspace_align < 64:
        print(f"WARN: workspace_align {lib.workspace_align} < 64 (runtime/include/nnc.h promises >= 64)")

    # ---- signature checks ---------------------------------------------------
    m_ins, m_outs = onnx_io(model)
    if len(m_ins) != len(lib.inputs):
        fail(f"library has {len(lib.inputs)} inputs, model has {len(m_ins)}")
    if len(m_outs) != len(lib.outputs):
        fail(f"library has {len(lib.outputs)} outputs, model has {len(m_outs)}")
    if failures:
        return finish(failures, 0.0)

    unknown = set(user_shapes) - {s.name for s in lib.inputs}
    if unknown:
        fail(f"--input-shape for unknown input(s) {sorted(unknown)}")

    in_shapes = []
    for sig, vi in zip(lib.inputs, m_ins):
        if sig.name != vi.name:
            print(f"WARN: input name {sig.name!r} != model's {vi.name!r}")
        if sig.dtype != vi.type.tensor_type.elem_type:
            fail(f"input {sig.name}: dtype {sig.dtype} != model's {vi.type.tensor_type.elem_type}")
        shape = list(sig.shape)
        want = user_shapes.get(sig.name)
        if want is not None:
            if len(want) != len(shape) or any(d >= 0 and d != w for d, w in zip(shape, want)):
                fail(f"input {sig.name}: --input-shape {want} disagrees with library shape {shape}")
            shape = want
        if any(d < 0 for d in shape):
            fail(f"input {sig.name}: shape {shape} has open dims; pass --input-shape")
        decl = onnx_dims(vi)
        if decl is not None and (len(decl) != len(shape) or
                                 any(d is not None and d != s for d, s in zip(decl, shape))):
            fail(f"input {sig.name}: shape {shape} incompatible with model's {decl}")
        in_shapes.append(shape)
    for sig, vi in zip(lib.outputs, m_outs):
        if sig.name != vi.name:
            print(f"WARN: output name {sig.name!r} != model's {vi.name!r}")
        if sig.dtype != vi.type.tensor_type.elem_type:
            fail(f"output {sig.name}: dtype {sig.dtype} != model's {vi.type.tensor_type.elem_type}")
        if any(d < 0 for d in sig.shape):
            fail(f"output {sig.name}: library shape {sig.shape} is not fixed")
        decl = onnx_dims(vi)
        if decl is not None and (len(decl) != len(sig.shape) or
                                 any(d is not None and d != s for d, s in zip(decl, sig.shape))):
            fail(f"output {sig.name}: shape {sig.shape} incompatible with model's {decl}")
    if failures:
        return finish(failures, 0.0)

    # ---- reference --------------------------------------------------------------
    rng = np.random.default_rng(args.seed)
    inputs = [np.ascontiguousarray(make_input(rng, s, sh)) for s, sh in zip(lib.inputs, in_shapes)]
    pristine = [a.copy() for a in inputs]
    sess = ort_session(args.model)
    feeds = {i.name: a for i, a in zip(sess.get_inputs(), inputs)}
    refs = sess.run(None, feeds)
    for sig, ref in zip(lib.outputs, refs):
        if list(ref.shape) != sig.shape:
            fail(f"output {sig.name}: library shape {sig.shape} != onnxruntime's {list(ref.shape)}")
    if failures:
        return finish(failures, 0.0)

    def fresh_outputs(fill, int_fill):
        # Pre-filled (differently per run), so elements the model never
        # writes show up either against ort or in the bit-identity check.
        return [np.full(s.shape, fill if s.np_dtype.kind == "f" else int_fill, dtype=s.np_dtype)
                for s in lib.outputs]

    # ---- run 1: workspace = NULL, threads = NULL -------------------------------
    out_a = fresh_outputs(np.nan, 77)
    rc = lib.run(inputs, out_a)
    if rc != 0:
        fail(f"nnc_model_run returned {rc}")
        return finish(failures, 0.0)

    worst = 0.0
    for sig, got, ref in zip(lib.outputs, out_a, refs):
        metric, abs_err = compare(got, ref)
        ok = metric <= args.tol
        worst = max(worst, metric)
        print(f"  {sig.name:<24} {str(list(got.shape)):<18} metric {metric:.3e}  "
              f"max abs err {abs_err:.3e}  {'PASS' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"output {sig.name}: metric {metric:.3e} > tol {args.tol:g}")

    # ---- run 2: caller workspace full of 0xFF -----------------------------------
    ws = aligned_workspace(lib.workspace_size, lib.workspace_align or 64)
    out_b = fresh_outputs(-12345.0, 0)
    rc = lib.run(inputs, out_b, workspace=ws)
    if rc != 0:
        fail(f"nnc_model_run with caller workspace returned {rc}")
    else:
        differ = [s.name for s, a, b in zip(lib.outputs, out_a, out_b) if a.tobytes() != b.tobytes()]
        for name in differ:
            fail(f"output {name}: caller-workspace run differs from the workspace=NULL run")
        print(f"  caller workspace ({lib.workspace_size} B): "
              f"{'bit-identical to workspace=NULL run' if not differ else 'DIFFERS'}")

    for sig, a, p in zip(lib.inputs, inputs, pristine):
        if a.tobytes() != p.tobytes():
            fail(f"input {sig.name} was modified by nnc_model_run")

    # ---- run 3 (optional): real thread pool -------------------------------------
    if args.threads > 0:
        pool = PythonPool(args.threads)
        out_c = fresh_outputs(np.nan, 77)
        rc = lib.run(inputs, out_c, workspace=ws, threads=ctypes.byref(pool.threads))
        pool.close()
        if rc != 0 or pool.errors:
            fail(f"threaded run: rc {rc}, callback errors {pool.errors[:3]}")
        else:
            same = all(a.tobytes() == c.tobytes() for a, c in zip(out_a, out_c))
            for sig, got, ref in zip(lib.outputs, out_c, refs):
                metric, _ = compare(got, ref)
                if metric > args.tol:
                    fail(f"output {sig.name} with {args.threads} threads: metric {metric:.3e}")
            print(f"  {args.threads} threads: {pool.calls} parallel_for calls, {pool.tasks} tasks, "
                  f"{'bit-identical to' if same else 'not bit-identical to'} the serial run")

    # ---- bench ------------------------------------------------------------------
    bench = None
    if args.bench and not failures:
        in_ptrs = (ctypes.c_void_p * max(1, len(inputs)))(*[a.ctypes.data for a in inputs])
        out_ptrs = (ctypes.c_void_p * max(1, len(out_b)))(*[a.ctypes.data for a in out_b])
        run = lib.lib.nnc_model_run
        ws_ptr = ws.ctypes.data
        nnc_ms = median_ms(lambda: run(in_ptrs, out_ptrs, ws_ptr, None), args.repeat)

        # IO binding keeps onnxruntime's per-call Python overhead comparable
        # to a single ctypes call.
        binding = sess.io_binding()
        for i, a in zip(sess.get_inputs(), inputs):
            binding.bind_cpu_input(i.name, a)
        ort_outs = [np.empty_like(r) for r in refs]
        for o, buf in zip(sess.get_outputs(), ort_outs):
            binding.bind_output(o.name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
        ort_ms = median_ms(lambda: sess.run_with_iobinding(binding), args.repeat)
        for o, buf, ref in zip(sess.get_outputs(), ort_outs, refs):
            if buf.tobytes() != ref.tobytes():  # the binding must time the real thing
                print(f"  note: onnxruntime IO-binding output {o.name} differs from sess.run")
        bench = (nnc_ms, ort_ms)
        print(f"  bench (1 thread, median of {args.repeat}): nnc {nnc_ms:.3f} ms, "
              f"ort {ort_ms:.3f} ms, nnc/ort {nnc_ms / ort_ms:.2f}")

    return finish(failures, worst, bench)


def finish(failures, worst, bench=None):
    for f in failures:
        print(f"  failure: {f}")
    line = f"RESULT {'FAIL' if failures else 'PASS'} metric={worst:.3e}"
    if bench:
        nnc_ms, ort_ms = bench
        line += f" nnc_ms={nnc_ms:.3f} ort_ms={ort_ms:.3f} ratio={nnc_ms / ort_ms:.3f}"
    print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
