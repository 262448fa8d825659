#!/usr/bin/env python3
"""nnc vs onnxruntime on nnc's target models: same machine, same inputs,
same thread count. Each (model, threads) pair alternates nnc and ort
processes `--rounds` times (nnc bench of the compiled .so → its
--compare-ort run) and reports
the median of the per-round medians, the ratio nnc/ort and nnc's GFLOP/s.

    scripts/bench.py [--nnc target/release/nnc] [--threads 1,2] [--rounds 3] [--only REGEX]

Models come from examples/ and .cache/models (tests/models/make_models.py).
"""
import argparse, os, re, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = [
    ("mnist_cnn (b1)", "examples/mnist_cnn.onnx", []),
    ("mnist_cnn (b64)", ".cache/models/mnist_cnn_b64.onnx", []),
    ("attention L=16", "examples/attention.onnx", ["--input-shape", "x=16,1,64"]),
    ("attention L=128", "examples/attention.onnx", ["--input-shape", "x=128,1,64"]),
    ("attention L=512", "examples/attention.onnx", ["--input-shape", "x=512,1,64"]),
    ("torch MHA L=128", ".cache/models/mha_L128.onnx", []),
    ("BERT-base layer L=128", ".cache/models/bert_layer.onnx", []),
    ("ResNet-18 224²", ".cache/models/resnet18.onnx", []),
]


def compile_so(nnc, path, extra, outdir):
    """The compiled library is what users run, so that is what is timed
    (the JIT path of `nnc bench MODEL.onnx` places code differently)."""
    so = os.path.join(outdir, re.sub(r"[^A-Za-z0-9]+", "_", path + "_".join(extra)) + ".so")
    cmd = [nnc, "compile", path, "-o", so] + extra
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{out.stderr}")
    return so


def run_once(nnc, path, so, extra, threads, iters, py):
    cmd = [nnc, "bench", so, "--onnx", path, "--threads", str(threads), "--compare-ort", "--iters", str(iters), "--warmup", "5", "--python", py] + extra
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{out.stderr}")
    t = out.stdout
    nnc_ms = float(re.search(r"median ([0-9.]+)", t).group(1))
    ort_ms = float(re.search(r"onnxruntime median ([0-9.]+) ms", t).group(1))
    gf = re.search(r"([0-9.]+) GFLOP/s", t)
    err = re.search(r"\(\|ort\|\+1e-3\) = ([0-9.e+-]+)", t)
    return nnc_ms, ort_ms, float(gf.group(1)) if gf else float("nan"), err.group(1) if err else "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnc", default=os.path.join(ROOT, "target/release/nnc"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--python", default=os.environ.get("PY") or (os.path.join(ROOT, ".venv/bin/python") if os.path.exists(os.path.join(ROOT, ".venv/bin/python")) else "python3"))
    a = ap.parse_args()
    threads = [int(x) for x in a.threads.split(",")]
    print(f"{'model':<24} {'thr':>3} {'nnc ms':>9} {'ort ms':>9} {'nnc/ort':>8} {'GFLOP/s':>8}  max rel err")
    rows = []
    tmp = tempfile.mkdtemp(prefix="nnc-bench-")
    for name, path, extra in MODELS:
        if a.only and not re.search(a.only, name):
            continue
        if not os.path.exists(os.path.join(ROOT, path)):
            print(f"{name:<24} (missing {path}; run tests/models/make_models.py .cache/models)")
            continue
        so = compile_so(a.nnc, path, extra, tmp)
        for th in threads:
            nn, oo, gfs, err = [], [], [], "?"
            for _ in range(a.rounds):
                # Fewer iterations for the big models keeps a round short.
                iters = 20 if "ResNet" in name or "BERT" in name or "b64" in name else 200
                n, o, gf, err = run_once(a.nnc, path, so, extra, th, iters, a.python)
                nn.append(n)
                oo.append(o)
                gfs.append(gf)
            n, o = statistics.median(nn), statistics.median(oo)
            g = statistics.median(gfs)
            rows.append((name, th, n, o, n / o, g, err))
            print(f"{name:<24} {th:>3} {n:>9.3f} {o:>9.3f} {n / o:>8.2f} {g:>8.1f}  {err}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
