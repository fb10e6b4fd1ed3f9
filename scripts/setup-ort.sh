#!/usr/bin/env bash
# Puts ONNX Runtime's shared library, taken from the official PyPI wheel, into the cache and prints
# its path. Idempotent: a second run only prints the path.
#
#   scripts/setup-ort.sh         CPU build  (onnxruntime)     -> <cache>/ort/<version>/libonnxruntime.so
#   scripts/setup-ort.sh --gpu   CUDA build (onnxruntime-gpu) -> <cache>/ort-gpu/<version>/libonnxruntime.so
#
# The worker loads it at run time (ort's load-dynamic): export ORT_DYLIB_PATH=$(scripts/setup-ort.sh)
# (scripts/env.sh does this for the CPU build; MOODSTREAM_ORT_DYLIB_PATH works too).
# The GPU build is CUDA 13 + cuDNN 9: libcudart.so.13, libcublas(Lt).so.13, libcurand.so.10 and
# libcudnn.so.9 (a CUDA 13 toolkit, or the nvidia-*-cu13 PyPI packages) must be on LD_LIBRARY_PATH
# when the worker runs with --execution-provider cuda, next to the driver's libcuda.so.1. ONNX Runtime
# loads libonnxruntime_providers_cuda.so from the directory of libonnxruntime.so.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

version=$MOODSTREAM_ORT_VERSION
case ${1:-} in
  "") pkg=onnxruntime dir=$MOODSTREAM_CACHE/ort/$version ;;
  --gpu) pkg=onnxruntime-gpu dir=$MOODSTREAM_CACHE/ort-gpu/$version ;;
  *) echo "usage: $0 [--gpu]" >&2; exit 2 ;;
esac
lib=$dir/libonnxruntime.so

if [[ ! -e $lib ]]; then
  wheels=$MOODSTREAM_CACHE/wheels
  echo "setup-ort: fetching $pkg==$version from PyPI" >&2
  # The wheel is per Python version, the native library inside is not: any platform-matching one will do.
  python3 -m pip download -q --no-deps --only-binary=:all: --dest "$wheels" "$pkg==$version" >&2
  wheel=$(find "$wheels" -maxdepth 1 -name "${pkg//-/_}-$version-*manylinux*x86_64.whl" | head -n1)
  [[ -n $wheel ]] || { echo "setup-ort: no $pkg $version wheel in $wheels" >&2; exit 1; }
  tmp=$(mktemp -d "$MOODSTREAM_CACHE/ort-unpack.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # libonnxruntime.so.<version> plus the provider libraries (shared; cuda and tensorrt in the GPU wheel).
  unzip -q "$wheel" 'onnxruntime/capi/libonnxruntime*.so*' -d "$tmp"
  ln -s "libonnxruntime.so.$version" "$tmp/onnxruntime/capi/libonnxruntime.so"
  mkdir -p "$(dirname "$dir")"
  rm -rf "$dir" && mv "$tmp/onnxruntime/capi" "$dir"
fi
echo "$lib"
