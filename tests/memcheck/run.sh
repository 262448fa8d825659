#!/usr/bin/env bash
# Generated-code memory safety: run model libraries under valgrind with
# exactly-sized heap buffers (tests/memcheck/driver.c) and require 0 errors.
#
#   tests/memcheck/run.sh                 # compile the models below, then check them
#   tests/memcheck/run.sh --libs DIR      # check every DIR/*.so (tests/reliability.rs does this)
#
# Environment: NNC (default target/release/nnc, else target/debug/nnc),
# PY (python with onnx; default .venv/bin/python, else python3), CC (cc),
# VALGRIND (valgrind), NNC_MEMCHECK_DIR (scratch dir; default a mktemp dir).
#
# Models (compile mode): examples/mnist_cnn.onnx, examples/attention.onnx
# (x=16,1,64), mha_L16.onnx and mnist_cnn_b64.onnx from
# tests/models/make_models.py, and the valid-but-odd models of the hostile
# corpus (zero-sized dims, empty slices, a 3000-node chain...).
#
# x86-64: libraries are built for --cpu x86-64-v3 (or v2 without AVX2/FMA):
# valgrind does not decode AVX-512, which --cpu native may use.
#
# Exit status: 0 all clean, 1 an error (compile failure, driver failure or a
# valgrind report), 2 missing tools.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/memcheck"
VALGRIND="${VALGRIND:-valgrind}"
CC="${CC:-cc}"

LIBS=""
while (($#)); do
    case "$1" in
    --libs) LIBS="$2"; shift ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

command -v "$VALGRIND" >/dev/null || { echo "memcheck: valgrind not found" >&2; exit 2; }
command -v "$CC" >/dev/null || { echo "memcheck: C compiler '$CC' not found" >&2; exit 2; }

WORK="${NNC_MEMCHECK_DIR:-$(mktemp -d)}"
mkdir -p "$WORK"
[[ -n "${NNC_MEMCHECK_DIR:-}" ]] || trap 'rm -rf "$WORK"' EXIT

"$CC" -std=c11 -O1 -g -Wall -Wextra -Werror -I"$ROOT/runtime/include" \
    -o "$WORK/driver" "$HERE/driver.c" -ldl || { echo "memcheck: cannot build the driver" >&2; exit 1; }

cpu_level() {
    if [[ "$(uname -m)" == x86_64 ]]; then
        if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then echo x86-64-v3; else echo x86-64-v2; fi
    else
        echo native
    fi
}

FAIL=0
if [[ -z "$LIBS" ]]; then
    NNC="${NNC:-}"
    if [[ -z "$NNC" ]]; then
        for c in "$ROOT/target/release/nnc" "$ROOT/target/debug/nnc"; do
            [[ -x "$c" ]] && { NNC="$c"; break; }
        done
    fi
    [[ -x "$NNC" ]] || { echo "memcheck: no nnc binary (cargo build --release -p nnc, or set NNC)" >&2; exit 2; }
    PY="${PY:-}"
    [[ -n "$PY" ]] || { [[ -x "$ROOT/.venv/bin/python" ]] && PY="$ROOT/.venv/bin/python" || PY=python3; }
    LIBS="$WORK/libs"
    MODELS="$WORK/models"
    mkdir -p "$LIBS" "$MODELS"
    CPU="$(cpu_level)"
    compile() { # NAME MODEL [nnc options]
        local name="$1" model="$2"
        shift 2
        if ! "$NNC" compile "$model" -o "$LIBS/$name.so" --cpu "$CPU" "$@" >"$WORK/compile.log" 2>&1; then
            echo "memcheck: FAIL compiling $model: $(cat "$WORK/compile.log")" >&2
            FAIL=1
        fi
    }
    compile mnist_cnn "$ROOT/examples/mnist_cnn.onnx"
    compile attention "$ROOT/examples/attention.onnx" --input-shape x=16,1,64
    if "$PY" - "$ROOT" "$MODELS" >/dev/null <<'EOF'
import os, sys
root, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(root, "tests", "models"))
import make_models  # noqa: E402
for name in ("mha_L16.onnx", "mnist_cnn_b64.onnx"):
    make_models.save(make_models.MODELS[name](), os.path.join(out, name))
EOF
    then
        compile mha_L16 "$MODELS/mha_L16.onnx"
        compile mnist_cnn_b64 "$MODELS/mnist_cnn_b64.onnx"
    else
        echo "memcheck: cannot generate the model-test models (python with onnx?); skipping them" >&2
    fi
    if "$PY" "$ROOT/tests/hostile/make_corpus.py" "$MODELS/hostile" >/dev/null; then
        # The cases expected to compile (<ok>, or <any> ones that do).
        while IFS=$'\t' read -r file want; do
            [[ "$file" == \#* || -z "$file" ]] && continue
            [[ "$want" == "<ok>" || "$want" == "<any>" ]] || continue
            name="hostile_$(basename "$file" .onnx)"
            "$NNC" compile "$MODELS/hostile/$file" -o "$LIBS/$name.so" --cpu "$CPU" >/dev/null 2>&1 || true
        done <"$ROOT/tests/hostile/expected.txt"
    fi
fi

shopt -s nullglob
N=0
for so in "$LIBS"/*.so; do
    N=$((N + 1))
    log="$WORK/$(basename "$so" .so).valgrind.log"
    if "$VALGRIND" --quiet --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite,possible \
        --log-file="$log" "$WORK/driver" "$so" >/dev/null; then
        echo "memcheck: ok   $(basename "$so")"
    else
        rc=$?
        echo "memcheck: FAIL $(basename "$so") (exit $rc; 9 = valgrind errors)"
        sed 's/^/    /' "$log" | head -60
        FAIL=1
    fi
done
((N > 0)) || { echo "memcheck: no libraries in $LIBS" >&2; exit 1; }
echo "memcheck: $N libraries checked, $([[ $FAIL == 0 ]] && echo "0 errors" || echo "FAILURES")"
exit "$FAIL"
