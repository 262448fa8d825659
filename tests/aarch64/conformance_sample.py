#!/usr/bin/env python3
"""Run a deterministic sample of ONNX's backend node tests on AArch64 (under
qemu-aarch64) and on the host, through the same file-based C runner.

    conformance_sample.py [--nnc PATH] [--suite DIR] [--list FILE | --report JSON | --builtin]
                          [--count N] [--jobs N] [--work DIR] [--filter REGEX]

Which tests: the names in --list (one per line, '#' comments), else the
`pass` entries of a tests/conformance/run.py --report JSON, else
tests/conformance/expected_pass.txt when it exists, else (or with
--builtin) a small built-in list of common ops.  Of those present in the suite, every k-th (sorted by
name, k = ceil(n / --count)) is run, so the sample is the same on every
run.  The suite is .cache/onnx-node-tests/<onnx version>/ (written by
tests/conformance/fetch_suite.py when absent).

Each test is compiled with nnc twice (`--target aarch64-unknown-linux-gnu`
and the host), tests/aarch64/runner.c is built against each library
(aarch64-linux-gnu-gcc / cc), and every test_data_set_* is fed through both:
inputs from input_<j>.pb are written as raw files, the runners write raw
outputs, which are compared with output_<j>.pb with rtol 1e-3 / atol 1e-7
(or the test's data.json), as ONNX's backend runner does.

Prints one line per test and the pass counts; exit status 1 when the counts
differ between AArch64 and the host (or a test passes on one only), 2 on a
harness problem (no suite, no tests).
"""

import argparse
import concurrent.futures
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TRIPLE = "aarch64-unknown-linux-gnu"
XCC = "aarch64-linux-gnu-gcc"
QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]
RUN_TIMEOUT_S = 120
DEFAULT_RTOL, DEFAULT_ATOL = 1e-3, 1e-7

# Used when there is neither --list/--report nor tests/conformance/expected_pass.txt.
BUILTIN_TESTS = """
test_relu test_sigmoid test_tanh test_exp test_sqrt test_abs test_neg
test_add test_add_bcast test_sub_bcast test_mul_bcast test_div_bcast
test_conv_with_strides_padding test_conv_with_strides_no_padding
test_basic_conv_with_padding test_basic_conv_without_padding
test_softmax_axis_1 test_softmax_default_axis test_softmax_large_number
test_matmul_2d test_matmul_3d test_matmul_4d
test_gemm_default_no_bias test_gemm_default_single_elem_vector_bias
test_gemm_all_attributes test_gemm_transposeA test_gemm_transposeB
test_maxpool_2d_default test_maxpool_2d_pads test_maxpool_2d_strides
test_averagepool_2d_default test_averagepool_2d_pads test_averagepool_2d_strides
test_globalaveragepool test_globalmaxpool
test_transpose_default test_transpose_all_permutations_0
test_concat_2d_axis_0 test_concat_2d_axis_1 test_concat_3d_axis_1
test_layer_normalization_2d_axis0 test_layer_normalization_3d_axis1_epsilon
test_layer_normalization_4d_axis_negative_1
test_batchnorm_example test_batchnorm_epsilon
test_reshape_reordered_all_dims test_flatten_axis1 test_flatten_default_axis
test_unsqueeze_axis_0 test_squeeze test_erf test_leakyrelu test_clip
test_reduce_mean_default_axes_keepdims_example test_reduce_sum_keepdims_example
test_reduce_max_default_axes_keepdim_example test_pow test_where_example
test_gather_0 test_slice test_identity test_gelu_default_1 test_sum_example
""".split()


def log(msg):
    print(msg, flush=True)


# ---- test data -----------------------------------------------------------------

def load_tensor(path):
    import onnx
    from onnx import numpy_helper

    p = onnx.TensorProto()
    with open(path, "rb") as f:
        p.ParseFromString(f.read())
    return numpy_helper.to_array(p)


