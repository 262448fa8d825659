#!/usr/bin/env python3
"""Run ONNX's backend node-test suite through nnc and classify every test.

    tests/conformance/run.py [--suite DIR] [--nnc PATH] [--jobs N]
                             [--filter REGEX] [--report PATH]
                             [--expected PATH] [--update-expected [--prune]]
                             [--strict] [--python PY]

Each test directory (`test_*/model.onnx` + `test_data_set_*/{input,output}_*.pb`,
as written by fetch_suite.py; the default suite is fetched on first use) is
compiled with `nnc compile` into a temporary .so, loaded with ctypes through
the nnc C ABI, run on every data set and compared with the expected outputs
(rtol 1e-3, atol 1e-7 like ONNX's backend runner; see README.md).

Every test ends up as exactly one of
    pass         all data sets match
    unsupported  nnc exited 1 with an explicit refusal (REFUSAL_PATTERNS)
    fail         anything else: wrong numbers/shape/dtype, a crash or signal,
                 a timeout, a non-zero nnc_model_run status, or a compile
                 error that is not an explicit refusal (internal error, panic)

Exit status: 1 if a test listed in the expected-pass file (and selected by
--filter) does not pass, or with --strict if any test is `fail`; 2 for a
harness problem (no nnc, no suite); else 0.

Tests run in a pool of --jobs long-lived worker processes (this script with
--worker), so a library that crashes or hangs takes down only its worker,
which is replaced.
"""

import argparse
import collections
import ctypes
import glob
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import fetch_suite  # noqa: E402  (same directory; also resolves the python to use)

DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-7  # onnx.backend.test.loader's defaults
TEST_TIMEOUT_S = 60.0  # compile + all data sets, per test
DEFAULT_REPORT = os.path.join(ROOT, ".cache", "conformance-report.json")
DEFAULT_EXPECTED = os.path.join(HERE, "expected_pass.txt")
DEFAULT_NNC = os.path.join(ROOT, "target", "release", "nnc")

# ---- tolerance overrides -----------------------------------------------------
# (regex on the test name, rtol, atol, why).  The first match wins; tests that
# match none use the case's own tolerance (ONNX's 1e-3 / 1e-7 for every node
# test of onnx 1.23.2).  Keep this tiny: every entry must say why the
# reference itself is not a fair bar, never "nnc is a bit off".  Format:
#   (r"^test_foo_(example|random)$", 1e-3, 1e-5,
#    "reference rounds through float16, so values near 0 carry 1e-5 noise"),
# Empty: every test that compiles today passes at ONNX's own tolerance.
TOLERANCE_OVERRIDES = [
]

# ---- classification of compile errors ----------------------------------------
# nnc exits 1 for every model it cannot compile.  A compile error counts as a
# refusal (`unsupported`) only when it is phrased in nnc's documented "support"
# vocabulary, i.e. every problem it lists matches one of REFUSAL_PATTERNS
# (case-insensitive).  Anything else -- internal errors, panics, "cannot
# reshape ...", and also deliberate limitations worded differently (e.g.
# "input 'axes' is computed at run time; nnc needs it constant", "output 1 is
# used, but nnc does not compute it", "the model imports no opset of the
# default domain") -- is a `fail`: either nnc is wrong, or it should say
# "... is not supported" so that users and this harness can tell a refusal
# from a bug.  Real messages these patterns accept:
#   unsupported op "TopK" at node "n1"                  (frontends/onnx error.rs)
#   domain "ai.onnx.ml" is not supported (used by ...)
#   node "x" (Cast): Cast to int8 is not supported ...
#   node "b" (BatchNormalization): attribute 'training_mode' = 1 is not supported
#   input "s" is not a tensor (sequences, maps and optionals are not supported)
#   node #0 (And): and: 'and' on data computed at run time is not supported
#   ...: input 0 is i64, only f32 is supported                 (compiler ir)
#   input "x" has element type int32; nnc supports float, int64 and bool inputs
#   opset 29 of the default domain is newer than nnc supports (7..=28)
# A multi-problem error ("2 node(s) cannot be compiled:" followed by one
# indented line per node, or the frontend's "unsupported op A ...; unsupported
# op B ...") is a refusal only if every listed problem is.
REFUSAL_PATTERNS = [
    r"\bunsupported\b",
    r"\bnot supported\b",
    r"\bis refused\b",
    r"\bonly \w+ (is|are) supported\b",
    r"\bdtype not supported\b",
    r"\bnnc supports\b",  # input dtypes, opset / ir_version window
]
REFUSAL_RE = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)
# Never a refusal, whatever else the text says: a bug is a bug.
NOT_REFUSAL_RE = re.compile(r"panicked at|internal error|unreachable|RUST_BACKTRACE", re.IGNORECASE)
EXPANDED_RE = re.compile(r"_expanded(_ver\d+)?$")


