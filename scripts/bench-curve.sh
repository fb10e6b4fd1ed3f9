#!/usr/bin/env bash
# Throughput against batch limits: runs `moodstream bench` (release build, the realistic length
# mix, in process) once per combination of --max-batch-size and --max-batch-tokens and prints
# one row each: model stage alone, full pipeline, mean batch size, padding efficiency and batch
# latency. Use it to pick the batch limits for a machine (the same command on a GPU node gives
# the GPU's curve).
#
#   [CURVE_SIZES="16 32 64 128"] [CURVE_TOKENS="1024 2048 4096 8192"] \
#     scripts/bench-curve.sh [messages=4000] [extra bench flags...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=env.sh
. scripts/env.sh
n=${1:-4000}
shift || true
sizes=${CURVE_SIZES:-16 32 64 128}
tokens=${CURVE_TOKENS:-1024 2048 4096 8192}
moodstream_build_deps
scripts/setup-ort.sh >/dev/null
cargo build --release --locked --quiet
bin=$CARGO_TARGET_DIR/release/moodstream
printf '%-10s %-11s %12s %12s %10s %9s %12s %12s\n' max_batch max_tokens "model msg/s" "pipe msg/s" "mean size" "padding" "p50 ms" "p99 ms"
for size in $sizes; do
  for tok in $tokens; do
    out=$("$bin" bench --messages "$n" --max-batch-size "$size" --max-batch-tokens "$tok" "$@" 2>/dev/null) || {
      printf '%-10s %-11s %s\n' "$size" "$tok" "(rejected: max tokens below max seq len?)"
      continue
    }
    python3 - "$size" "$tok" "$out" <<'PY'
import re, sys
size, tok, out = sys.argv[1], sys.argv[2], sys.argv[3]
alone = re.search(r"model stage alone \(.*?mean size ([\d.]+), padding efficiency ([\d.]+) %\): (\d+) messages/s, batch latency p50 ([\d.]+) ms, p99 ([\d.]+) ms", out)
pipe = re.search(r"full pipeline .*?: (\d+) messages/s", out)
mean, pad, rate, p50, p99 = alone.groups()
print(f"{size:<10} {tok:<11} {rate:>12} {pipe.group(1):>12} {mean:>10} {pad + ' %':>9} {p50:>12} {p99:>12}")
PY
  done
done