def data_sets(test_dir, model):
    """[(name, [inputs], [outputs])] -- None when some value is not a tensor."""
    out = []
    for ds in sorted(glob.glob(os.path.join(test_dir, "test_data_set_*")),
                     key=lambda p: int(p.rsplit("_", 1)[1])):
        vals = {}
        for kind, infos in (("input", model.graph.input), ("output", model.graph.output)):
            n = len(glob.glob(os.path.join(ds, f"{kind}_*.pb")))
            if any(not infos[j].type.HasField("tensor_type") for j in range(min(n, len(infos)))):
                return None
            vals[kind] = [load_tensor(os.path.join(ds, f"{kind}_{j}.pb")) for j in range(n)]
        out.append((os.path.basename(ds), vals["input"], vals["output"]))
    return out


def is_open(vi):
    tt = vi.type.tensor_type
    return not tt.HasField("shape") or any(
        not d.HasField("dim_value") or d.dim_value < 0 for d in tt.shape.dim)


def parse_signature(text):
    """The runner's 'output <i> dtype=<code> shape=<d,...>' lines."""
    sig = {}
    for m in re.finditer(r"^output (\d+) dtype=(\d+) shape=([0-9,]*)", text, re.M):
        sig[int(m.group(1))] = (int(m.group(2)), [int(d) for d in m.group(3).split(",") if d])
    return [sig[i] for i in sorted(sig)]


def compare(np, label, got, want, rtol, atol):
    if list(got.shape) != list(want.shape):
        return f"{label}: shape {list(got.shape)}, expected {list(want.shape)}"
    if got.dtype != want.dtype:
        return f"{label}: dtype {got.dtype}, expected {want.dtype}"
    if got.size == 0:
        return None
    if np.issubdtype(want.dtype, np.floating):
        ok = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
        if ok.all():
            return None
        bad = np.argwhere(~ok)[0]
        i = tuple(bad)
        return (f"{label}: {int((~ok).sum())}/{got.size} elements differ; first at {list(map(int, i))}: "
                f"got {got[i]!r}, expected {want[i]!r}")
    eq = got == want
    if eq.all():
        return None
    return f"{label}: {int((~eq).sum())}/{got.size} elements differ (exact)"


# ---- one test ----------------------------------------------------------------------

def run_cmd(cmd, timeout, cwd=None):
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, cwd=cwd)
        return p.returncode, p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout} s"


def build(nnc, model_path, shape_args, d, target, cc):
    """Compile the model into d/model.so and the runner into d/runner.
    Returns None or a one-line failure."""
    os.makedirs(d, exist_ok=True)
    cmd = [nnc, "compile", model_path, "-o", os.path.join(d, "model.so"), "--name", "model"] + shape_args
    if target:
        cmd += ["--target", target]
    rc, out = run_cmd(cmd, 120)
    if rc != 0:
        last = [ln for ln in out.splitlines() if ln.strip()]
        return f"compile (exit {rc}): {last[-1] if last else ''}"[:300]
    rc, out = run_cmd([cc, "-std=c11", "-O2", "-DNNC_PREFIX=model", "-I" + d, os.path.join(HERE, "runner.c"),
                       "-o", os.path.join(d, "runner"), "-L" + d, "-l:model.so", "-Wl,-rpath,$ORIGIN",
                       "-lpthread"], 120)
    if rc != 0:
        return f"runner cc ({cc}) failed: {out.strip().splitlines()[-1] if out.strip() else rc}"[:300]
    return None