def tolerance_for(name, rtol, atol):
    for pat, r, a, _why in TOLERANCE_OVERRIDES:
        if re.search(pat, name):
            return r, a
    return rtol, atol


def classify_compile_error(rc, stderr):
    """(status, reason) for a non-zero `nnc compile` exit."""
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip()]
    if rc == 101 or any("panicked at" in ln for ln in lines):
        return "fail", "compile panic: " + _panic_line([ln.strip() for ln in lines])
    if rc is not None and rc < 0:
        return "fail", f"compile crash: nnc killed by {_signame(-rc)}" + (f": {lines[-1].strip()}" if lines else "")
    problems = _problems(lines)
    # Lead with a problem that is not a refusal, if any: that is the one to fix.
    bad = [pr for pr in problems if not REFUSAL_RE.search(pr)]
    first = (bad or problems)[0]
    msg = first + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
    if rc == 2:
        return "fail", "harness: nnc rejected the command line: " + msg
    if rc == 1 and not bad and not NOT_REFUSAL_RE.search(stderr):
        return "unsupported", msg
    return "fail", "compile error: " + msg


def _problems(lines):
    """The separate problems an `nnc: error:` message lists, one line each."""
    start = next((i for i, ln in enumerate(lines) if ln.startswith("nnc: error:")), None)
    if start is None:
        return [_strip_path(lines[0].strip())] if lines else ["(no message)"]
    head = _strip_path(lines[start][len("nnc: error:"):].strip())
    if re.search(r"cannot be compiled:$", head):
        rest = []
        for ln in lines[start + 1:]:
            if not ln.startswith((" ", "\t")):
                break
            rest.append(ln.strip())
        if rest:
            return rest
    # The frontend lists every unsupported op / foreign domain, joined by "; ".
    return [p.strip() for p in re.split(r'; (?=unsupported op "|domain ")', head)]


def _strip_path(msg):
    # "…/test_x/model.onnx: unsupported op …" -> "unsupported op …"
    return re.sub(r"^\S*model\.onnx: ", "", msg)


def _panic_line(lines):
    for i, ln in enumerate(lines):
        if "panicked at" in ln:
            # Rust >= 1.73 prints the message on the next line.
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            where = ln.split("panicked at", 1)[1].strip().rstrip(":")
            return f"{nxt} ({where})" if nxt and "note:" not in nxt else where
    return lines[0] if lines else "(no message)"


def _signame(sig):
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def main_op(model, name, base_ops):
    """The op a test is about: its node's op type, domain-qualified when not
    the default domain; `_expanded` tests take their base test's op."""
    m = EXPANDED_RE.search(name)
    if m:
        base = name[: m.start()]
        if base in base_ops:
            return base_ops[base] + " (expanded)"
    nodes = list(model.graph.node)
    if not nodes:
        op = "(no node)"
    else:
        # Node tests have one node; otherwise prefer the op named in the test.
        key = name[len("test_"):].replace("_", "").lower()
        cands = [n for n in nodes if n.op_type.lower() in key] or nodes[-1:]
        n = max(cands, key=lambda n: len(n.op_type))
        op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
    return op + (" (expanded)" if m else "")


# ============================================================================
# The worker: compiles and runs one test at a time, on request.
# ============================================================================

NNC_ABI_VERSION = 1


class TensorInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int32),
                ("rank", ctypes.c_int32), ("shape", ctypes.POINTER(ctypes.c_int64))]


class ModelInfo(ctypes.Structure):
    _fields_ = [("abi_version", ctypes.c_uint32), ("num_inputs", ctypes.c_uint32),
                ("num_outputs", ctypes.c_uint32), ("inputs", ctypes.POINTER(TensorInfo)),
                ("outputs", ctypes.POINTER(TensorInfo)), ("workspace_size", ctypes.c_uint64),
                ("workspace_align", ctypes.c_uint64), ("producer", ctypes.c_char_p)]


