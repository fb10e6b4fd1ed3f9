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
# The local Schema Registry (stack.sh with MOODSTREAM_REGISTRY=1): HTTP and HTTPS base URLs of its
# Confluent-compatible API, its basic-auth user; its password file and CA (ca.pem) are in the dir.
export MOODSTREAM_REGISTRY_DIR=${MOODSTREAM_REGISTRY_DIR:-${MOODSTREAM_RUN_DIR:-$MOODSTREAM_CACHE/run}/registry}
export MOODSTREAM_REGISTRY_USER=${MOODSTREAM_REGISTRY_USER:-moodstream}
export MOODSTREAM_REGISTRY_HTTP=http://127.0.0.1:${SCHEMA_REGISTRY_PORT:-$((${KAFKA_PORT:-9092} + 10))}/apis/ccompat/v7
export MOODSTREAM_REGISTRY_HTTPS=https://localhost:${SCHEMA_REGISTRY_TLS_PORT:-$((${KAFKA_PORT:-9092} + 11))}/apis/ccompat/v7
# Its secured listeners (MOODSTREAM_KAFKA_SECURE=1) and their certificates and secrets, for the tests.
export MOODSTREAM_LOCAL_SASL_SSL_BROKERS=localhost:${KAFKA_SASL_SSL_PORT:-$((${KAFKA_PORT:-9092} + 2))}
export MOODSTREAM_LOCAL_MTLS_BROKERS=localhost:${KAFKA_MTLS_PORT:-$((${KAFKA_PORT:-9092} + 3))}
export MOODSTREAM_LOCAL_KAFKA_TLS_DIR=${MOODSTREAM_RUN_DIR:-$MOODSTREAM_CACHE/run}/kafka-tls

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
# OpenSSL, zlib; libcurl for OAUTHBEARER/OIDC token requests, Cyrus SASL for GSSAPI/Kerberos;
# zstd is built from source by zstd-sys), onig's C sources; unzip for scripts/setup-ort.sh.
moodstream_build_deps() {
  moodstream_apt_ensure build-essential cmake pkg-config libssl-dev zlib1g-dev \
    libcurl4-openssl-dev libsasl2-dev unzip
}

# Debian's Chromium (headless) and a font for the console's browser test (tests/console_browser.rs).
moodstream_browser_deps() {
  moodstream_apt_ensure chromium fonts-dejavu-core
}
