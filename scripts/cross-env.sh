#!/usr/bin/env bash
# Install (once) what cross-compiling and testing nnc for AArch64 needs:
#
#   gcc-aarch64-linux-gnu     aarch64-linux-gnu-gcc (nnc's default linker for
#                             --target aarch64-unknown-linux-gnu) + binutils
#                             (aarch64-linux-gnu-objdump / readelf)
#   libc6-dev-arm64-cross     the AArch64 glibc, headers and crt files, under
#                             /usr/aarch64-linux-gnu
#   qemu-user                 qemu-aarch64, the user-mode emulator
#   file                      to identify the libraries (tests/aarch64/run.sh)
#
#   scripts/cross-env.sh            # install what is missing, report
#   scripts/cross-env.sh --check    # report only; exit 1 if anything is missing
#
# Idempotent: packages already present are not touched, and `apt-get update`
# runs only when an install fails (stale or missing package lists).
# binfmt_misc is usually not mounted in containers, so AArch64 programs must be
# started through qemu explicitly:
#
#   qemu-aarch64 -L /usr/aarch64-linux-gnu ./prog
#
# Progress goes to stderr; stdout gets a short KEY=VALUE summary.
set -euo pipefail

PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user file)
SYSROOT=/usr/aarch64-linux-gnu
CHECK_ONLY=0
[[ "${1:-}" == "--check" ]] && CHECK_ONLY=1

log() { echo "cross-env: $*" >&2; }

missing() {
    local p out=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || out+=("$p")
    done
    echo "${out[@]:-}"
}

todo="$(missing)"
if [[ -n "$todo" && $CHECK_ONLY -eq 0 ]]; then
    if ! command -v apt-get >/dev/null; then
        log "error: missing packages ($todo) and no apt-get; install them by hand"
        exit 1
    fi
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { log "error: need root (or sudo) to install: $todo"; exit 1; }
        SUDO=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    APT_LOG="$(mktemp "${TMPDIR:-/tmp}/cross-env.XXXXXX.log")"
    apt_install() {
        # shellcheck disable=SC2086
        "${SUDO[@]}" apt-get install -y -q --no-install-recommends $todo >>"$APT_LOG" 2>&1
    }
    log "installing $todo (apt-get log: $APT_LOG)"
    if ! apt_install; then
        log "install failed; running apt-get update and retrying"
        if ! "${SUDO[@]}" apt-get update -q >>"$APT_LOG" 2>&1 || ! apt_install; then
            tail -n 20 "$APT_LOG" >&2
            log "error: could not install $todo"
            exit 1
        fi
    fi
    rm -f "$APT_LOG"
    todo="$(missing)"
fi

status=0
report() { # KEY PATH-OR-EMPTY
    if [[ -n "$2" ]]; then echo "$1=$2"; else echo "$1=MISSING"; status=1; fi
}
report CC "$(command -v aarch64-linux-gnu-gcc || true)"
report OBJDUMP "$(command -v aarch64-linux-gnu-objdump || true)"
report READELF "$(command -v aarch64-linux-gnu-readelf || command -v readelf || true)"
report QEMU "$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)"
if [[ -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ]]; then echo "SYSROOT=$SYSROOT"; else echo "SYSROOT=MISSING"; status=1; fi
if command -v aarch64-linux-gnu-gcc >/dev/null; then
    log "$(aarch64-linux-gnu-gcc --version | head -n1)"
fi
if command -v qemu-aarch64 >/dev/null; then
    log "$(qemu-aarch64 --version | head -n1)"
fi
if [[ -n "$todo" ]]; then
    log "still missing: $todo"
    status=1
fi
if [[ -d /proc/sys/fs/binfmt_misc ]] && ls /proc/sys/fs/binfmt_misc 2>/dev/null | grep -q aarch64; then
    log "binfmt_misc: aarch64 handler registered"
else
    log "binfmt_misc: no aarch64 handler; run programs as: qemu-aarch64 -L $SYSROOT ./prog"
fi
exit $status
