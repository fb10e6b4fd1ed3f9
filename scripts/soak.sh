#!/usr/bin/env bash
# Soak test on this machine: one worker (release build) on a fresh 6-partition topic, fed by a
# steady producer (`moodstream demo-produce --rate`: calm traffic stamped at send time, about
# five messages per conversation, new conversations all the time) for M minutes. Every 10 s it
# prints the worker's RSS (VmRSS), the messages/s it consumed over the interval and its consumer
# lag (sum over partitions, from librdkafka statistics every 5 s, against committed offsets).
# When the producer is done it waits up to 60 s for the worker to catch up, SIGTERMs it and
# prints a summary, with the end-to-end latency percentiles at that rate (consume → all outputs
# acknowledged; `--rate` at half the capacity gives the latency at half load).
#
#   scripts/soak.sh [--minutes M=10] [--rate R=400] [--warmup-minutes W=2] [-- worker flags...]
#
# The default rate is ~80 % of one worker's measured capacity here (~500 messages/s with
# `scripts/bench-kafka.sh 3000 --intra-threads 2 --tokenizer-threads 1`); pass the same worker
# flags (`-- --intra-threads 2 --tokenizer-threads 1`) to soak the measured configuration.
#
# The worker's in-memory escalation windows keep every conversation for a day, bounded by
# --escalation-memory-max-keys (100000 per kind): at 400/s that bound is reached only after ~20
# minutes, so RSS would rise through a 10-minute soak by design. The soak therefore lowers the
# bound to rate × warm-up s / 10 (MOODSTREAM_ESCALATION_MEMORY_MAX_KEYS; the environment or a
# worker flag wins), which the traffic fills in half the warm-up: after it, RSS covers full,
# evicting windows, and growth means a leak.
#
# Pass (exit 0) needs all of:
#   - memory stable: RSS at the end of the run < 105 % of RSS at the end of warm-up (the peak
#     after warm-up is printed too; a transient peak is not a leak, a leak never gives memory back);
#   - lag bounded: the largest lag after warm-up ≤ R × 30 s (less than 30 s of traffic behind);
#   - lag not trending up: mean lag over the second half of the post-warm-up samples minus the
#     mean over the first half ≤ R × 5 s. At a sustainable rate the lag hovers around a constant
#     (commit interval, batch latency, 5-s statistics); an overloaded worker falls behind by
#     (R − capacity) every second, e.g. 2 % overload at 400/s over a 10-minute soak is ~2000;
#   - every produced message processed (consumed and acknowledged) within 60 s after the producer
#     stopped, and the worker exits 0 on SIGTERM.
# Otherwise it exits 1 with the reasons. Logs and samples stay in ${TMPDIR:-/tmp}/<topic>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=env.sh
. scripts/env.sh

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }
die() {
  echo "soak: $*" >&2
  exit 1
}
minutes=10 rate=400 warmup=2
while (($#)); do
  case $1 in
  --minutes)
    minutes=${2:?--minutes needs a value}
    shift 2
    ;;
  --rate)
    rate=${2:?--rate needs a value}
    shift 2
    ;;
  --warmup-minutes)
    warmup=${2:?--warmup-minutes needs a value}
    shift 2
    ;;
  --)
    shift
    break
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage >&2
    exit 2
    ;;
  esac
done
[[ $minutes =~ ^[1-9][0-9]*$ && $rate =~ ^[1-9][0-9]*$ && $warmup =~ ^[0-9]+$ ]] ||
  die "--minutes and --rate must be positive integers, --warmup-minutes a whole number"
((warmup < minutes)) || die "--warmup-minutes ($warmup) must be shorter than --minutes ($minutes)"
duration=$((minutes * 60))
port=${SOAK_HTTP_PORT:-8097}
if ((warmup > 0)); then
  export MOODSTREAM_ESCALATION_MEMORY_MAX_KEYS=${MOODSTREAM_ESCALATION_MEMORY_MAX_KEYS:-$((rate * warmup * 6))}
fi
interval=10

