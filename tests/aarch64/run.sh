#!/usr/bin/env bash
# AArch64 cross tests: compile models with `nnc --target
# aarch64-unknown-linux-gnu`, run them under qemu-aarch64 through a small C
# runner (tests/aarch64/runner.c, linked against the model library), and
# compare with the same models compiled for the host and with onnxruntime.
#
#   tests/aarch64/run.sh [options] [NNC]
#
#   NNC                nnc binary (default target/release/nnc)
#   --only REGEX       run only the model cases whose name matches
#   --no-conformance   skip the ONNX node-test sample (conformance_sample.py)
#   --no-disasm        skip the disassembly (fmla) report
#   $PY                python with numpy/onnx/onnxruntime (default
#                      .venv/bin/python, made by scripts/python-env.sh)
#
# Needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user; they are
# installed by scripts/cross-env.sh (as root) when missing.  binfmt_misc is not
# assumed: programs run as `qemu-aarch64 -L /usr/aarch64-linux-gnu ./prog`.
#
# Work files (libraries, runners, raw inputs/outputs, logs) go to
# .cache/aarch64/, rewritten on each run.  The whole run takes ~1.5 min on
# 2 cores (ResNet-18 ~20 s and the BERT layer ~10 s of it under qemu).
#
# Checks, each of which fails the run (exit status 1):
#   * `--emit obj --target aarch64-...` writes an AArch64 relocatable object,
#     and a missing cross linker is reported with its Debian package,
#     --linker PATH and --emit obj;
#   * the AArch64 .so is an ELF64 AArch64 shared object (file, readelf -h)
#     whose only NEEDED entry is libc.so.6 (readelf -d);
#   * the runner exits 0 under qemu (model_run returns 0; for the cases marked
#     -w a run with a 0xFF-filled caller workspace is bit-identical to the
#     workspace=NULL run);
#   * AArch64 vs host (x86-64): metric <= 1e-4, and both vs onnxruntime:
#     metric <= the case's tolerance from tests/models/run_model_tests.sh,
#     metric = max |a - b| / (|b| + 1e-3);
#   * ResNet-18's library contains NEON fmla (fmla_report.py prints the
#     counts and the hottest conv/GEMM inner loop);
#   * the conformance sample passes as many tests on AArch64 as on the host.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE=tests/aarch64
T_START=$EPOCHREALTIME

ONLY=""
CONFORMANCE=1
DISASM=1
POS=()
while (($#)); do
    case "$1" in
    --only) ONLY="$2"; shift ;;
    --no-conformance) CONFORMANCE=0 ;;
    --no-disasm) DISASM=0 ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) POS+=("$1") ;;
    esac
    shift
