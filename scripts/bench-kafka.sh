#!/usr/bin/env bash
# Kafka end-to-end benchmark on this machine: preloads N demo messages into a fresh 6-partition
# topic, starts one worker (release build) on it, and times the drain: consume → classify →
# draft → escalate → produce → commit. Prints messages/s and the worker's end-to-end latency
# percentiles (consume to last output acknowledged; in drain mode that includes queueing
# behind the backlog, bounded by --max-in-flight).
#
# Then it reads the topic back and runs `moodstream bench --input` on those same messages (with
# the model and batching flags among the worker flags) for the model stage's own batched
# throughput, and prints the Kafka pipeline's overhead against it.
#
# It also splits the machine's CPU over the drain: the worker (and, by thread, ONNX Runtime's
# intra-op threads `ort` + `model`, the async runtime, librdkafka), the broker and Redis.
# BENCH_NO_REDIS=1 runs the worker without Redis (escalation windows in memory, one replica's
# view) to show what the shared escalation state costs.
#
#   [BENCH_NO_REDIS=1] scripts/bench-kafka.sh [N=5000] [extra worker flags...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=env.sh
. scripts/env.sh
if [[ ${BENCH_NO_REDIS:-} == 1 ]]; then unset MOODSTREAM_REDIS_URL; fi
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
# CPU seconds (user + system) of a process, to show where the machine's cores went.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
run_dir=${MOODSTREAM_RUN_DIR:-$MOODSTREAM_CACHE/run}
broker=$(<"$run_dir/kafka.pid")
redis=$(<"$run_dir/redis.pid")
cpu0=("$(cpu_s "$worker")" "$(cpu_s "$broker")" "$(cpu_s "$redis")")
# Per-thread CPU ticks of the worker ("tid name ticks"), to split the worker's share by thread.
threads() { for t in /proc/"$1"/task/*; do echo "${t##*/} $(tr ' ' _ <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done 2>/dev/null; }
threads "$worker" >"${TMPDIR:-/tmp}/$topic.threads0"
start=$(date +%s.%N)
until [[ $(metric moodstream_messages_consumed_total) -ge $n && $(metric moodstream_in_flight_messages) -eq 0 ]]; do sleep 0.05; done
end=$(date +%s.%N)
cpu1=("$(cpu_s "$worker")" "$(cpu_s "$broker")" "$(cpu_s "$redis")")
threads "$worker" >"${TMPDIR:-/tmp}/$topic.threads1"
metrics >"${TMPDIR:-/tmp}/$topic.metrics"
python3 - "$n" "$start" "$end" "${TMPDIR:-/tmp}/$topic.metrics" <<'PY'
import sys
sys.path.insert(0, "scripts")
from prom_hist import hist as hist_in
n, start, end, path = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
text = open(path).read()
hist = lambda name: hist_in(text, name)
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

# The model alone on the same input: the topic's messages as JSON lines, the worker's model flags.
model_flags=()
while (($#)); do
  case $1 in
    --intra-threads | --model-sessions | --tokenizer-threads | --max-batch-size | --max-batch-tokens | --max-wait-us | \
      --max-seq-len | --execution-provider | --model-dir | --model-variant | --cuda-device-id)
      model_flags+=("$1" "${2:?$1 needs a value}")
      shift 2
      ;;
    *) shift ;;
  esac
done
input=${TMPDIR:-/tmp}/$topic.jsonl
deploy/local/kafka.sh kafka-console-consumer --bootstrap-server "$MOODSTREAM_BROKERS" --topic "$topic" \
  --from-beginning --max-messages "$n" --timeout-ms 30000 >"$input" 2>/dev/null
model_rate=$("$bin" bench --input "$input" "${model_flags[@]}" 2>/dev/null |
  sed -n 's/.*model stage alone.*: \([0-9.]*\) messages\/s.*/\1/p')
python3 - "$n" "$start" "$end" "$model_rate" "${cpu0[@]}" "${cpu1[@]}" "$(nproc)" \
  "${TMPDIR:-/tmp}/$topic.threads0" "${TMPDIR:-/tmp}/$topic.threads1" "$(getconf CLK_TCK)" <<'PY'
import sys
n, start, end, model = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
w0, b0, r0, w1, b1, r1 = map(float, sys.argv[5:11])
secs, cores = end - start, int(sys.argv[11])
threads0, threads1, hz = sys.argv[12], sys.argv[13], int(sys.argv[14])
kafka = n / secs
print(f"CPU during the drain ({cores} cores × {secs:.1f} s = {cores * secs:.1f} core-s): "
      f"worker {w1 - w0:.1f} core-s, Kafka broker {b1 - b0:.1f} core-s, Redis {r1 - r0:.1f} core-s")
before = {tid: int(t) for tid, _, t in (line.split() for line in open(threads0))}
by_name = {}
for line in open(threads1):
    tid, name, t = line.split()
    used = int(t) - before.get(tid, 0)
    group = name.rstrip("0123456789-")
    by_name[group] = by_name.get(group, 0) + used / hz
print("  worker threads: " + ", ".join(f"{name} {s:.1f}" for name, s in
      sorted(by_name.items(), key=lambda kv: -kv[1]) if s >= 0.05) + " (core-s)")
print(f"model stage alone on the same {n} messages (moodstream bench --input): {model:.0f} messages/s; "
      f"Kafka pipeline overhead: {100 * (1 - kafka / model):.1f} %")
PY