class TestFailure(Exception):
    pass


def _load_value(path, type_proto):
    import onnx
    from onnx import numpy_helper

    with open(path, "rb") as f:
        data = f.read()
    if type_proto.HasField("sequence_type"):
        p = onnx.SequenceProto()
        p.ParseFromString(data)
        return numpy_helper.to_list(p)
    if type_proto.HasField("optional_type"):
        p = onnx.OptionalProto()
        p.ParseFromString(data)
        return numpy_helper.to_optional(p)
    if type_proto.HasField("map_type"):
        p = onnx.MapProto()
        p.ParseFromString(data)
        return numpy_helper.to_dict(p)
    p = onnx.TensorProto()
    p.ParseFromString(data)
    return numpy_helper.to_array(p)


def _load_data_sets(test_dir, model):
    sets = []
    for ds in sorted(glob.glob(os.path.join(test_dir, "test_data_set_*")),
                     key=lambda p: int(p.rsplit("_", 1)[1])):
        ins, outs = [], []
        for kind, dst, infos in (("input", ins, model.graph.input), ("output", outs, model.graph.output)):
            n = len(glob.glob(os.path.join(ds, f"{kind}_*.pb")))
            for j in range(n):
                if j >= len(infos):
                    raise TestFailure(f"harness: {ds}: {kind}_{j}.pb has no graph {kind}")
                dst.append(_load_value(os.path.join(ds, f"{kind}_{j}.pb"), infos[j].type))
        sets.append((os.path.basename(ds), ins, outs))
    return sets


def _is_open_shape(type_proto):
    if not type_proto.HasField("tensor_type"):
        return False
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return True
    return any(not d.HasField("dim_value") or d.dim_value < 0 for d in tt.shape.dim)


def _dtype_name(np, code):
    from onnx import helper
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(code)).name
    except Exception:
        return f"dtype{code}"


def _fmt_idx(idx):
    return "[" + ",".join(str(int(i)) for i in idx) + "]"


def _compare(np, label, got, want, rtol, atol, stats=None):
    """None if equal within tolerance, else a one-line reason."""
    if got.shape != want.shape:
        return f"{label}: shape {list(got.shape)}, expected {list(want.shape)}"
    if got.dtype != want.dtype:
        return f"{label}: dtype {got.dtype}, expected {want.dtype}"
    if got.size == 0:
        return None
    if np.issubdtype(want.dtype, np.floating) or np.issubdtype(want.dtype, np.complexfloating):
        ok = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
        if ok.all():
            if stats is not None:  # how much of the tolerance the test used
                with np.errstate(all="ignore"):
                    fin = np.isfinite(want)
                    g, w = got[fin].astype(np.float64), want[fin].astype(np.float64)
                    used = float(np.max(np.abs(g - w) / (atol + rtol * np.abs(w)), initial=0.0))
                stats["tol_used"] = max(stats.get("tol_used", 0.0), used)
            return None
        bad = ~ok
        with np.errstate(all="ignore"):
            err = np.abs(got.astype(np.float64) - want.astype(np.float64))
            err = np.where(np.isnan(err), np.inf, err)
            err = np.where(bad, err, -1.0)
        worst = np.unravel_index(int(np.argmax(err)), got.shape)
        return (f"{label}: {int(bad.sum())}/{got.size} elements differ beyond rtol {rtol:g} atol {atol:g}; "
                f"worst at {_fmt_idx(worst)}: got {got[worst].item()!r}, expected {want[worst].item()!r}")
    if want.dtype == np.bool_:
        raw = got.reshape(-1).view(np.uint8)
        if (raw > 1).any():
            k = int(np.argmax(raw > 1))
            return f"{label}: bool element {k} is byte 0x{int(raw[k]):02x}, not 0 or 1 (unwritten?)"
    eq = got == want
    if eq.all():
        return None
    first = np.unravel_index(int(np.argmin(eq.reshape(-1))), got.shape) if got.ndim else ()
    return (f"{label}: {int((~eq).sum())}/{got.size} elements differ (exact compare); "
            f"first at {_fmt_idx(first)}: got {got[first].item()!r}, expected {want[first].item()!r}")


