#!/usr/bin/env bash
# Retrain and re-export the emotion model end to end (issue 3): set up the venv, fine-tune, export to ONNX,
# quantize to int8, derive the fp16 variant, evaluate on dev (-> metrics.json), regenerate the Rust parity
# fixture and SHA256SUMS, and print the CPU throughput. Arguments go to train.py, e.g.
#   models/train/run.sh                          # CPU: the recipe that produced the shipped model
#   models/train/run.sh --device cuda --epochs 3   # bf16 autocast works on CUDA too
# MOODSTREAM_SKIP_TRAIN=1 re-exports the last checkpoint instead of training again.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${MOODSTREAM_CACHE:-$HOME/.cache/moodstream}
checkpoint=$cache/emotion-minilm-train
artifacts=$here/../emotion-minilm

"$here/setup.sh"
py=$cache/venv-train/bin/python
cd "$here"
if [[ ${MOODSTREAM_SKIP_TRAIN:-0} != 1 ]]; then
  "$py" train.py --out "$checkpoint" "$@"
fi
"$py" export.py --checkpoint "$checkpoint" --work "$cache/emotion-minilm-onnx"
"$py" ../derive_fp16.py
"$py" evaluate.py --write "$artifacts/metrics.json"
"$py" make_parity_fixture.py
(cd "$artifacts" && sha256sum model.int8.onnx tokenizer.json labels.json >SHA256SUMS)
"$py" bench_cpu.py
