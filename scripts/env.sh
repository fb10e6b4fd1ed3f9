# shellcheck shell=bash
# Source me (`. scripts/env.sh`): the locations that the scripts, the tests and the worker share.
# Safe under `set -euo pipefail` and in an interactive shell; changes no shell options.

# Everything downloaded or built lives here, so CI can cache one directory.
export MOODSTREAM_CACHE=${MOODSTREAM_CACHE:-$HOME/.cache/moodstream}
# One target dir per machine rather than per checkout: a fresh clone reuses compiled dependencies.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MOODSTREAM_CACHE/target}

# ONNX Runtime shared library, put there by scripts/setup-ort.sh (ort's load-dynamic reads ORT_DYLIB_PATH).
export MOODSTREAM_ORT_VERSION=1.31.1
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-${MOODSTREAM_ORT_DYLIB_PATH:-$MOODSTREAM_CACHE/ort/$MOODSTREAM_ORT_VERSION/libonnxruntime.so}}

# The local stack (deploy/local/stack.sh).
export MOODSTREAM_BROKERS=localhost:${KAFKA_PORT:-9092}
export MOODSTREAM_REDIS_URL=redis://127.0.0.1:${REDIS_PORT:-6379}

# Installs the named Debian packages that dpkg does not already have (fast no-op when all are there).
moodstream_apt_ensure() {
  local pkg missing=() sudo=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  ((EUID == 0)) || sudo=(sudo)
  echo "apt: installing ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Debian packages the Rust build needs: rdkafka's bundled librdkafka (cmake, C/C++ toolchain,
# OpenSSL, zlib), onig's C sources; unzip for scripts/setup-ort.sh.
moodstream_build_deps() {
  moodstream_apt_ensure build-essential cmake pkg-config libssl-dev zlib1g-dev unzip
}

# Debian's Chromium (headless) and a font for the console's browser test (tests/console_browser.rs).
moodstream_browser_deps() {
  moodstream_apt_ensure chromium fonts-dejavu-core
}
