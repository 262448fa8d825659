#!/usr/bin/env python3
"""Re-runs every conformance test that passed through the .so path through
the JIT instead (`nnc run MODEL.onnx --input NAME=FILE.npy … --output-dir`),
with the same comparison (rtol 1e-3, atol 1e-7, NaN == NaN). Tests that
pass only with compile-time-bound inputs are skipped (the JIT command
binds no inputs). Exits 1 if any test passes as a .so but not as JIT.

    jit_check.py [--report .cache/conformance-report.json] [--nnc target/release/nnc] [--jobs N]
"""
import argparse, glob, json, multiprocessing, os, re, shutil, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def check(args):
    name, tdir, nnc = args
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.path.join(tdir, "model.onnx"), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    ins = [i.name for i in model.graph.input if i.name not in inits]
    outs = [o.name for o in model.graph.output]
    work = tempfile.mkdtemp(prefix="nnc-jit-")
    try:
        for ds in sorted(glob.glob(os.path.join(tdir, "test_data_set_*"))):
            cmd = [nnc, "run", os.path.join(tdir, "model.onnx"), "--output-dir", os.path.join(work, "out")]
            arrays = []
            for k, path in enumerate(sorted(glob.glob(os.path.join(ds, "input_*.pb")), key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0]))):
                t = onnx.TensorProto()
                t.ParseFromString(open(path, "rb").read())
                arr = numpy_helper.to_array(t)
                name_k = t.name or (ins[k] if k < len(ins) else f"in{k}")
                f = os.path.join(work, f"in{k}.npy")
                np.save(f, arr)
                cmd += ["--input", f"{name_k}={f}"]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                return name, f"nnc run failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
            for k, path in enumerate(sorted(glob.glob(os.path.join(ds, "output_*.pb")), key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0]))):
                t = onnx.TensorProto()
                t.ParseFromString(open(path, "rb").read())
                want = numpy_helper.to_array(t)
                oname = t.name or outs[k]
                safe = "".join(c if (c.isalnum() or c in "_-.") else "_" for c in oname)
                got = np.load(os.path.join(work, "out", f"{safe}.npy"))
                if got.shape != want.shape:
                    return name, f"output {oname}: shape {got.shape} vs {want.shape}"
                if want.dtype.kind == "f":
                    ok = np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=1e-3, atol=1e-7, equal_nan=True)
                else:
                    ok = np.array_equal(got, want)
                if not ok:
                    return name, f"output {oname}: values differ"
        return name, None
    except Exception as e:  # a harness problem is a failure too, with its reason
        return name, f"{type(e).__name__}: {e}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", default=os.path.join(ROOT, ".cache/conformance-report.json"))
    ap.add_argument("--nnc", default=os.path.join(ROOT, "target/release/nnc"))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    rep = json.load(open(a.report))
    suite = rep.get("suite") or os.path.join(ROOT, ".cache/onnx-node-tests/1.23.2")
    tests = rep["tests"] if "tests" in rep else rep
    todo = [(n, os.path.join(suite, n), a.nnc) for n, t in sorted(tests.items()) if t.get("status") == "pass" and not t.get("bound_inputs")]
    with multiprocessing.Pool(a.jobs) as p:
        res = p.map(check, todo, chunksize=4)
    bad = [(n, why) for n, why in res if why]
    for n, why in bad:
        print(f"JIT FAIL {n}: {why}")
    print(f"jit: {len(res) - len(bad)} of {len(res)} .so-passing tests (without bound inputs) also pass through the JIT")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
