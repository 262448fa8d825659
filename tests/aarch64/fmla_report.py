#!/usr/bin/env python3
"""Count NEON FMLA instructions in an AArch64 disassembly and show the
hottest GEMM/conv inner loop.

    fmla_report.py FILE.dis [--max-lines N]

FILE.dis is `aarch64-linux-gnu-objdump -d --no-show-raw-insn lib.so`.
Counted: vector FMLA `fmla vD.4s, vN.4s, vM.4s` and the by-element form
`fmla vD.4s, vN.4s, vM.s[i]`, per kernel function (model__k<i>_<op>), plus
scalar fmadd and vector fmul/fadd for comparison.  The excerpt is the
innermost loop (a backward branch's range) with the most FMLAs.
Exit status 1 when the library contains no vector FMLA at all.
"""

import argparse
import collections
import re
import sys

FUNC_RE = re.compile(r"^([0-9a-f]+) <([^>]+)>:$")
INSN_RE = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")
BRANCH_RE = re.compile(r"^(b\.\w+|b|cbn?z|tbn?z)$")


def parse(path):
    funcs = collections.OrderedDict()
    cur = None
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            m = FUNC_RE.match(line)
            if m:
                cur = m.group(2)
                funcs[cur] = []
                continue
            m = INSN_RE.match(line)
            if m and cur is not None:
                funcs[cur].append((int(m.group(1), 16), m.group(2), m.group(3).split("//")[0].strip(), line))
    return funcs


def kind(ops):
    if ops.endswith("]"):
        return "by-element"
    return "vector"


def op_of(func):
    m = re.match(r".*__k\d+_(.*)$", func)
    return m.group(1) if m else func


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("dis")
    ap.add_argument("--max-lines", type=int, default=40)
    args = ap.parse_args(argv)
    funcs = parse(args.dis)

    total = collections.Counter()
    for insns in funcs.values():
        for _addr, mn, ops, _line in insns:
            if mn == "fmla" and ops.startswith("v"):
                total["fmla " + kind(ops)] += 1
            elif mn == "fmadd":
                total["fmadd (scalar)"] += 1
            elif mn in ("fmul", "fadd") and ops.startswith("v"):
                total[mn + " (vector)"] += 1
    kernels = [fn for fn in funcs if "__k" in fn]
    print(f"  {len(kernels)} kernel functions, {sum(len(v) for v in funcs.values())} instructions")
    n_fmla = total["fmla vector"] + total["fmla by-element"]
    print(f"  fmla total: {n_fmla}  (by-element vD.4s, vN.4s, vM.s[i]: {total['fmla by-element']}, "
          f"vector vD.4s, vN.4s, vM.4s: {total['fmla vector']})")
    print(f"  for comparison: fmadd (scalar) {total['fmadd (scalar)']}, fmul (vector) "
          f"{total['fmul (vector)']}, fadd (vector) {total['fadd (vector)']}")
    by_op = collections.Counter()
    fn_count = collections.Counter()
    for fn, insns in funcs.items():
        c = sum(1 for _a, mn, ops, _l in insns if mn == "fmla" and ops.startswith("v"))
        if c:
            by_op[op_of(fn)] += c
            fn_count[op_of(fn)] += 1
    print("  fmla per kernel op: " + ", ".join(f"{op} {c} in {fn_count[op]} kernels" for op, c in by_op.most_common()))

    # Innermost loop with the most FMLAs: ranges [target, branch] of backward branches.
    best = None
    for fn, insns in funcs.items():
        addrs = [a for a, *_ in insns]
        for i, (addr, mn, ops, _line) in enumerate(insns):
            if not BRANCH_RE.match(mn):
                continue
            # objdump prints the target as "addr <sym+off>" after the
            # operands (cbz/tbz put registers and a bit number first).
            tgt = re.match(r"(?:[\w.]+,\s*)*(?:#\d+,\s*)?([0-9a-f]+)\b", ops)
            if not tgt:
                continue
            t = int(tgt.group(1), 16)
            if t > addr or t < addrs[0]:
                continue
            j = addrs.index(t) if t in addrs else None
            if j is None:
                continue
            body = insns[j:i + 1]
            c = sum(1 for _a, mn2, ops2, _l in body if mn2 == "fmla" and ops2.startswith("v"))
            if c == 0:
                continue
            key = (c / len(body), c, -len(body))
            if best is None or key > best[0]:
                best = (key, fn, body)
    if best:
        _key, fn, body = best
        c = sum(1 for _a, mn2, ops2, _l in body if mn2 == "fmla")
        print(f"  hottest inner loop: {fn}, {len(body)} instructions, {c} fmla "
              f"({c * 4 * 2} flops per iteration):")
        for *_x, line in body[:args.max_lines]:
            print("    " + line.strip().replace("\t", " "))
        if len(body) > args.max_lines:
            print(f"    ... ({len(body) - args.max_lines} more)")
    if n_fmla == 0:
        print("  FAIL: no vector FMLA in the library (expected NEON GEMM kernels)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