done
NNC="${POS[0]:-target/release/nnc}"
[[ "$NNC" == */* ]] || NNC="$(command -v "$NNC" || echo "$NNC")"
NNC="$(cd "$(dirname "$NNC")" 2>/dev/null && pwd)/$(basename "$NNC")"
if [[ ! -x "$NNC" ]]; then
    echo "nnc binary '$NNC' not found; build it with: cargo build --release -p nnc" >&2
    exit 2
fi

TRIPLE=aarch64-unknown-linux-gnu
XCC=aarch64-linux-gnu-gcc
SYSROOT=/usr/aarch64-linux-gnu
QEMU=(qemu-aarch64 -L "$SYSROOT")
HOSTCC="${CC:-cc}"

# ---- tools ---------------------------------------------------------------
if ! scripts/cross-env.sh --check >/dev/null 2>&1; then
    echo "== installing the cross toolchain (scripts/cross-env.sh)"
    scripts/cross-env.sh >/dev/null || { echo "cross toolchain unavailable" >&2; exit 2; }
fi
READELF=aarch64-linux-gnu-readelf
command -v "$READELF" >/dev/null || READELF=readelf
PY="${PY:-.venv/bin/python}"
if [[ ! -x "$PY" ]]; then
    PY="$(scripts/python-env.sh | tail -n1)" || exit 2
fi
export PY

WORK=.cache/aarch64
MODELS=.cache/models
rm -rf "$WORK/models"
mkdir -p "$WORK/models" "$MODELS"
"$PY" tests/models/make_models.py "$MODELS" >"$WORK/make_models.log" 2>&1 || {
    cat "$WORK/make_models.log"; exit 1; }
if [[ ! -f examples/mnist_cnn.onnx || ! -f examples/attention.onnx ]]; then
    "$PY" examples/make_examples.py || exit 1
fi

FAILED=0
NPASS=0
NFAIL=0
# Each check (CLI, model case, disassembly, conformance sample) counts once.
ok() { NPASS=$((NPASS + 1)); }
bad() { NFAIL=$((NFAIL + 1)); FAILED=1; }

# ---- CLI: --emit obj, and the missing-cross-linker message ------------------
echo "=== nnc --target $TRIPLE: --emit obj and a missing linker"
mkdir -p "$WORK/cli"
cli_ok=1
if "$NNC" compile examples/mnist_cnn.onnx -o "$WORK/cli/cnn.o" --emit obj --target "$TRIPLE" \
    >"$WORK/cli/obj.log" 2>&1; then
    hdr=$("$READELF" -h "$WORK/cli/cnn.o")
    if grep -q 'Type: *REL' <<<"$hdr" && grep -q 'Machine: *AArch64' <<<"$hdr"; then
        echo "  --emit obj: AArch64 relocatable object ($(stat -c %s "$WORK/cli/cnn.o") bytes)"
    else
        echo "  FAIL: --emit obj did not write an AArch64 relocatable object"; cli_ok=0
    fi
else
    echo "  FAIL: --emit obj failed:"; tail -n 5 "$WORK/cli/obj.log"; cli_ok=0
fi
"$NNC" compile examples/mnist_cnn.onnx -o "$WORK/cli/cnn.so" --target "$TRIPLE" \
    --linker "$ROOT/$WORK/cli/no-such-dir/aarch64-linux-gnu-gcc" >"$WORK/cli/nolinker.log" 2>&1
rc=$?
missing=()
for want in "not found" "gcc-aarch64-linux-gnu" "--linker PATH" "--emit obj"; do
    grep -qF -- "$want" "$WORK/cli/nolinker.log" || missing+=("'$want'")
done
if ((rc == 1)) && ((${#missing[@]} == 0)); then
    echo "  missing linker: exit 1, names the package, --linker PATH and --emit obj"
else
    echo "  FAIL: missing-linker error (exit $rc) lacks ${missing[*]:-nothing}:"
    sed 's/^/    /' "$WORK/cli/nolinker.log"
    cli_ok=0
fi
if ((cli_ok)); then ok; else bad; fi

# The model tests' tolerance vs onnxruntime for a case (same names as there).
tol_for() { # NAME DEFAULT
    local t
    t=$(grep -oE "^[[:space:]]*\"$1\|[^\"]*\"" tests/models/run_model_tests.sh 2>/dev/null |
        head -n1 | tr -d '"' | awk -F'|' '{print $4}')
    echo "${t:-$2}"
}

# name | model | --input-shape | runner flags | default tolerance vs ort
# (-w: extra caller-workspace run; -t N: through an N-thread pool.)  ResNet-18
# and the BERT layer take ~20 s each under qemu, so they run once.
CASES=(
    "mnist_cnn|examples/mnist_cnn.onnx||-w|1e-4"
    "attention_L16|examples/attention.onnx|x=16,1,64|-w|1e-3"
    "attention_L128|examples/attention.onnx|x=128,1,64|-w|1e-3"
    "mha_L128|$MODELS/mha_L128.onnx||-w|1e-3"
    "mha_L128_t2|$MODELS/mha_L128.onnx||-t 2|1e-3"
    "resnet18|$MODELS/resnet18.onnx|||3e-3"
    "bert_layer|$MODELS/bert_layer.onnx|||1e-2"
)

declare -a ROWS
fail_row() { # NAME WHAT
    ROWS+=("$1|-|-|-|-|-|-|-|-|-|-|-|FAIL ($2)")
    bad
}

build_runner() { # CC DIR
    "$1" -std=c11 -O2 -Wall -Wextra -DNNC_PREFIX=model -I"$2" "$HERE/runner.c" -o "$2/runner" \
        -L"$2" -l:model.so -Wl,-rpath,'$ORIGIN' -lpthread >"$2/cc.log" 2>&1
}

for case in "${CASES[@]}"; do
    IFS='|' read -r name model shape rflags deftol <<<"$case"
    [[ -n "$ONLY" && ! "$name" =~ $ONLY ]] && continue
    tol=$(tol_for "${name%_t2}" "$deftol")
    shape_args=()
    [[ -n "$shape" ]] && shape_args=(--input-shape "$shape")
    # shellcheck disable=SC2206
    runner_args=($rflags)
    D="$WORK/models/$name"
    mkdir -p "$D/a64" "$D/x86"
    echo "=== $name"

    if ! "$PY" "$HERE/rawio.py" prepare "$model" "$D" "${shape_args[@]}" >"$D/prepare.log" 2>&1; then
        tail -n 20 "$D/prepare.log"
        fail_row "$name" "prepare"
        continue
    fi

    # -- compile for both targets
    t0=$EPOCHREALTIME
    "$NNC" compile "$model" -o "$D/a64/model.so" --name model --target "$TRIPLE" "${shape_args[@]}" \
        >"$D/a64/compile.log" 2>&1
    rc=$?
    compile_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    if ((rc != 0)); then
        echo "aarch64 compile failed (exit $rc):"; tail -n 20 "$D/a64/compile.log"
        fail_row "$name" "aarch64 compile"
        continue
    fi
    # The host build uses the same portable Cranelift GEMM as AArch64
    # (NNC_ASM_GEMM=off), so the two targets can be compared bit for bit;
    # the AVX-512 kernels are checked against onnxruntime elsewhere.
    if ! NNC_ASM_GEMM=off "$NNC" compile "$model" -o "$D/x86/model.so" --name model "${shape_args[@]}" >"$D/x86/compile.log" 2>&1; then
        echo "host compile failed:"; tail -n 20 "$D/x86/compile.log"
        fail_row "$name" "host compile"
        continue
    fi

    # -- the library is AArch64 and needs only libc
    elf="ok"
    ftype=$(file -b "$D/a64/model.so")
    machine=$("$READELF" -h "$D/a64/model.so" | sed -n 's/^ *Machine: *//p')
    class=$("$READELF" -h "$D/a64/model.so" | sed -n 's/^ *Class: *//p')
    etype=$("$READELF" -h "$D/a64/model.so" | sed -n 's/^ *Type: *\([A-Z]*\).*/\1/p')
    needed=$("$READELF" -d "$D/a64/model.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -sd' ')
    echo "  file: $ftype"
    echo "  readelf: $class $etype $machine; NEEDED: ${needed:-none}"
    if [[ "$ftype" != *"ARM aarch64"* || "$machine" != "AArch64" || "$class" != "ELF64" || "$etype" != "DYN" ]]; then
        echo "  FAIL: not an AArch64 ELF64 shared object"
        elf="NOT-A64"
    elif [[ "$needed" != "libc.so.6" ]]; then
        echo "  FAIL: NEEDED is '$needed', expected only libc.so.6"
        elf="NEEDED"
    fi

    # -- runners
    if ! build_runner "$XCC" "$D/a64"; then
        cat "$D/a64/cc.log"; fail_row "$name" "aarch64 cc"; continue
    fi
    if ! build_runner "$HOSTCC" "$D/x86"; then
        cat "$D/x86/cc.log"; fail_row "$name" "host cc"; continue
    fi

    # -- run: AArch64 under qemu, x86-64 natively
    t0=$EPOCHREALTIME
    "${QEMU[@]}" "$D/a64/runner" "${runner_args[@]}" "$D/in" "$D/a64" >"$D/a64/run.log" 2>&1
    rc_a=$?
    qemu_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    "$D/x86/runner" "${runner_args[@]}" "$D/in" "$D/x86" >"$D/x86/run.log" 2>&1
    rc_x=$?
    host_ms=$(sed -n 's/^run ms=\([^ ]*\).*/\1/p' "$D/x86/run.log")
    run_status="ok"
    if ((rc_a != 0)); then
        echo "  aarch64 runner failed (exit $rc_a):"; tail -n 5 "$D/a64/run.log" | sed 's/^/    /'
        run_status="A64 EXIT $rc_a"
    fi
    if ((rc_x != 0)); then
        echo "  host runner failed (exit $rc_x):"; tail -n 5 "$D/x86/run.log" | sed 's/^/    /'
        run_status="HOST EXIT $rc_x"
    fi
    ws="-"
    [[ " ${runner_args[*]} " == *" -w "* ]] && ws=$(sed -n 's/^workspace //p' "$D/a64/run.log")

    cmp_line=$("$PY" "$HERE/rawio.py" compare "$D" --tol-ort "$tol" --tol-cross 1e-4 --name "$name" 2>&1 | tail -n1)
    echo "  $cmp_line"
    field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$cmp_line"; }
    status=$(field status)
    if [[ "$status" == PASS && "$elf" == ok && "$run_status" == ok ]]; then ok; else status=FAIL; bad; fi
    ROWS+=("$name|$elf|$run_status|$compile_s|$qemu_s|${host_ms:--}|$(field a64_x86)|$(field bitexact)|$(field a64_ort)|$(field x86_ort)|$tol|${ws:--}|$status")
done

echo
printf '%-15s %-7s %-7s %8s %8s %9s  %-10s %-4s %-10s %-10s %-6s %-6s %s\n' \
    model elf run a64_cc_s qemu_s host_ms a64~x86 bit a64~ort x86~ort tol ws check
for row in "${ROWS[@]}"; do
    IFS='|' read -r name elf run cs qs hms ax bit ao xo tol ws st <<<"$row"
    printf '%-15s %-7s %-7s %8s %8s %9s  %-10s %-4s %-10s %-10s %-6s %-6s %s\n' \
        "$name" "$elf" "$run" "$cs" "$qs" "$hms" "$ax" "$bit" "$ao" "$xo" "$tol" "${ws:0:6}" "${st:-FAIL}"
done
echo "(metric = max |a-b|/(|b|+1e-3); a64~x86 must be <= 1e-4, ~ort <= tol; bit: AArch64 output"
echo " bit-identical to x86-64; ws: caller-workspace run bit-identical to workspace=NULL)"

# ---- disassembly: NEON FMLA in the ResNet-18 library ------------------------
R18="$WORK/models/resnet18/a64/model.so"
if ((DISASM)) && [[ -f "$R18" ]]; then
    echo
    echo "=== disassembly of $R18 (aarch64-linux-gnu-objdump -d)"
    aarch64-linux-gnu-objdump -d --no-show-raw-insn "$R18" >"$WORK/resnet18.dis"
    if "$PY" "$HERE/fmla_report.py" "$WORK/resnet18.dis"; then ok; else bad; fi
fi

# ---- ONNX node-test sample under qemu ---------------------------------------
if ((CONFORMANCE)) && [[ -z "$ONLY" ]]; then
    echo
    echo "=== ONNX node-test sample (tests/aarch64/conformance_sample.py)"
    if "$PY" "$HERE/conformance_sample.py" --nnc "$NNC"; then ok; else bad; fi
fi

total_s=$(awk -v a="$T_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
echo
echo "aarch64: $NPASS passed, $NFAIL failed"
if ((FAILED)); then
    echo "aarch64 tests: FAILED (${total_s} s)"
    exit 1
fi
echo "aarch64 tests: all passed (${total_s} s)"