def run_one(req):
    """Compile and run one test; returns the result dict (never raises)."""
    t0 = time.time()
    res = {"status": "fail", "reason": "", "compile_s": None, "run_s": None}
    try:
        _run_one(req, res, t0)
    except TestFailure as e:
        res["status"], res["reason"] = "fail", str(e)
    except Exception as e:  # a harness bug or an unreadable test: still one line
        res["status"], res["reason"] = "fail", f"harness: {type(e).__name__}: {e}"
    res["reason"] = (res["reason"] or "").splitlines()[0] if res["reason"] else ""
    return res


def _run_one(req, res, t0):
    import numpy as np
    import onnx
    from onnx import helper

    test_dir, name = req["dir"], req["name"]
    rtol, atol = req["rtol"], req["atol"]
    deadline = t0 + req["timeout"]
    model = onnx.load(os.path.join(test_dir, "model.onnx"))
    data_sets = _load_data_sets(test_dir, model)
    if not data_sets:
        raise TestFailure("harness: no test_data_set_* directory")

    # Graph inputs that carry data.  An input with an empty name is, by the
    # ONNX convention for optional inputs, absent: it takes no data and no
    # buffer.  (None of onnx 1.23.2's node tests has one at graph level.)
    graph_inputs = [(j, vi) for j, vi in enumerate(model.graph.input) if vi.name != ""]

    # --input-shape for every input whose dims the model leaves open, taken
    # from the first data set.
    cmd = [req["nnc"], "compile", os.path.join(test_dir, "model.onnx"),
           "-o", os.path.join(req["tmp"], "model.so")]
    first_inputs = data_sets[0][1]
    for j, vi in graph_inputs:
        if _is_open_shape(vi.type) and j < len(first_inputs) and isinstance(first_inputs[j], np.ndarray):
            shape = first_inputs[j].shape
            if len(shape) == 0:
                continue  # the CLI cannot spell a rank-0 shape; let nnc decide
            cmd += ["--input-shape", f"{vi.name}=" + ",".join(str(d) for d in shape)]
    res["cmd"] = " ".join(cmd[1:])

    c0 = time.time()
    bound = {}  # graph input name -> the value bound at compile time
    for _round in range(MAX_BIND_ROUNDS + 1):
        res["cmd"] = " ".join(cmd[1:])
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            res["compile_s"] = time.time() - c0
            raise TestFailure(f"timeout: nnc compile did not finish within {req['timeout']:g} s")
        stderr = p.stderr.decode("utf-8", "replace")
        if p.returncode == 0:
            break
        status, reason = classify_compile_error(p.returncode, stderr)
        more = _inputs_to_bind(np, stderr, graph_inputs, data_sets, bound) if status == "unsupported" else None
        if not more:
            res["compile_s"] = time.time() - c0
            res["status"], res["reason"] = status, reason
            res["stderr"] = stderr[-4000:]
            if bound:
                res["bound_inputs"] = sorted(bound)
            return
        for name, (j, value) in more.items():
            path = os.path.join(req["tmp"], f"bind{len(bound)}.npy")
            np.save(path, value)
            cmd += ["--bind-input", f"{name}={path}"]
            bound[name] = j
            # A bound input's shape comes from its value, not --input-shape.
            for k in range(len(cmd) - 1):
                if cmd[k] == "--input-shape" and cmd[k + 1].rsplit("=", 1)[0] == name:
                    del cmd[k:k + 2]
                    break
    res["compile_s"] = time.time() - c0
    if bound:
        res["bound_inputs"] = sorted(bound)
    if p.returncode != 0:  # still asks for more after MAX_BIND_ROUNDS
        res["status"], res["reason"] = classify_compile_error(p.returncode, stderr)
        res["stderr"] = stderr[-4000:]
        return
    if bound:
        graph_inputs = [(j, vi) for j, vi in graph_inputs if vi.name not in bound]
    so = os.path.join(req["tmp"], "model.so")
    if not os.path.isfile(so):
        raise TestFailure("compile: nnc exited 0 but wrote no library")

    r0 = time.time()
    lib = ctypes.CDLL(so, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    try:
        _run_lib(lib, np, helper, model, graph_inputs, data_sets, rtol, atol, deadline, req, res)
    finally:
        res["run_s"] = time.time() - r0
        try:
            import _ctypes
            _ctypes.dlclose(lib._handle)
        except Exception:
            pass
    res["status"], res["reason"] = "pass", ""


# A compile that nnc refuses because a value-dependent operand (shape, axes,
# pads, ...) comes from graph inputs is retried with those inputs bound to the
# test's data (`--bind-input NAME=FILE.npy`), at most this many times (each
# retry can reveal the next such operand).  Such passes are reported with
# `bound_inputs` and counted separately: they test nnc with those inputs as
# constants, not as run-time inputs.
MAX_BIND_ROUNDS = 4
BIND_HINT_RE = re.compile(r"--bind-input (.+?)=FILE\.npy")


def _inputs_to_bind(np, stderr, graph_inputs, data_sets, bound):
    """{name: (input index, value)} for the graph inputs nnc asks to bind,
    or None if there are none, or one cannot be bound because the data
    sets disagree on its value (then the input really varies at run time)."""
    names = set(BIND_HINT_RE.findall(stderr)) - set(bound)
    if not names:
        return None
    index = {vi.name: j for j, vi in graph_inputs}
    out = {}
    for name in sorted(names):
        j = index.get(name)
        if j is None:
            return None
        values = [ins[j] if j < len(ins) else None for _, ins, _ in data_sets]
        first = values[0]
        if not isinstance(first, np.ndarray):
            return None
        for v in values[1:]:
            if not (isinstance(v, np.ndarray) and v.dtype == first.dtype and v.shape == first.shape
                    and np.array_equal(v, first, equal_nan=first.dtype.kind == "f")):
                return None
        if first.dtype.kind in "iu":
            first = first.astype(np.int64)
        out[name] = (j, first.copy(order="C"))  # (ascontiguousarray makes 0-d arrays 1-d)
    return out


def _run_lib(lib, np, helper, model, graph_inputs, data_sets, rtol, atol, deadline, req, stats):
    lib.nnc_model_info.restype = ctypes.POINTER(ModelInfo)
    lib.nnc_model_info.argtypes = []
    lib.nnc_model_run.restype = ctypes.c_int
    lib.nnc_model_run.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
                                  ctypes.c_void_p, ctypes.c_void_p]
    pinfo = lib.nnc_model_info()
    if not pinfo:
        raise TestFailure("abi: nnc_model_info() returned NULL")
    info = pinfo.contents
    if info.abi_version != NNC_ABI_VERSION:
        raise TestFailure(f"abi: abi_version {info.abi_version}, expected {NNC_ABI_VERSION}")

    def decode(arr, n):
        out = []
        for i in range(n):
            t = arr[i]
            out.append((t.name.decode() if t.name else "", int(t.dtype),
                        tuple(int(t.shape[d]) for d in range(t.rank))))
        return out

    lib_in = decode(info.inputs, info.num_inputs)
    lib_out = decode(info.outputs, info.num_outputs)
    g_in_names = [vi.name for _, vi in graph_inputs]
    if [n for n, _, _ in lib_in] != g_in_names:
        raise TestFailure(f"signature: library inputs {[n for n, _, _ in lib_in]}, graph inputs {g_in_names}")
    g_out_names = [vi.name for vi in model.graph.output]
    if [n for n, _, _ in lib_out] != g_out_names:
        raise TestFailure(f"signature: library outputs {[n for n, _, _ in lib_out]}, graph outputs {g_out_names}")

    for ds_name, ins, outs in data_sets:
        if time.time() > deadline:
            raise TestFailure(f"timeout: test did not finish within {req['timeout']:g} s")
        in_arrays = []
        for (j, vi), (lname, ldt, lshape) in zip(graph_inputs, lib_in):
            if j >= len(ins):
                raise TestFailure(f"{ds_name}: no data for input '{lname}'")
            v = ins[j]
            if not isinstance(v, np.ndarray):
                raise TestFailure(f"{ds_name}: input '{lname}' is a {type(v).__name__}, not a tensor")
            want_dt = np.dtype(helper.tensor_dtype_to_np_dtype(ldt))
            if v.dtype != want_dt:
                raise TestFailure(f"signature: input '{lname}': data is {v.dtype}, library declares {want_dt}")
            if tuple(v.shape) != lshape:
                raise TestFailure(f"signature: input '{lname}': data shape {list(v.shape)}, "
                                  f"library declares {list(lshape)}")
            in_arrays.append(np.ascontiguousarray(v, dtype=want_dt))
        in_copies = [a.copy() for a in in_arrays]
        out_arrays = []
        for lname, ldt, lshape in lib_out:
            a = np.empty(lshape, dtype=np.dtype(helper.tensor_dtype_to_np_dtype(ldt)))
            a.reshape(-1).view(np.uint8)[:] = 0xA5  # poison: unwritten outputs show up
            out_arrays.append(a)
        ip = (ctypes.c_void_p * max(1, len(in_arrays)))(*[a.ctypes.data for a in in_arrays])
        op = (ctypes.c_void_p * max(1, len(out_arrays)))(*[a.ctypes.data for a in out_arrays])
        rc = lib.nnc_model_run(ip, op, None, None)
        if rc != 0:
            raise TestFailure(f"run: nnc_model_run returned {rc}")
        for k, (a, c) in enumerate(zip(in_arrays, in_copies)):
            if a.tobytes() != c.tobytes():
                raise TestFailure(f"run: library modified input buffer '{lib_in[k][0]}'")
        if len(outs) != len(out_arrays):
            raise TestFailure(f"{ds_name}: {len(outs)} expected outputs, library has {len(out_arrays)}")
        for k, (got, want) in enumerate(zip(out_arrays, outs)):
            if not isinstance(want, np.ndarray):
                raise TestFailure(f"{ds_name}: expected output {k} is a {type(want).__name__}, not a tensor")
            why = _compare(np, f"output {k} '{lib_out[k][0]}'", got, want, rtol, atol, stats)
            if why:
                raise TestFailure(why if len(data_sets) == 1 else f"{ds_name}: {why}")