moodstream_build_deps
scripts/setup-ort.sh >/dev/null
deploy/local/stack.sh up >/dev/null
cargo build --release --locked --quiet
topic=soak-$(date +%s)
dir=${TMPDIR:-/tmp}/$topic
mkdir -p "$dir"
# CARGO_TARGET_DIR is shared between checkouts: run a private copy, so another checkout's build
# cannot swap the binary between starting the worker and starting the producer.
bin=$dir/moodstream
cp "$CARGO_TARGET_DIR/release/moodstream" "$bin"
[[ $("$bin" demo-produce --help) == *--rate* ]] || die "$bin has no demo-produce --rate: a stale build from a shared CARGO_TARGET_DIR? touch src/demo.rs and rerun"

worker='' producer='' created=''
cleanup() {
  if [[ -n $producer ]]; then kill "$producer" 2>/dev/null || true; fi
  if [[ -n $worker ]]; then
    kill -TERM "$worker" 2>/dev/null || true
    wait "$worker" 2>/dev/null || true
  fi
  if [[ -n $created ]]; then
    for t in "$topic" "$topic.dlq"; do
      deploy/local/kafka.sh kafka-topics --bootstrap-server "$MOODSTREAM_BROKERS" --delete --topic "$t" >/dev/null 2>&1 || true
    done
  fi
  rm -f "$bin"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if curl -fsS -m 2 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
  die "port $port is already serving; set SOAK_HTTP_PORT"
fi
deploy/local/kafka.sh kafka-topics --bootstrap-server "$MOODSTREAM_BROKERS" --create --topic "$topic" --partitions 6 >/dev/null
created=1
deploy/local/kafka.sh kafka-topics --bootstrap-server "$MOODSTREAM_BROKERS" --create --topic "$topic.dlq" --partitions 1 >/dev/null

"$bin" run --group "$topic" --topics "$topic" --http-addr "127.0.0.1:$port" --log-format text "$@" >"$dir/worker.log" 2>&1 &
worker=$!
for ((i = 0; ; i++)); do
  curl -fsS -m 2 "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$worker" 2>/dev/null || die "worker exited before it was ready; see $dir/worker.log"
  ((i < 1200)) || die "worker not ready after 120 s; see $dir/worker.log"
  sleep 0.1
done

scrape() { curl -fsS -m 5 "http://127.0.0.1:$port/metrics" || die "no answer from /metrics"; }
# Sum of a metric over its labels in a scrape ($1), e.g. the per-partition lag gauges.
metric() { awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%d", s}' <<<"$1"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$worker/status"; }

echo "soak: $minutes min at $rate messages/s (warm-up $warmup min), escalation memory max keys" \
  "${MOODSTREAM_ESCALATION_MEMORY_MAX_KEYS:-default}, worker flags: ${*:-(defaults)}; logs in $dir"
"$bin" demo-produce --topic "$topic" --rate "$rate" --duration-secs "$duration" --run-tag "$topic" \
  >"$dir/producer.log" 2>&1 &
producer=$!
start=$EPOCHREALTIME
samples=$dir/samples.tsv # elapsed s, RSS KiB, consumed, lag
printf '%8s %9s %8s %8s\n' elapsed "rss MiB" "msgs/s" lag
prev_t=$start prev_consumed=0
for ((next = interval; next <= duration; next += interval)); do
  sleep "$(awk -v s="$start" -v n="$next" -v now="$EPOCHREALTIME" 'BEGIN {d = s + n - now; print (d > 0 ? d : 0)}')"
  kill -0 "$worker" 2>/dev/null || die "worker exited during the soak; see $dir/worker.log"
  m=$(scrape)
  t=$EPOCHREALTIME rss=$(rss_kib)
  consumed=$(metric "$m" moodstream_messages_consumed_total) lag=$(metric "$m" moodstream_consumer_lag)
  printf '%s\t%s\t%s\t%s\n' "$next" "$rss" "$consumed" "$lag" >>"$samples"
  awk -v e="$next" -v r="$rss" -v c="$consumed" -v pc="$prev_consumed" -v t="$t" -v pt="$prev_t" -v l="$lag" -v w="$((warmup * 60))" \
    'BEGIN {printf "%7ds %9.1f %8.0f %8d%s\n", e, r / 1024, (c - pc) / (t - pt), l, (e == w ? "   <- end of warm-up" : "")}'
  prev_t=$t prev_consumed=$consumed
done

wait "$producer" || die "producer failed; see $dir/producer.log"
producer=''
produced=$(awk '/^produced [0-9]+ messages/ {print $2}' "$dir/producer.log")
[[ -n $produced ]] || die "producer printed no count; see $dir/producer.log"
# Catch up: everything produced consumed and acknowledged, for at most 60 s.
drain_start=$SECONDS
while true; do
  m=$(scrape)
  consumed=$(metric "$m" moodstream_messages_consumed_total) in_flight=$(metric "$m" moodstream_in_flight_messages)
  ((consumed >= produced && in_flight == 0 || SECONDS - drain_start >= 60)) && break
  sleep 0.5
done
printf '%s\n' "$m" >"$dir/final.metrics"
drain_secs=$((SECONDS - drain_start))
processed=$((consumed - in_flight))
outputs=$(metric "$m" 'moodstream_messages_produced_total{kind="emotion"}')
dead=$(metric "$m" moodstream_dead_letters_total)
kill -TERM "$worker"
worker_rc=0
wait "$worker" || worker_rc=$?
worker=''

python3 - "$samples" "$rate" "$((warmup * 60))" "$produced" "$processed" "$drain_secs" "$worker_rc" "$outputs" "$dead" "$dir/final.metrics" <<'PY'
import sys
sys.path.insert(0, "scripts")
from prom_hist import hist
path, rate, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
produced, processed, drain_secs, worker_rc, outputs, dead = map(int, sys.argv[4:10])
rows = [tuple(int(x) for x in line.split("\t")) for line in open(path)]
# RSS at the end of warm-up: the last sample inside it (the first sample with no warm-up).
warm_rss = ([r for t, r, _, _ in rows if t <= warmup] or [rows[0][1]])[-1]
post = [(t, r, l) for t, r, _, l in rows if t > warmup]
mib = lambda kib: kib / 1024
end_rss, max_rss = post[-1][1], max(r for _, r, _ in post)
growth_end, growth_max = (end_rss / warm_rss - 1) * 100, (max_rss / warm_rss - 1) * 100
lags = [l for _, _, l in post]
half = len(lags) // 2
trend = sum(lags[half:]) / len(lags[half:]) - sum(lags[:half]) / half if half else 0.0
print()
print(f"RSS: end of warm-up {mib(warm_rss):.1f} MiB, max after warm-up {mib(max_rss):.1f} MiB ({growth_max:+.1f} %), "
      f"end {mib(end_rss):.1f} MiB ({growth_end:+.1f} %)")
print(f"lag: max after warm-up {max(lags)}, final {lags[-1]}, trend (2nd half mean - 1st half mean) {trend:+.0f}")
_, mean, p50, p99 = hist(open(sys.argv[10]).read(), "moodstream_end_to_end_seconds")
print(f"end-to-end latency at {rate}/s (consume → all outputs acked, whole run): mean {mean * 1e3:.0f} ms, "
      f"p50 ≤ {p50 * 1e3:.1f} ms, p99 ≤ {p99 * 1e3:.1f} ms (histogram bucket bounds)")
print(f"messages: produced {produced}, processed {processed} (caught up {drain_secs} s after the producer stopped), "
      f"emotion outputs {outputs}, dead letters {dead}; worker exit code {worker_rc}")
failures = []
if growth_end >= 5:
    failures.append(f"RSS grew {growth_end:.1f} % after warm-up (limit < 5 %)")
if max(lags) > rate * 30:
    failures.append(f"lag reached {max(lags)} (limit {rate * 30} = 30 s of traffic)")
if trend > rate * 5:
    failures.append(f"lag trending up by {trend:.0f} (limit {rate * 5} = 5 s of traffic)")
if processed < produced:
    failures.append(f"{produced - processed} messages not processed 60 s after the producer stopped")
if worker_rc != 0:
    failures.append(f"worker exited {worker_rc} on SIGTERM")
if failures:
    print("SOAK FAILED: " + "; ".join(failures))
    sys.exit(1)
print("SOAK PASSED")
PY
