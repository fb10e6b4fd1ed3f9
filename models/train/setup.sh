#!/usr/bin/env bash
# Create or refresh a Python environment for models/train/ under ${MOODSTREAM_CACHE:-$HOME/.cache/moodstream}:
#   setup.sh            venv-train    from requirements.txt          (training, export, evaluation: torch)
#   setup.sh retrain    venv-retrain  from requirements-retrain.txt  (feedback retrain + gate: no torch)
# Idempotent: a stamp holding the hash of the requirements file skips the install when nothing changed. Set
# PYTHON to choose the interpreter (3.11 tested).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case ${1:-train} in
  train) name=train requirements=$here/requirements.txt ;;
  retrain) name=retrain requirements=$here/requirements-retrain.txt ;;
  *) echo "usage: setup.sh [train|retrain]" >&2; exit 2 ;;
esac
venv=${MOODSTREAM_CACHE:-$HOME/.cache/moodstream}/venv-$name
stamp=$venv/.requirements.sha256
want=$(sha256sum "$requirements" | cut -d' ' -f1)

if [[ -x $venv/bin/python && -f $stamp && $(<"$stamp") == "$want" ]] && "$venv/bin/python" -c '' 2>/dev/null; then
  echo "setup: $venv is up to date" >&2
  exit 0
fi
if ! "$venv/bin/python" -c '' 2>/dev/null; then
  rm -rf "$venv" # missing or broken (e.g. its interpreter moved): start over
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -r "$requirements"
echo "$want" >"$stamp"
echo "setup: $venv ready" >&2
