#!/usr/bin/env bash
# Local stack for the demo and the integration tests: a single-node KRaft Kafka (jars from Maven
# Central, run on the machine's Java 17) and Redis (Debian redis-server). Installs what is missing,
# caches it under $MOODSTREAM_CACHE, keeps pid files, logs and data under $MOODSTREAM_RUN_DIR.
#
#   stack.sh up        start Kafka and Redis (no-op for what is already running), create demo topics
#   stack.sh down      stop what `up` started, by pid file, and wait for it to exit
#   stack.sh status    print running/stopped for each; exit 3 unless both run
#   stack.sh topics    create the demo topics that are missing
#   stack.sh clean     down, then delete Kafka's and Redis's data (topics, offsets, logs)
#   stack.sh stop kafka|redis    stop one service, keeping its data (the fault tests use these)
#   stack.sh start kafka|redis   start one service again and wait until it answers
#   stack.sh kafka <tool> args...   run a Kafka CLI tool, e.g. `kafka-topics --list --bootstrap-server ...`
#                                   (also deploy/local/kafka.sh); <tool>: an alias in kafka_tool or a main class
#
# Env: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1), REDIS_PORT (6379),
#      MOODSTREAM_CACHE, MOODSTREAM_RUN_DIR (<cache>/run), MOODSTREAM_NO_TOPICS=1 (up skips topics).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../../scripts/env.sh
. "$here/../../scripts/env.sh"

run_dir=${MOODSTREAM_RUN_DIR:-$MOODSTREAM_CACHE/run}
kafka_port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-$((kafka_port + 1))}
redis_port=${REDIS_PORT:-6379}
bootstrap=localhost:$kafka_port
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
kafka_libs=$MOODSTREAM_CACHE/kafka/$kafka_version/libs
kafka_conf=$run_dir/kafka/server.properties
# name:partitions
demo_topics=(customer-messages:6 customer-messages.dlq:3 emotions:3
  replies.chat:3 replies.email:3 replies.sms:3 replies.voice:3 replies.social:3 replies.other:3
  escalations:3 feedback:3)

log() { printf 'stack: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# True when the pid file names a live process whose command line still contains $2: guards
# against a stale pid file whose pid was reused (and against zombies, whose cmdline is empty).
alive() {
  local pid cmdline
  [[ -s $run_dir/$1.pid ]] || return 1
  pid=$(<"$run_dir/$1.pid")
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") && [[ $cmdline =~ $2 ]]
}
kafka_marker() { echo "kafka\.Kafka $kafka_conf"; }
redis_marker() { echo "redis-server [^ ]*:$redis_port( |$)"; }

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

install_kafka() {
  local stamp=$kafka_libs/.installed sum
  sum=$(sha256sum "$here/kafka/pom.xml" | cut -d' ' -f1)
  [[ -f $stamp && $(<"$stamp") == "$sum" ]] && return
  # A JDK, not just a JRE: CreateTopics.java runs from source.
  command -v javac >/dev/null || moodstream_apt_ensure openjdk-17-jdk-headless
  command -v mvn >/dev/null || moodstream_apt_ensure maven
  log "installing Kafka $kafka_version jars from Maven Central into $kafka_libs"
  rm -rf "$kafka_libs.tmp"
  mkdir -p "$(dirname "$kafka_libs")"
  if ! mvn -q -B -f "$here/kafka/pom.xml" -Dmaven.repo.local="$MOODSTREAM_CACHE/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$kafka_libs.tmp" \
    >"$kafka_libs.mvn.log" 2>&1; then
    cat "$kafka_libs.mvn.log" >&2
    die "fetching the Kafka jars failed"
  fi
  echo "$sum" >"$kafka_libs.tmp/.installed"
  rm -rf "$kafka_libs" && mv "$kafka_libs.tmp" "$kafka_libs"
}

# Runs a Kafka CLI tool (alias or main class) with the cached classpath; logs WARN+ to stderr.
kafka_tool() {
  local tool=${1:?usage: stack.sh kafka <tool> args...} class
  shift
  case ${tool%.sh} in
    kafka-topics) class=org.apache.kafka.tools.TopicCommand ;;
    kafka-consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    kafka-share-groups) class=org.apache.kafka.tools.consumer.group.ShareGroupCommand ;;
    kafka-console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    kafka-console-producer) class=org.apache.kafka.tools.ConsoleProducer ;;
    kafka-get-offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
    kafka-configs) class=kafka.admin.ConfigCommand ;;
    kafka-features) class=org.apache.kafka.tools.FeatureCommand ;;
    kafka-metadata-quorum) class=org.apache.kafka.tools.MetadataQuorumCommand ;;
    kafka-delete-records) class=org.apache.kafka.tools.DeleteRecordsCommand ;;
    kafka-storage) class=kafka.tools.StorageTool ;;
    *.*) class=$tool ;; # a main class, or a .java file for the source launcher
    *) die "unknown Kafka tool '$tool' (use an alias from kafka_tool in $0 or a main class)" ;;
  esac
  install_kafka
  # Short-lived JVMs: C1 only and serial GC start noticeably faster on 2 cores.
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
    -Dmoodstream.log.level=warn -Dmoodstream.log.target=SYSTEM_ERR \
    -cp "$kafka_libs/*" "$class" "$@"
}

