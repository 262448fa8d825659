#!/usr/bin/env bash
# The main job on the bundled example: build nnc, compile the MNIST CNN to a
# shared library + header, link the C example against it and run it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release -p nnc
make -C examples/c run MODEL=../mnist_cnn
