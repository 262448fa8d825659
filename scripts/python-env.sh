#!/usr/bin/env bash
# Create (once) the Python environment used by nnc's model tests and example
# generators: $ROOT/.venv with pinned numpy / onnx / onnxruntime.
#
#   PY=$(scripts/python-env.sh | tail -n1)     # or simply PY=.venv/bin/python
#   "$PY" tests/ort_compare.py MODEL.onnx LIB.so
#
# Idempotent: a stamp file records what was installed, so later runs only
# check it and exit.  All progress goes to stderr; the last (only) line on
# stdout is the venv's python.
#
# Works from a bare Debian 12 with only python3: if `python3 -m venv` is
# unusable (Debian ships ensurepip separately) it installs python3-venv when
# running as root, and otherwise falls back to a user-installed virtualenv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.nnc-requirements"
PYTHON="${PYTHON:-python3}"
PACKAGES=(numpy==2.4.6 onnx==1.23.2 onnxruntime==1.32.0)

log() { echo "python-env: $*" >&2; }

# Everything that should force a reinstall when it changes.
want_stamp() {
    printf '%s\n' "${PACKAGES[@]}"
    "$PY" -c 'import sys; print(sys.version.split()[0])'
}

if [[ -x "$PY" && -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(want_stamp 2>/dev/null)" ]] &&
    "$PY" -c 'import numpy, onnx, onnxruntime' 2>/dev/null; then
    echo "$PY"
    exit 0
fi

command -v "$PYTHON" >/dev/null || { log "error: $PYTHON not found"; exit 1; }

make_venv() {
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" >&2 && "$PY" -m pip --version >/dev/null 2>&1
}

if [[ ! -x "$PY" ]] || ! "$PY" -m pip --version >/dev/null 2>&1; then
    log "creating $VENV"
    if ! make_venv; then
        # A failed `venv` leaves a half-made directory behind; make_venv
        # removes it before each attempt.
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            log "python3 -m venv failed; installing python3-venv"
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
            make_venv
        else
            log "python3 -m venv failed; falling back to virtualenv (pip --user)"
            rm -rf "$VENV"
            # Debian marks the system Python externally managed (PEP 668).
            "$PYTHON" -m pip install --user --quiet virtualenv >&2 ||
                "$PYTHON" -m pip install --user --quiet --break-system-packages virtualenv >&2
            "$PYTHON" -m virtualenv "$VENV" >&2
        fi
    fi
fi

log "installing ${PACKAGES[*]}"
"$PY" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2
"$PY" -c 'import numpy, onnx, onnxruntime' >&2
want_stamp >"$STAMP"
log "ready"
echo "$PY"