write_kafka_conf() {
  mkdir -p "$run_dir/kafka"
  cat >"$kafka_conf" <<EOF
# Written by deploy/local/stack.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:$controller_port
listeners=PLAINTEXT://localhost:$kafka_port,CONTROLLER://localhost:$controller_port
advertised.listeners=PLAINTEXT://localhost:$kafka_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$run_dir/kafka/data
num.network.threads=2
num.io.threads=4
# Single node, test-friendly: every internal topic at RF 1, no rebalance delay, no implicit topics.
num.partitions=3
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Lets tests use short session timeouts so a dead worker's partitions move quickly.
group.min.session.timeout.ms=1000
auto.create.topics.enable=false
log.retention.hours=24
EOF
}

kafka_up() {
  if alive kafka "$(kafka_marker)"; then
    log "kafka already running (pid $(<"$run_dir/kafka.pid"), $bootstrap)"
    return
  fi
  port_taken "$kafka_port" && die "port $kafka_port is in use by another process; set KAFKA_PORT"
  port_taken "$controller_port" && die "port $controller_port is in use; set KAFKA_CONTROLLER_PORT"
  install_kafka
  write_kafka_conf
  if [[ ! -f $run_dir/kafka/data/meta.properties ]]; then
    # A KRaft cluster id is 16 random bytes, base64url without padding.
    kafka_tool kafka-storage format -c "$kafka_conf" \
      -t "$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" >/dev/null
  fi
  # setsid: its own session, so Ctrl-C in the shell that ran `up` does not take the broker down.
  # The inner shell writes its own pid then execs java, so the pid file is right even if setsid forks.
  # 9>&- : do not hand the stack lock to the long-lived broker.
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$run_dir/kafka.pid" \
    java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
    -cp "$kafka_libs/*" kafka.Kafka "$kafka_conf" \
    </dev/null >"$run_dir/kafka/server.log" 2>&1 9>&- &
  log "kafka $kafka_version starting on $bootstrap (log: $run_dir/kafka/server.log)"
}

# Waits for the broker's "started" line (the caller then makes a real admin request).
kafka_wait() {
  local i
  for ((i = 0; i < 600; i++)); do
    grep -q 'Kafka Server started' "$run_dir/kafka/server.log" 2>/dev/null && break
    if ((i > 10)) && ! alive kafka "$(kafka_marker)"; then
      tail -n 30 "$run_dir/kafka/server.log" >&2 || true
      die "kafka exited during startup (log: $run_dir/kafka/server.log)"
    fi
    sleep 0.1
  done
  ((i < 600)) || die "kafka did not start within 60 s (log: $run_dir/kafka/server.log)"
}

