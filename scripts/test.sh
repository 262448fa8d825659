#!/usr/bin/env bash
# Every test nnc has, as CI runs it (.ci/run calls this).
#   scripts/test.sh            # everything
#   NNC_SKIP_LINT=1 scripts/test.sh   # skip fmt/clippy (quicker local runs)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
step() { printf '\n=== %s\n' "$*"; }

step "python environment (numpy, onnx, onnxruntime)"
PY="$(scripts/python-env.sh | tail -n1)"
export PY

step "build (release)"
cargo build --release --workspace

if [[ -z "${NNC_SKIP_LINT:-}" ]]; then
    step "cargo fmt --check"
    cargo fmt --all -- --check
    step "cargo clippy"
    cargo clippy --release --workspace --all-targets -- -D warnings
fi

step "generate test models (.cache/models)"
mkdir -p .cache/models
"$PY" tests/models/make_models.py .cache/models >/dev/null

step "unit, kernel and integration tests"
cargo test --release --workspace

step "models vs onnxruntime (examples, MHA, BERT layer, ResNet-18)"
tests/models/run_model_tests.sh target/release/nnc "$PY"

step "C example"
make -s -C examples/c clean
make -s -C examples/c run MODEL=../mnist_cnn

step "Rust example"
target/release/nnc-example examples/c/build/model.so 1

step "ONNX node-test conformance (fails on any regression of tests/conformance/expected_pass.txt)"
"$PY" tests/conformance/fetch_suite.py
"$PY" tests/conformance/run.py --nnc target/release/nnc --strict
"$PY" tests/conformance/jit_check.py --nnc target/release/nnc

if [[ -z "${NNC_SKIP_AARCH64:-}" ]]; then
    step "AArch64: cross-compile and run under qemu (tests/aarch64)"
    scripts/cross-env.sh >/dev/null
    PY="$PY" tests/aarch64/run.sh target/release/nnc
fi
step "all tests passed"
