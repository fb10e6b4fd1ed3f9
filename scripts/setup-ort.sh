#!/usr/bin/env bash
# Puts ONNX Runtime's shared library, taken from the official PyPI wheel, into the cache and prints
# its path. Idempotent: a second run only prints the path.
#
#   scripts/setup-ort.sh                   CPU build  (onnxruntime)     -> <cache>/ort/<version>/libonnxruntime.so
#   scripts/setup-ort.sh --gpu [--no-cudnn] CUDA build (onnxruntime-gpu) -> <cache>/ort-gpu/<version>/libonnxruntime.so
#
# The worker loads it at run time (ort's load-dynamic): export ORT_DYLIB_PATH=$(scripts/setup-ort.sh)
# (scripts/env.sh does this for the CPU build; MOODSTREAM_ORT_DYLIB_PATH works too).
# ONNX Runtime loads libonnxruntime_providers_cuda.so from the directory of libonnxruntime.so.
#
# The GPU build is CUDA 13 + cuDNN 9. --gpu also fetches, for a host without a CUDA toolkit, the
# runtime libraries from NVIDIA's PyPI wheels (the versions PyTorch 2.15's CUDA 13 build pins) into
# <cache>/ort-gpu/<version>/cuda/, and prints on stderr the LD_LIBRARY_PATH to export:
#   linked by libonnxruntime_providers_cuda.so: libcudart.so.13 (nvidia-cuda-runtime),
#     libcublas.so.13 + libcublasLt.so.13 (nvidia-cublas), libcurand.so.10 (nvidia-curand);
#   loaded by it at run time: libnvrtc.so.13 (nvidia-cuda-nvrtc), libcudnn*.so.9 (nvidia-cudnn-cu13:
#     ONNX Runtime creates a cuDNN handle for its CUDA streams, whatever the model).
# Downloads ~1.05 GB once (cuDNN 519 MB, cuBLAS 405 MB), 1.6 GB unpacked. --no-cudnn skips cuDNN
# (~520 MB download, ~890 MB unpacked) where the host already has cuDNN 9 on its library path.
# libcuda.so.1 comes with the NVIDIA driver (R580 or newer for CUDA 13), never from here.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

version=$MOODSTREAM_ORT_VERSION
usage() { echo "usage: $0 [--gpu [--no-cudnn]]" >&2; exit 2; }
gpu=0 cudnn=1
for arg in "$@"; do
  case $arg in
    --gpu) gpu=1 ;;
    --no-cudnn) cudnn=0 ;;
    *) usage ;;
  esac
done
((gpu || cudnn)) || usage
if ((gpu)); then
  pkg=onnxruntime-gpu dir=$MOODSTREAM_CACHE/ort-gpu/$version
else
  pkg=onnxruntime dir=$MOODSTREAM_CACHE/ort/$version
fi
lib=$dir/libonnxruntime.so
wheels=$MOODSTREAM_CACHE/wheels

if [[ ! -e $lib ]]; then
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

# CUDA 13 runtime libraries from NVIDIA's wheels: "package==version library-glob...".
cuda_wheels=(
  "nvidia-cuda-runtime==13.2.86 libcudart.so.13"
  "nvidia-cublas==13.4.1.3 libcublas.so.13 libcublasLt.so.13"
  "nvidia-curand==10.4.5.25 libcurand.so.10"
  "nvidia-cuda-nvrtc==13.2.86 libnvrtc.so.13 libnvrtc-builtins.so.13.*"
)
((cudnn)) && cuda_wheels+=("nvidia-cudnn-cu13==9.26.0.51 libcudnn*.so.9")
if ((gpu)); then
  cuda=$dir/cuda
  mkdir -p "$cuda"
  for entry in "${cuda_wheels[@]}"; do
    read -ra fields <<<"$entry"
    spec=${fields[0]} globs=("${fields[@]:1}")
    name=${spec%%==*} ver=${spec#*==}
    # One marker per wheel: a rerun (or an interrupted run) fetches only what is missing.
    marker=$cuda/.${name}-$ver
    [[ -e $marker ]] && continue
    echo "setup-ort: fetching $spec from PyPI" >&2
    # Tagged py3-none-manylinux_*: any Python will do; pip matches --platform tags exactly.
    python3 -m pip download -q --no-deps --only-binary=:all: --dest "$wheels" \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 "$spec" >&2
    wheel=$(find "$wheels" -maxdepth 1 -name "${name//-/_}-$ver-*.whl" | head -n1)
    [[ -n $wheel ]] || { echo "setup-ort: no $spec wheel in $wheels" >&2; exit 1; }
    patterns=()
    for g in "${globs[@]}"; do patterns+=("nvidia/*/lib/$g"); done
    # -j: flat, whatever the wheel's layout (nvidia/cu13/lib, nvidia/cudnn/lib).
    unzip -q -o -j "$wheel" "${patterns[@]}" -d "$cuda"
    touch "$marker"
    rm -f "$wheel" # ~1 GB in all; the marker keeps the rerun a no-op
  done
  # What the provider links must now resolve, except the driver's libcuda.so.1.
  unresolved=$(LD_LIBRARY_PATH=$cuda${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ldd "$dir/libonnxruntime_providers_cuda.so" |
    awk '/not found/ && $1 != "libcuda.so.1" {print $1}')
  [[ -z $unresolved ]] || { echo "setup-ort: still missing for the CUDA provider: $unresolved" >&2; exit 1; }
  echo "setup-ort: export LD_LIBRARY_PATH=$cuda\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" >&2
fi
echo "$lib"