def run_test(args, name):
    import numpy as np
    import onnx
    from onnx import helper

    t0 = time.time()
    test_dir = os.path.join(args.suite, name)
    work = os.path.join(args.work, name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    res = {"name": name, "a64": None, "x86": None, "bitexact": None}
    model_path = os.path.join(test_dir, "model.onnx")
    model = onnx.load(model_path)
    sets = data_sets(test_dir, model)
    if not sets:
        res["a64"] = res["x86"] = "skip: non-tensor values or no data set"
        return res
    rtol, atol = DEFAULT_RTOL, DEFAULT_ATOL
    dj = os.path.join(test_dir, "data.json")
    if os.path.exists(dj):
        with open(dj) as f:
            j = json.load(f)
        rtol, atol = j.get("rtol", rtol), j.get("atol", atol)

    graph_inputs = [(j, vi) for j, vi in enumerate(model.graph.input) if vi.name != ""]
    shape_args = []
    first = sets[0][1]
    for j, vi in graph_inputs:
        if is_open(vi) and j < len(first) and first[j].ndim > 0:
            shape_args += ["--input-shape", f"{vi.name}=" + ",".join(str(d) for d in first[j].shape)]

    outs_by_arch = {}
    for arch, target, cc, prefix in (("x86", None, args.host_cc, []), ("a64", TRIPLE, XCC, QEMU)):
        d = os.path.join(work, arch)
        why = build(args.nnc, model_path, shape_args, d, target, cc)
        if why:
            res[arch] = "fail: " + why
            continue
        got_all = []
        for ds_name, ins, outs in sets:
            ind = os.path.join(work, ds_name, "in")
            outd = os.path.join(work, ds_name, arch)
            os.makedirs(ind, exist_ok=True)
            os.makedirs(outd, exist_ok=True)
            for k, (j, _vi) in enumerate(graph_inputs):
                np.ascontiguousarray(ins[j]).tofile(os.path.join(ind, f"input{k}.bin"))
            rc, out = run_cmd(prefix + [os.path.join(d, "runner"), ind, outd], RUN_TIMEOUT_S)
            if rc != 0:
                tail = out.strip().splitlines()[-1] if out.strip() else ""
                res[arch] = f"fail: {ds_name}: runner exit {rc}: {tail}"[:300]
                break
            sig = parse_signature(out)
            if len(sig) != len(outs):
                res[arch] = f"fail: {ds_name}: library has {len(sig)} outputs, test {len(outs)}"
                break
            got = []
            for k, (code, shape) in enumerate(sig):
                dt = np.dtype(helper.tensor_dtype_to_np_dtype(code))
                a = np.fromfile(os.path.join(outd, f"output{k}.bin"), dtype=dt)
                got.append(a.reshape(shape) if a.size == math.prod(shape) else a)
            got_all.append(got)
            why = None
            for k, (g, w) in enumerate(zip(got, outs)):
                why = compare(np, f"output {k}", g, w, rtol, atol)
                if why:
                    break
            if why:
                res[arch] = f"fail: {ds_name}: {why}"[:300]
                break
        else:
            res[arch] = "pass"
        outs_by_arch[arch] = got_all
    if "a64" in outs_by_arch and "x86" in outs_by_arch and \
            len(outs_by_arch["a64"]) == len(outs_by_arch["x86"]):
        res["bitexact"] = all(a.tobytes() == b.tobytes()
                              for ga, gb in zip(outs_by_arch["a64"], outs_by_arch["x86"])
                              for a, b in zip(ga, gb))
    res["time_s"] = time.time() - t0
    return res


# ---- main ------------------------------------------------------------------------

def read_names(path):
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


def find_suite(py):
    import onnx

    suite = os.path.join(ROOT, ".cache", "onnx-node-tests", onnx.__version__)
    if os.path.isdir(suite):
        return suite
    fetch = os.path.join(ROOT, "tests", "conformance", "fetch_suite.py")
    if os.path.exists(fetch):
        log(f"writing the node-test suite with {os.path.relpath(fetch, ROOT)}")
        p = subprocess.run([py, fetch], stdout=subprocess.PIPE, text=True)
        if p.returncode == 0 and p.stdout.strip():
            return p.stdout.strip().splitlines()[-1]
    return suite


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnc", default=os.path.join(ROOT, "target", "release", "nnc"))
    ap.add_argument("--suite")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--list", help="file of test names")
    src.add_argument("--report", help="tests/conformance/run.py --report JSON: its passing tests")
    src.add_argument("--builtin", action="store_true", help="use the built-in list of common ops")
    ap.add_argument("--count", type=int, default=60, help="about this many tests (default 60)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--work", default=os.path.join(ROOT, ".cache", "aarch64", "conformance"))
    ap.add_argument("--filter", help="only tests whose name matches this regex (before sampling)")
    ap.add_argument("--host-cc", default=os.environ.get("CC", "cc"))
    ap.add_argument("-v", "--verbose", action="store_true", help="print every test, not only failures")
    args = ap.parse_args(argv)
    args.nnc = os.path.abspath(args.nnc)
    if not os.access(args.nnc, os.X_OK):
        log(f"nnc binary {args.nnc} not found")
        return 2
    for tool in (XCC, QEMU[0], args.host_cc):
        if not shutil.which(tool):
            log(f"{tool} not found (scripts/cross-env.sh installs the cross tools)")
            return 2
    args.suite = args.suite or find_suite(sys.executable)
    if not os.path.isdir(args.suite):
        log(f"no node-test suite at {args.suite} (tests/conformance/fetch_suite.py writes it)")
        return 2

    expected = os.path.join(ROOT, "tests", "conformance", "expected_pass.txt")
    if args.list:
        names, source = read_names(args.list), args.list
    elif args.report:
        with open(args.report) as f:
            rep = json.load(f)
        names = [n for n, r in rep["tests"].items() if r.get("status") == "pass" and not r.get("bound_inputs")]
        source = f"passing tests of {args.report}"
    elif os.path.exists(expected) and not args.builtin:
        names, source = read_names(expected), os.path.relpath(expected, ROOT)
    else:
        names, source = BUILTIN_TESTS, "built-in list"
    # Tests that pass only with compile-time-bound inputs (--bind-input, see
    # tests/conformance/README.md) are not run here: this runner binds nothing.
    report = os.path.join(ROOT, ".cache", "conformance-report.json")
    if os.path.exists(report) and not args.report:
        with open(report) as f:
            bound = {n for n, r in json.load(f).get("tests", {}).items() if r.get("bound_inputs")}
        names = [n for n in names if n not in bound]
    present = sorted(n for n in set(names) if os.path.isfile(os.path.join(args.suite, n, "model.onnx")))
    if args.filter:
        present = [n for n in present if re.search(args.filter, n)]
    if not present:
        log(f"no tests from {source} in {args.suite}")
        return 2
    k = max(1, math.ceil(len(present) / max(1, args.count)))
    sample = present[::k]
    log(f"conformance sample: {len(sample)} of {len(present)} tests from {source} (every {k}), "
        f"suite {args.suite}, {args.jobs} jobs")

    os.makedirs(args.work, exist_ok=True)
    t0 = time.time()
    results = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as ex:
        futs = {ex.submit(run_test, args, n): n for n in sample}
        for fut in concurrent.futures.as_completed(futs):
            n = futs[fut]
            try:
                results[n] = fut.result()
            except Exception as e:  # harness problem: count as failing on both
                results[n] = {"name": n, "a64": f"fail: harness: {type(e).__name__}: {e}",
                              "x86": f"fail: harness: {type(e).__name__}: {e}", "bitexact": None}

    counts = {"a64": 0, "x86": 0}
    mismatched, bit_diff = [], []
    for n in sample:
        r = results[n]
        for arch in counts:
            counts[arch] += r[arch] == "pass"
        if (r["a64"] == "pass") != (r["x86"] == "pass"):
            mismatched.append(n)
        if r["bitexact"] is False:
            bit_diff.append(n)
        if args.verbose or r["a64"] != "pass" or r["x86"] != "pass":
            log(f"  {n:<50} aarch64 {r['a64']}")
            if r["x86"] != r["a64"] or args.verbose:
                log(f"  {'':<50} x86-64  {r['x86']}")
    skipped = sum(1 for n in sample if str(results[n]["a64"]).startswith("skip"))
    log(f"  outputs bit-identical AArch64 vs x86-64: "
        f"{sum(1 for n in sample if results[n]['bitexact'])} of "
        f"{sum(1 for n in sample if results[n]['bitexact'] is not None)} tests"
        + (f" (differ: {', '.join(bit_diff)})" if bit_diff else ""))
    log(f"conformance sample: aarch64 {counts['a64']}/{len(sample)} passed, "
        f"x86-64 {counts['x86']}/{len(sample)} passed"
        + (f", {skipped} skipped" if skipped else "") + f" ({time.time() - t0:.0f} s)")
    if mismatched:
        log(f"conformance sample: FAILED, pass/fail differs between the targets: {', '.join(mismatched)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