redis_up() {
  local i
  if alive redis "$(redis_marker)"; then
    log "redis already running (pid $(<"$run_dir/redis.pid"), 127.0.0.1:$redis_port)"
    return
  fi
  command -v redis-server >/dev/null || moodstream_apt_ensure redis-server
  port_taken "$redis_port" && die "port $redis_port is in use by another process; set REDIS_PORT"
  mkdir -p "$run_dir/redis"
  rm -f "$run_dir/redis.pid"
  # No persistence: tests want a clean, fast store. Redis daemonizes and writes the pid file itself.
  redis-server --bind 127.0.0.1 --port "$redis_port" --daemonize yes \
    --pidfile "$run_dir/redis.pid" --dir "$run_dir/redis" --logfile "$run_dir/redis/redis.log" \
    --save '' --appendonly no 9>&-
  for ((i = 0; i < 100; i++)); do
    [[ $(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
  done
  ((i < 100)) || die "redis did not answer PING within 10 s (log: $run_dir/redis/redis.log)"
  log "redis running on 127.0.0.1:$redis_port"
}

# Creates the given name:partitions topics that are missing (none given: only waits for the broker
# to answer). One JVM for all of them: a kafka-topics run per topic costs seconds each.
create_topics() {
  kafka_tool "$here/kafka/CreateTopics.java" "$bootstrap" "$@" | sed 's/^/stack: /' >&2
}

# Stops the process named by $run_dir/$1.pid (if it is still ours) and waits for it to exit.
stop() {
  local name=$1 marker=$2 pid i
  if ! alive "$name" "$marker"; then
    log "$name not running"
    rm -f "$run_dir/$name.pid"
    return
  fi
  pid=$(<"$run_dir/$name.pid")
  kill -TERM "$pid"
  for ((i = 0; i < 300; i++)); do
    alive "$name" "$marker" || break
    sleep 0.1
  done
  if alive "$name" "$marker"; then
    log "$name (pid $pid) still running after 30 s; sending SIGKILL"
    kill -KILL "$pid"
  fi
  rm -f "$run_dir/$name.pid"
  log "$name stopped"
}

status() {
  local rc=0
  if alive kafka "$(kafka_marker)"; then
    echo "kafka: running (pid $(<"$run_dir/kafka.pid"), $bootstrap, Kafka $kafka_version)"
  else
    echo "kafka: stopped"
    rc=3
  fi
  if alive redis "$(redis_marker)"; then
    echo "redis: running (pid $(<"$run_dir/redis.pid"), 127.0.0.1:$redis_port)"
  else
    echo "redis: stopped"
    rc=3
  fi
  return $rc
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
  kafka) kafka_tool "$@"; exit ;;
  status) status; exit ;; # exits 3 unless both run
  up | down | topics | clean) ;;
  start | stop)
    [[ ${1:-} == kafka || ${1:-} == redis ]] || die "usage: stack.sh $cmd kafka|redis"
    ;;
  *) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2 ;;
esac

# Serialise up/down/topics between concurrent callers (e.g. several test processes).
mkdir -p "$run_dir"
exec 9>"$run_dir/stack.lock"
flock 9

case $cmd in
  up)
    kafka_up
    redis_up # starts while the broker boots
    kafka_wait
    # Either way an admin request proves that the broker answers.
    if [[ ${MOODSTREAM_NO_TOPICS:-0} == 1 ]]; then create_topics; else create_topics "${demo_topics[@]}"; fi
    status
    ;;
  down)
    stop kafka "$(kafka_marker)"
    stop redis "$(redis_marker)"
    ;;
  topics)
    alive kafka "$(kafka_marker)" || die "kafka is not running (stack.sh up)"
    create_topics "${demo_topics[@]}"
    ;;
  stop)
    if [[ $1 == kafka ]]; then stop kafka "$(kafka_marker)"; else stop redis "$(redis_marker)"; fi
    ;;
  start)
    if [[ $1 == kafka ]]; then
      kafka_up
      kafka_wait
      create_topics # waits until the broker answers an admin request
    else
      redis_up
    fi
    ;;
  clean)
    stop kafka "$(kafka_marker)"
    stop redis "$(redis_marker)"
    rm -rf "$run_dir/kafka" "$run_dir/redis"
    log "removed Kafka and Redis data under $run_dir"
    ;;
esac
