#!/usr/bin/env bash
# The demo (README): sets up and starts the local stack (Kafka KRaft + Redis), builds and starts
# the worker, produces ~425 realistic customer messages across five channels (calm traffic, one
# customer getting angrier turn by turn, a surge of negative messages on acme/social), waits
# until every one is processed, then shows the emotion labels, drafted replies and escalations,
# and leaves the agent console running on a printed URL (DEMO_CONSOLE_PORT, default 8090).
#
#   scripts/demo.sh                 COUNT=1000 scripts/demo.sh       KEEP_WORKER=1 leaves it running
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=env.sh
. scripts/env.sh

count=${COUNT:-300}
port=${DEMO_HTTP_PORT:-8080}
moodstream_build_deps
scripts/setup-ort.sh >/dev/null
deploy/local/stack.sh up
echo "== building moodstream (release; cached after the first run)"
cargo build --release --locked --quiet
bin=$CARGO_TARGET_DIR/release/moodstream
run_dir=${MOODSTREAM_RUN_DIR:-$MOODSTREAM_CACHE/run}/demo
mkdir -p "$run_dir"
tag=demo$(date +%s)

echo "== starting the worker (log: $run_dir/worker.log, metrics: http://127.0.0.1:$port/metrics)"
"$bin" run --group moodstream-demo --http-addr "127.0.0.1:$port" --log-format text >"$run_dir/worker.log" 2>&1 &
worker=$!
trap '[[ ${KEEP_WORKER:-0} == 1 ]] || { kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null; }' EXIT
metric() { curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {print s+0}'; }
for _ in $(seq 300); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 $worker 2>/dev/null || { cat "$run_dir/worker.log"; exit 1; }
  sleep 0.2
done

echo "== producing sample traffic"
start=$(date +%s.%N)
produced=$("$bin" demo-produce --count "$count" --run-tag "$tag")
echo "$produced"
total=$(sed -n 's/^produced \([0-9]*\) messages.*/\1/p' <<<"$produced")
until [[ $(metric moodstream_messages_consumed_total) -ge $total && $(metric moodstream_in_flight_messages) -eq 0 ]]; do
  kill -0 $worker 2>/dev/null || { cat "$run_dir/worker.log"; exit 1; }
  sleep 0.2
done
end=$(date +%s.%N)
echo "== processed $total messages in $(python3 -c "print(round($end - $start, 1))") s (produce included)"

consume() { # topic regex → JSON values of this run, from the beginning
  deploy/local/kafka.sh kafka-console-consumer --bootstrap-server "$MOODSTREAM_BROKERS" \
    --include "$1" --from-beginning --timeout-ms 4000 2>/dev/null | grep -F "\"$tag-" || true
}
consume '^emotions$' >"$run_dir/emotions.jsonl"
consume '^replies\..*' >"$run_dir/replies.jsonl"
consume '^escalations$' >"$run_dir/escalations.jsonl"
python3 scripts/demo_report.py "$run_dir" "$tag"

# The agent console stays up after the script (the worker stops unless KEEP_WORKER=1); a
# previous demo's console is stopped first, by its pid file.
console_port=${DEMO_CONSOLE_PORT:-8090}
if [[ -s $run_dir/console.pid ]] && grep -qa console "/proc/$(<"$run_dir/console.pid")/cmdline" 2>/dev/null; then
  kill -TERM "$(<"$run_dir/console.pid")" && sleep 0.5
fi
nohup "$bin" console --bind "127.0.0.1:$console_port" --group "moodstream-console-demo-$tag" \
  --log-format text >"$run_dir/console.log" 2>&1 </dev/null &
echo $! >"$run_dir/console.pid"
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$console_port/api/me" >/dev/null 2>&1 && break
  kill -0 "$(<"$run_dir/console.pid")" 2>/dev/null || { cat "$run_dir/console.log"; exit 1; }
  sleep 0.2
done
echo "== agent console: http://127.0.0.1:$console_port/ (the demo's conversations; conversation ids start with $tag)"
echo "   stop it with: kill \$(cat $run_dir/console.pid)"