def worker_main():
    # The protocol uses a private copy of stdout; fd 1 goes to stderr so that
    # anything a library prints cannot corrupt it.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import numpy  # noqa: F401  (import cost once per worker)
    import onnx  # noqa: F401

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        print(f"worker: {req['name']}", file=sys.stderr, flush=True)
        res = run_one(req)
        proto.write(json.dumps(res) + "\n")
        proto.flush()


# ============================================================================
# The driver.
# ============================================================================

class Worker:
    def __init__(self, python, idx, logdir):
        self.python, self.idx, self.logdir = python, idx, logdir
        self.proc = None
        self.buf = b""

    def start(self):
        self.log = open(os.path.join(self.logdir, f"worker{self.idx}.log"), "ab")
        self.proc = subprocess.Popen([self.python, os.path.abspath(__file__), "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.buf = b""

    def stop(self, kill=False):
        if self.proc is None:
            return
        try:
            if kill:
                self.proc.kill()
            else:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.proc = None

    def _log_tail(self):
        try:
            with open(self.log.name, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log.name) - 4000))
                lines = f.read().decode("utf-8", "replace").splitlines()
            lines = [ln for ln in lines if ln.strip() and not ln.startswith("worker: ")]
            return lines[-1] if lines else ""
        except OSError:
            return ""

    def request(self, req, hard_timeout):
        """Send one test; return the result dict, replacing a dead or hung worker."""
        if self.proc is None:
            self.start()
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        fd = self.proc.stdout.fileno()
        end = time.time() + hard_timeout
        while b"\n" not in self.buf:
            left = end - time.time()
            if left <= 0:
                self.stop(kill=True)
                return {"status": "fail", "reason": f"timeout: no result within {req['timeout']:g} s "
                        "(+ grace; nnc or the library hung or is too slow)", "compile_s": None, "run_s": None}
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:  # the worker died: the library crashed it
                rc = self.proc.wait()
                tail = self._log_tail()
                self.stop()
                why = f"killed by {_signame(-rc)}" if rc < 0 else f"exited with status {rc}"
                return {"status": "fail", "reason": f"crash: running the library {why}"
                        + (f" ({tail})" if tail else ""), "compile_s": None, "run_s": None}
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


