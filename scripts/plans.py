#!/usr/bin/env python3
"""Measures the optimizer's chosen plan against forced alternatives on one
model: each plan is compiled to a .so with its environment switch (e.g.
NNC_FORCE_CONV=im2col, NNC_FORCE_GEMM_TILE=6x4), then the plans are timed
in interleaved rounds (so machine noise hits them alike) and the min and
median latency of each is printed with its ratio to the chosen plan.

    scripts/plans.py MODEL.onnx PLAN... [--rounds 3] [--iters 40] [--threads 1]

A PLAN is `VAR=value[,VAR=value]`; the cost model's own plan (no switch)
is always timed first, as `chosen`.
"""
import argparse, os, re, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("plans", nargs="*")
    ap.add_argument("--nnc", default=os.path.join(ROOT, "target/release/nnc"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    plans = [("chosen", {})]
    for p in a.plans:
        if any("=" not in kv for kv in p.split(",")):
            sys.exit(f"plan {p!r}: expected VAR=value[,VAR=value]")
        env = dict(kv.split("=", 1) for kv in p.split(","))
        plans.append((p, env))
    tmp = tempfile.mkdtemp(prefix="nnc-plans-")
    sos = []
    for i, (name, env) in enumerate(plans):
        so = os.path.join(tmp, f"plan{i}.so")
        e = dict(os.environ, **env)
        r = subprocess.run([a.nnc, "compile", a.model, "-o", so], env=e, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{name}: compile failed\n{r.stderr}")
        sos.append(so)
    times = [[] for _ in plans]
    for _ in range(a.rounds):
        for i, so in enumerate(sos):
            r = subprocess.run([a.nnc, "bench", so, "--threads", str(a.threads), "--iters", str(a.iters), "--warmup", "5"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{plans[i][0]}: bench failed\n{r.stderr}")
            m = re.search(r"min ([0-9.]+)\s+median ([0-9.]+)", r.stdout)
            if not m:
                sys.exit(f"{plans[i][0]}: no latency in the bench output\n{r.stdout}")
            times[i].append((float(m.group(1)), float(m.group(2))))
    base = min(t[0] for t in times[0])
    print(f"{os.path.basename(a.model)}, {a.threads} thread(s), {a.rounds} rounds × {a.iters} runs")
    print(f"{'plan':<36} {'min ms':>9} {'median ms':>10} {'min/chosen':>11}")
    for (name, _), t in zip(plans, times):
        mn = min(x[0] for x in t)
        md = statistics.median(x[1] for x in t)
        print(f"{name:<36} {mn:>9.3f} {md:>10.3f} {mn / base:>11.3f}")


if __name__ == "__main__":
    main()
