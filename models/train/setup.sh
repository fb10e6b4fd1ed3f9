#!/usr/bin/env bash
# Create or refresh the Python environment for models/train/ at
# ${MOODSTREAM_CACHE:-$HOME/.cache/moodstream}/venv-train. Idempotent: a stamp holding the hash of
# requirements.txt skips the install when nothing changed. Set PYTHON to choose the interpreter (3.11 tested).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${MOODSTREAM_CACHE:-$HOME/.cache/moodstream}/venv-train
stamp=$venv/.requirements.sha256
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)

if [[ -x $venv/bin/python && -f $stamp && $(<"$stamp") == "$want" ]] && "$venv/bin/python" -c '' 2>/dev/null; then
  echo "setup: $venv is up to date" >&2
  exit 0
fi
if ! "$venv/bin/python" -c '' 2>/dev/null; then
  rm -rf "$venv" # missing or broken (e.g. its interpreter moved): start over
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -r "$here/requirements.txt"
echo "$want" >"$stamp"
echo "setup: $venv ready" >&2