def discover(suite, pattern):
    rx = re.compile(pattern) if pattern else None
    names = sorted(d for d in os.listdir(suite)
                   if d.startswith("test_") and os.path.isfile(os.path.join(suite, d, "model.onnx")))
    return [n for n in names if rx is None or rx.search(n)], names


def read_expected(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


EXPECTED_HEADER = """\
# ONNX backend node tests (onnx {version}) that nnc must keep passing.
#
# Written by `tests/conformance/run.py --update-expected`; one test name per
# line, sorted.  The list only grows: --update-expected adds tests that now
# pass and never removes one (only an explicit --prune does, e.g. when a test
# is dropped from the suite).  run.py exits non-zero when a listed test does
# not pass, so a regression cannot land unnoticed.  See README.md.
"""


def write_expected(path, names, version):
    with open(path, "w") as f:
        f.write(EXPECTED_HEADER.format(version=version))
        for n in sorted(set(names)):
            f.write(n + "\n")


def print_summary(results, names, out=sys.stdout):
    by = collections.Counter(results[n]["status"] for n in names)
    total = len(names)
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p()
    p(f"== per-op results ({total} tests)")
    ops = collections.defaultdict(collections.Counter)
    for n in names:
        ops[results[n]["op"]][results[n]["status"]] += 1
    w = max([len(o) for o in ops] + [2])
    p(f"{'op':<{w}}  {'tests':>5} {'pass':>5} {'fail':>5} {'unsup':>5}")
    for o in sorted(ops, key=str.lower):
        c = ops[o]
        p(f"{o:<{w}}  {sum(c.values()):>5} {c['pass']:>5} {c['fail']:>5} {c['unsupported']:>5}")
    fails = [n for n in names if results[n]["status"] == "fail"]
    p()
    p(f"== failures ({len(fails)})")
    for n in fails:
        p(f"  {n}: {results[n]['reason']}")
    p()
    p(f"== totals: {total} tests: {by['pass']} pass, {by['fail']} fail, {by['unsupported']} unsupported")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", help="suite directory (default: the pinned onnx's, fetched on first use)")
    ap.add_argument("--nnc", default=os.environ.get("NNC", DEFAULT_NNC), help="nnc binary (default: %(default)s)")
    ap.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--filter", help="only tests whose name matches this regex (re.search)")
    ap.add_argument("--report", default=DEFAULT_REPORT, help="JSON report (default: %(default)s)")
    ap.add_argument("--expected", default=DEFAULT_EXPECTED, help="expected-pass list (default: %(default)s)")
    ap.add_argument("--update-expected", action="store_true", help="add newly passing tests to the list")
    ap.add_argument("--prune", action="store_true",
                    help="with --update-expected: also drop listed tests that ran and did not pass")
    ap.add_argument("--strict", action="store_true", help="also exit non-zero if any test is `fail`")
    ap.add_argument("--timeout", type=float, default=TEST_TIMEOUT_S, help="per-test limit in s (default: %(default)s)")
    ap.add_argument("--quiet", "-q", action="store_true", help="no per-op table / failure list")
    ap.add_argument("--python", help="python for the workers (default: $PY, .venv/bin/python, python3)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main()
    fetch_suite.ensure_python(args.python)

    import onnx

    nnc = os.path.abspath(args.nnc)
    if not (os.path.isfile(nnc) and os.access(nnc, os.X_OK)):
        print(f"run.py: nnc binary {nnc} not found; build it with `cargo build --release -p nnc` "
              "or pass --nnc", file=sys.stderr)
        return 2
    suite = os.path.abspath(args.suite) if args.suite else fetch_suite.fetch(quiet=True)
    if not os.path.isdir(suite):
        print(f"run.py: suite directory {suite} not found", file=sys.stderr)
        return 2
    selected, all_names = discover(suite, args.filter)
    if not selected:
        print(f"run.py: no test in {suite} matches --filter {args.filter!r}", file=sys.stderr)
        return 2

    # Ops first (cheap, and _expanded tests need their base test's op).
    models = {n: onnx.load(os.path.join(suite, n, "model.onnx"), load_external_data=False)
              for n in selected}
    base_ops = {}
    for n in all_names:
        if not EXPANDED_RE.search(n):
            m = models.get(n) or onnx.load(os.path.join(suite, n, "model.onnx"), load_external_data=False)
            base_ops[n] = main_op(m, n, {})
    results = {n: {"op": main_op(models[n], n, base_ops)} for n in selected}
    del models

    jobs = max(1, min(args.jobs, len(selected)))
    print(f"conformance: {len(selected)} tests from {suite}, nnc {nnc}, {jobs} jobs", flush=True)
    t_start = time.time()
    tmp_root = tempfile.mkdtemp(prefix="nnc-conformance-")
    queue = list(selected)
    qlock = threading.Lock()
    done = [0]

    def tolerance(n):
        rtol, atol = DEFAULT_RTOL, DEFAULT_ATOL
        dj = os.path.join(suite, n, "data.json")
        if os.path.exists(dj):
            with open(dj) as f:
                d = json.load(f)
            rtol, atol = d.get("rtol", rtol), d.get("atol", atol)
        return tolerance_for(n, rtol, atol)

    def drive(idx):
        w = Worker(sys.executable, idx, tmp_root)
        try:
            while True:
                with qlock:
                    if not queue:
                        return
                    n = queue.pop(0)
                tdir = os.path.join(tmp_root, n)
                os.makedirs(tdir, exist_ok=True)
                rtol, atol = tolerance(n)
                req = {"name": n, "dir": os.path.join(suite, n), "nnc": nnc, "tmp": tdir,
                       "rtol": rtol, "atol": atol, "timeout": args.timeout}
                t0 = time.time()
                r = w.request(req, args.timeout + 5)
                r["time_s"] = round(time.time() - t0, 3)
                r["rtol"], r["atol"] = rtol, atol
                for f in os.listdir(tdir):
                    os.unlink(os.path.join(tdir, f))
                os.rmdir(tdir)
                with qlock:
                    results[n].update(r)
                    done[0] += 1
                    k = done[0]
                if k % 200 == 0 or k == len(selected):
                    print(f"  {k}/{len(selected)} done ({time.time() - t_start:.0f} s)", flush=True)
        finally:
            w.stop()

    threads = [threading.Thread(target=drive, args=(i,), daemon=True) for i in range(jobs)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        import shutil
        shutil.rmtree(tmp_root, ignore_errors=True)
    wall = time.time() - t_start

    # Expected-pass list.
    expected = read_expected(args.expected)
    sel = set(selected)
    rx = re.compile(args.filter) if args.filter else None
    regressions = []
    for n in expected:
        if n in sel:
            if results[n]["status"] != "pass":
                regressions.append((n, f"{results[n]['status']}: {results[n]['reason']}"))
        elif n not in all_names and (rx is None or rx.search(n)):
            regressions.append((n, "not in the suite"))
    passing = [n for n in selected if results[n]["status"] == "pass"]
    new_passes = sorted(set(passing) - set(expected))

    if not args.quiet:
        print_summary(results, selected)
    by = collections.Counter(results[n]["status"] for n in selected)
    bound_passes = [n for n in passing if results[n].get("bound_inputs")]

    report = {
        "suite": suite, "nnc": nnc, "onnx": onnx.__version__, "filter": args.filter,
        "jobs": jobs, "wall_s": round(wall, 1),
        "totals": {"tests": len(selected), "pass": by["pass"], "fail": by["fail"],
                   "unsupported": by["unsupported"], "pass_bound_inputs": len(bound_passes)},
        "regressions": [n for n, _ in regressions],
        "tests": {n: {k: results[n].get(k) for k in
                      ("status", "reason", "op", "time_s", "compile_s", "run_s", "rtol", "atol", "tol_used",
                       "bound_inputs", "cmd", "stderr")
                      if results[n].get(k) is not None}
                  for n in selected},
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    with open(args.report, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    print(f"report: {args.report} ({wall:.0f} s wall)")

    if args.update_expected:
        keep = set(expected)
        if args.prune:
            keep -= {n for n, _ in regressions}
        for n, why in regressions if args.prune else []:
            print(f"  pruned {n}: {why}")
        write_expected(args.expected, keep | set(passing), onnx.__version__)
        print(f"expected-pass list {args.expected}: +{len(new_passes)} new"
              + (f", -{len(set(expected) - keep)} pruned" if args.prune else "")
              + f" ({len(keep | set(passing))} tests)")
    elif new_passes:
        print(f"{len(new_passes)} tests pass but are not in {os.path.relpath(args.expected, ROOT)}; "
              "add them with --update-expected")

    rc = 0
    if regressions and not (args.update_expected and args.prune):
        print(f"\nREGRESSIONS: {len(regressions)} expected-pass tests do not pass:")
        for n, why in regressions:
            print(f"  {n}: {why}")
        rc = 1
    if by["fail"]:
        print(f"\n{by['fail']} tests FAIL (wrong results, crashes or compile errors that are not "
              f"explicit refusals){'; --strict makes this an error' if not args.strict else ''}")
        if args.strict:
            rc = 1
    if bound_passes:
        print(f"{len(bound_passes)} of the passes bind inputs at compile time (--bind-input; "
              "`bound_inputs` in the report)")
    # Closing line in the plain "N passed, N failed, N skipped" form
    # (skipped = unsupported).
    print(f"conformance: {by['pass']} passed, {by['fail']} failed, {by['unsupported']} skipped")
    return rc


if __name__ == "__main__":
    sys.exit(main())
