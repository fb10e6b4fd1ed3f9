#!/usr/bin/env bash
# Kafka end-to-end benchmark on this machine: preloads N demo messages into a fresh 6-partition
# topic, starts one worker (release build) on it, and times the drain: consume → classify →
# draft → escalate → produce → commit. Prints messages/s and the worker's end-to-end latency
# percentiles (consume to last output acknowledged; in drain mode that includes queueing
# behind the backlog, bounded by --max-in-flight).
#
#   scripts/bench-kafka.sh [N=5000] [extra worker flags...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=env.sh
. scripts/env.sh
n=${1:-5000}
shift || true
port=${BENCH_HTTP_PORT:-8099}
moodstream_build_deps
scripts/setup-ort.sh >/dev/null
deploy/local/stack.sh up >/dev/null
cargo build --release --locked --quiet
bin=$CARGO_TARGET_DIR/release/moodstream
topic=bench-$(date +%s)
deploy/local/kafka.sh kafka-topics --bootstrap-server "$MOODSTREAM_BROKERS" --create --topic "$topic" --partitions 6 >/dev/null
deploy/local/kafka.sh kafka-topics --bootstrap-server "$MOODSTREAM_BROKERS" --create --topic "$topic.dlq" --partitions 1 >/dev/null
"$bin" demo-produce --topic "$topic" --count "$((n - 125))" --run-tag "$topic" >/dev/null
metrics() { curl -fsS "http://127.0.0.1:$port/metrics"; }
metric() { metrics 2>/dev/null | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {print s+0}'; }
"$bin" run --group "$topic" --topics "$topic" --http-addr "127.0.0.1:$port" --log-format text "$@" >/dev/null 2>&1 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT
until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.05; done
start=$(date +%s.%N)
until [[ $(metric moodstream_messages_consumed_total) -ge $n && $(metric moodstream_in_flight_messages) -eq 0 ]]; do sleep 0.05; done
end=$(date +%s.%N)
metrics >"${TMPDIR:-/tmp}/$topic.metrics"
python3 - "$n" "$start" "$end" "${TMPDIR:-/tmp}/$topic.metrics" <<'PY'
import re, sys
n, start, end, path = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
text = open(path).read()
def hist(name):
    buckets = [(float(le), float(v)) for le, v in re.findall(name + r'_bucket\{le="([^"]+)"\} (\S+)', text)]
    count = float(re.search(name + r'_count (\S+)', text).group(1))
    total = float(re.search(name + r'_sum (\S+)', text).group(1))
    q = lambda p: next(le for le, c in buckets if c >= p * count)
    return count, total / max(count, 1), q(0.5), q(0.99)
secs = end - start
print(f"drained {n} messages in {secs:.2f} s: {n / secs:.0f} messages/s (1 worker, Kafka on loopback)")
c, mean, p50, p99 = hist("moodstream_end_to_end_seconds")
print(f"end-to-end latency (consume → all outputs acked): mean {mean*1e3:.0f} ms, p50 ≤ {p50*1e3:.0f} ms, p99 ≤ {p99*1e3:.0f} ms (bucket bounds)")
for name in ["tokenize", "queue_wait", "inference"]:
    c, mean, p50, p99 = hist(f"moodstream_{name}_seconds")
    print(f"  {name:<11} mean {mean*1e3:8.2f} ms  p50 ≤ {p50*1e3:8.2f} ms  p99 ≤ {p99*1e3:8.2f} ms  ({int(c)} samples)")
c, mean, _, _ = hist("moodstream_batch_size")
print(f"  batches: {int(c)}, mean size {mean:.1f}")
PY
