#!/usr/bin/env bash
# HTTP API benchmark on this machine: starts one worker with the API on (its Kafka input topic
# fresh and empty, so the API has the model to itself), runs `moodstream bench-api` against it
# (closed loop: each client sends its next request when the previous one is answered) and prints
# throughput, p50/p90/p99 latency and the worker's batch sizes over the run.
#
#   [BENCH_PROFILE=release|debug] scripts/bench-api.sh [bench-api flags...] [-- worker flags...]
#   e.g. scripts/bench-api.sh --route classify --concurrency 16 --batch 1 --seconds 20
# BENCH_PROFILE=debug reuses the test build (dependencies at opt-level 2, moodstream at 0)
# instead of building a release binary. BENCH_HTTP_PORT / BENCH_API_PORT pick the ports.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=env.sh
. scripts/env.sh
port=${BENCH_HTTP_PORT:-8099}
api_port=${BENCH_API_PORT:-8098}
profile=${BENCH_PROFILE:-release}
bench_flags=()
while (($#)) && [[ $1 != -- ]]; do
  bench_flags+=("$1")
  shift
done
shift || true
moodstream_build_deps
scripts/setup-ort.sh >/dev/null
deploy/local/stack.sh up >/dev/null
if [[ $profile == release ]]; then
  cargo build --release --locked --quiet
else
  cargo build --locked --quiet
fi
bin=$CARGO_TARGET_DIR/$profile/moodstream
topic=bench-api-$(date +%s)
deploy/local/kafka.sh kafka-topics --bootstrap-server "$MOODSTREAM_BROKERS" --create --topic "$topic" --partitions 1 >/dev/null
deploy/local/kafka.sh kafka-topics --bootstrap-server "$MOODSTREAM_BROKERS" --create --topic "$topic.dlq" --partitions 1 >/dev/null
"$bin" run --group "$topic" --topics "$topic" --http-addr "127.0.0.1:$port" \
  --api-addr "127.0.0.1:$api_port" --log-format text "$@" >/dev/null 2>&1 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT
until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
  kill -0 $worker 2>/dev/null || { echo "the worker exited" >&2; exit 1; }
  sleep 0.1
done
metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {s+=$2} END {print s+0}'; }
batches0=$(metric moodstream_batch_size_count)
messages0=$(metric moodstream_batch_size_sum)
echo "worker: $profile build, $(nproc) cores, flags: ${*:-(defaults)}"
"$bin" bench-api --url "http://127.0.0.1:$api_port" "${bench_flags[@]}"
batches=$(($(metric moodstream_batch_size_count) - batches0))
messages=$(($(metric moodstream_batch_size_sum) - messages0))
if ((batches > 0)); then
  echo "  worker: $messages messages in $batches model batches (mean $((messages / batches)) per batch)"
fi
