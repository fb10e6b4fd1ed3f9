#!/usr/bin/env bash
# Local stack for the demo and the integration tests: a single-node KRaft Kafka (jars from Maven
# Central, run on the machine's Java 17), Redis (Debian redis-server) and, with MOODSTREAM_REGISTRY=1,
# a Confluent-compatible Schema Registry (Apicurio Registry from Maven Central, built by
# deploy/local/registry/pom.xml; basic auth, plain HTTP and HTTPS with a CA generated here). Installs
# what is missing, caches it under $MOODSTREAM_CACHE, keeps pid files, logs and data under
# $MOODSTREAM_RUN_DIR.
#
#   stack.sh up        start Kafka and Redis (no-op for what is already running), create demo topics;
#                      also the registry when MOODSTREAM_REGISTRY=1 (scripts/test.sh sets it)
#   stack.sh down      stop what `up` started, by pid file, and wait for it to exit
#   stack.sh status    print running/stopped for each; exit 3 unless both run
#   stack.sh topics    create the demo topics that are missing
#   stack.sh clean     down, then delete Kafka's and Redis's data (topics, offsets, logs)
#   stack.sh stop kafka|redis|registry    stop one service, keeping its data (the fault tests use these)
#   stack.sh start kafka|redis|registry   start one service again and wait until it answers
#   stack.sh kafka <tool> args...   run a Kafka CLI tool, e.g. `kafka-topics --list --bootstrap-server ...`
#                                   (also deploy/local/kafka.sh); <tool>: an alias in kafka_tool or a main class
#
# Env: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1), REDIS_PORT (6379),
#      MOODSTREAM_CACHE, MOODSTREAM_RUN_DIR (<cache>/run), MOODSTREAM_NO_TOPICS=1 (up skips topics),
#      MOODSTREAM_REGISTRY=1, SCHEMA_REGISTRY_PORT (KAFKA_PORT+10, HTTP), SCHEMA_REGISTRY_TLS_PORT
#      (KAFKA_PORT+11, HTTPS). The registry's user, password file and CA: see scripts/env.sh.
#      MOODSTREAM_KAFKA_SECURE=1: two more listeners, SASL_SSL with SCRAM-SHA-512 on
#      KAFKA_SASL_SSL_PORT (KAFKA_PORT+2) and mutual TLS on KAFKA_MTLS_PORT (KAFKA_PORT+3), with a CA,
#      broker and client certificates, the client key's password and the SCRAM user's password
#      generated once under <run dir>/kafka-tls (scripts/test.sh sets it; `up` restarts a broker
#      that runs without them).
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
secure=${MOODSTREAM_KAFKA_SECURE:-0}
sasl_ssl_port=${KAFKA_SASL_SSL_PORT:-$((kafka_port + 2))}
mtls_port=${KAFKA_MTLS_PORT:-$((kafka_port + 3))}
tls_dir=$run_dir/kafka-tls
scram_user=moodstream
# name:partitions
demo_topics=(customer-messages:6 customer-messages.dlq:3 emotions:3
  replies.chat:3 replies.email:3 replies.sms:3 replies.voice:3 replies.social:3 replies.other:3
  escalations:3 feedback:3)

registry_port=${SCHEMA_REGISTRY_PORT:-$((kafka_port + 10))}
registry_tls_port=${SCHEMA_REGISTRY_TLS_PORT:-$((kafka_port + 11))}
registry_dir=$MOODSTREAM_REGISTRY_DIR # scripts/env.sh: password, ca.pem for the tests
registry_home=$MOODSTREAM_CACHE/schema-registry

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
registry_marker() { echo "quarkus.http.port=$registry_port .*schema-registry"; }

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

# Builds the Schema Registry into $registry_home (cached: rebuilt when its sources change).
# Maven Central as served here lacks some Apicurio artifacts (deploy/local/registry/pom.xml says
# which); the two installed into the local Maven repository below stand in for missing ones.
install_registry() {
  local src=$here/registry m2=$MOODSTREAM_CACHE/m2 stamp=$registry_home/.installed sum build
  sum=$(cat "$src"/*.pom "$src/pom.xml" "$src"/src/main/java/io/apicurio/common/apps/config/*.java |
    sha256sum | cut -d' ' -f1)
  [[ -f $stamp && $(<"$stamp") == "$sum" ]] && return
  command -v mvn >/dev/null || moodstream_apt_ensure maven
  command -v javac >/dev/null || moodstream_apt_ensure openjdk-17-jdk-headless
  log "building the Schema Registry (Apicurio) into $registry_home"
  local mvn=(mvn -q -B -Dmaven.repo.local="$m2")
  build=$(mktemp -d)
  {
    # The 3.0.9 app's parent POM is not served: 3.0.7's, under 3.0.9, has the same dependency set.
    "${mvn[@]}" dependency:get -Dartifact=io.apicurio:apicurio-registry:3.0.7:pom -Dtransitive=false &&
      sed 's#<version>3.0.7</version>#<version>3.0.9</version>#' \
        "$m2/io/apicurio/apicurio-registry/3.0.7/apicurio-registry-3.0.7.pom" >"$build/parent.pom" &&
      "${mvn[@]}" install:install-file -Dfile="$build/parent.pom" -DpomFile="$build/parent.pom" \
        -Dpackaging=pom &&
      # The config-index Quarkus extension's deployment half is served at 3.0.6 only.
      "${mvn[@]}" dependency:get -Dartifact=io.apicurio:apicurio-registry-config-index-deployment:3.0.6 \
        -Dtransitive=false &&
      cp "$src/config-index-deployment.pom" "$build/cid.pom" &&
      "${mvn[@]}" install:install-file -DpomFile="$build/cid.pom" \
        -Dfile="$m2/io/apicurio/apicurio-registry-config-index-deployment/3.0.6/apicurio-registry-config-index-deployment-3.0.6.jar" &&
      cp -r "$src/pom.xml" "$src/src" "$build/" &&
      # Build-time Quarkus settings that must outrank the app's own application.properties:
      # all four datasources the app injects become in-memory H2 (the other drivers are not
      # built in), and config-definitions 3.0.6's Info annotation gives way to ours.
      "${mvn[@]}" -f "$build/pom.xml" package -Dmaven.test.skip=true \
        -Dquarkus.datasource.postgresql.db-kind=h2 -Dquarkus.datasource.mysql.db-kind=h2 \
        -Dquarkus.datasource.mssql.db-kind=h2 \
        '-Dquarkus.class-loading.removed-resources."io.apicurio:apicurio-registry-config-definitions"=io/apicurio/common/apps/config/Info.class'
  } >"$build.log" 2>&1 || {
    cat "$build.log" >&2
    rm -rf "$build" "$build.log"
    die "building the Schema Registry failed"
  }
  rm -rf "$registry_home" && mkdir -p "$registry_home"
  cp -r "$build/target/schema-registry-1-runner.jar" "$build/target/lib" "$registry_home/"
  rm -rf "$build" "$build.log"
  echo "$sum" >"$stamp"
}

# A CA and a server certificate for localhost/127.0.0.1, once per run dir.
registry_tls() {
  local tls=$registry_dir/tls
  [[ -s $registry_dir/ca.pem && -s $tls/server.pem ]] && return
  command -v openssl >/dev/null || moodstream_apt_ensure openssl
  mkdir -p "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=moodstream-local-ca \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 30 -out "$tls/server.pem" 2>/dev/null \
    -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n')
  cp "$tls/ca.pem" "$registry_dir/ca.pem"
}

registry_up() {
  if alive registry "$(registry_marker)"; then
    log "schema registry already running (pid $(<"$run_dir/registry.pid"), port $registry_port)"
    return
  fi
  port_taken "$registry_port" && die "port $registry_port is in use; set SCHEMA_REGISTRY_PORT"
  port_taken "$registry_tls_port" && die "port $registry_tls_port is in use; set SCHEMA_REGISTRY_TLS_PORT"
  install_registry
  command -v curl >/dev/null || moodstream_apt_ensure curl
  mkdir -p "$registry_dir"
  chmod 700 "$registry_dir"
  # A random password, kept in a file: the tests read it as a worker reads a mounted secret.
  [[ -s $registry_dir/password ]] || head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$registry_dir/password"
  registry_tls
  # The password reaches the registry through a config file, not its command line (ps shows that).
  printf 'quarkus.security.users.embedded.users.%s=%s\n' "$MOODSTREAM_REGISTRY_USER" \
    "$(<"$registry_dir/password")" >"$registry_dir/users.properties"
  chmod 600 "$registry_dir/password" "$registry_dir/users.properties"
  # In-memory storage: every start is an empty registry.
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$run_dir/registry.pid" \
    java -Xms128m -Xmx384m -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError \
    -Dquarkus.http.port="$registry_port" -Dquarkus.http.host=127.0.0.1 \
    -Dquarkus.http.ssl-port="$registry_tls_port" \
    -Dquarkus.http.ssl.certificate.files="$registry_dir/tls/server.pem" \
    -Dquarkus.http.ssl.certificate.key-files="$registry_dir/tls/server.key" \
    -Dquarkus.security.users.embedded.plain-text=true \
    -Dsmallrye.config.locations="$registry_dir/users.properties" \
    -jar "$registry_home/schema-registry-1-runner.jar" \
    </dev/null >"$registry_dir/server.log" 2>&1 9>&- &
  wait_started registry "the schema registry" "$registry_dir/server.log" 120 20 registry_answers
  log "schema registry on http://127.0.0.1:$registry_port and https://localhost:$registry_tls_port (/apis/ccompat/v7)"
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
    kafka-acls) class=org.apache.kafka.tools.AclCommand ;;
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

# The local CA, the broker's keystore and the client's certificate and encrypted key, made once
# (remove <run dir>/kafka-tls to make new ones). Secrets are random and kept in 0600 files that
# the tests pass on with --kafka-secret-file or read into the environment.
ensure_certs() {
  local d=$tls_dir
  [[ -f $d/.complete ]] && return
  command -v openssl >/dev/null || moodstream_apt_ensure openssl
  log "generating a local CA, broker and client certificates in $d"
  rm -rf "$d" && mkdir -p "$d" && chmod 700 "$d"
  (
    cd "$d"
    umask 077
    openssl rand -hex 16 >keystore-password
    openssl rand -hex 16 >client-key-password
    openssl rand -hex 16 >scram-password
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=moodstream-local-ca \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout broker.key -out broker.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile broker.ext -out broker.pem 2>/dev/null
    openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker \
      -passout file:keystore-password -out broker.p12
    # The client key is encrypted: the tests exercise ssl.key.password.
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -aes-256-cbc \
      -pass file:client-key-password -out client.key 2>/dev/null
    openssl req -new -key client.key -passin file:client-key-password -subj /CN=moodstream-client \
      -out client.csr 2>/dev/null
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -out client.pem 2>/dev/null
    rm -f ./*.csr ./*.ext ca.srl
    touch .complete
  )
}

# Creates (or resets) the SCRAM user on the running broker, through the PLAINTEXT listener.
ensure_scram_user() {
  local stamp=$run_dir/kafka/data/.moodstream-scram sum
  sum=$(sha256sum "$tls_dir/scram-password" | cut -d' ' -f1)
  [[ -f $stamp && $(<"$stamp") == "$sum" ]] && return
  kafka_tool kafka-configs --bootstrap-server "$bootstrap" --alter --entity-type users \
    --entity-name "$scram_user" \
    --add-config "SCRAM-SHA-512=[iterations=4096,password=$(<"$tls_dir/scram-password")]" >/dev/null
  echo "$sum" >"$stamp"
  log "SCRAM-SHA-512 user '$scram_user' ready (password: $tls_dir/scram-password)"
}

write_kafka_conf() {
  local secure_listeners='' secure_map=''
  mkdir -p "$run_dir/kafka"
  if [[ $secure == 1 ]]; then
    secure_listeners=",SASL_SSL://localhost:$sasl_ssl_port,MTLS://localhost:$mtls_port"
    secure_map=",SASL_SSL:SASL_SSL,MTLS:SSL"
  fi
  cat >"$kafka_conf" <<EOF
# Written by deploy/local/stack.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:$controller_port
listeners=PLAINTEXT://localhost:$kafka_port,CONTROLLER://localhost:$controller_port$secure_listeners
advertised.listeners=PLAINTEXT://localhost:$kafka_port$secure_listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT$secure_map
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
  if [[ $secure == 1 ]]; then
    cat >>"$kafka_conf" <<EOF
# MOODSTREAM_KAFKA_SECURE=1: SASL_SSL (SCRAM-SHA-512) and mutual TLS listeners, certificates
# from $tls_dir. An authorizer with no ACLs but the tests' own: the controller, the broker and
# PLAINTEXT clients are ANONYMOUS (super user); authenticated clients may do what no ACL denies.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=true
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls_dir/broker.p12
ssl.keystore.password=$(<"$tls_dir/keystore-password")
ssl.truststore.type=PEM
ssl.truststore.location=$tls_dir/ca.pem
listener.name.mtls.ssl.client.auth=required
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
  fi
}

kafka_up() {
  if alive kafka "$(kafka_marker)"; then
    if [[ $secure == 1 ]] && ! grep -q "^authorizer.class.name=" "$kafka_conf"; then
      log "kafka runs without the secured listeners (MOODSTREAM_KAFKA_SECURE=1): restarting it"
      stop kafka "$(kafka_marker)"
    else
      log "kafka already running (pid $(<"$run_dir/kafka.pid"), $bootstrap)"
      return
    fi
  fi
  port_taken "$kafka_port" && die "port $kafka_port is in use by another process; set KAFKA_PORT"
  port_taken "$controller_port" && die "port $controller_port is in use; set KAFKA_CONTROLLER_PORT"
  if [[ $secure == 1 ]]; then
    port_taken "$sasl_ssl_port" && die "port $sasl_ssl_port is in use; set KAFKA_SASL_SSL_PORT"
    port_taken "$mtls_port" && die "port $mtls_port is in use; set KAFKA_MTLS_PORT"
    ensure_certs
  fi
  install_kafka
  write_kafka_conf
  if [[ ! -f $run_dir/kafka/data/meta.properties ]]; then
    # A KRaft cluster id is 16 random bytes, base64url without padding; one starting with '-'
    # would be read as an option by kafka-storage, so draw again.
    local cluster_id=-
    while [[ $cluster_id == -* ]]; do
      cluster_id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    kafka_tool kafka-storage format -c "$kafka_conf" -t "$cluster_id" >/dev/null
  fi
  # setsid: its own session, so Ctrl-C in the shell that ran `up` does not take the broker down.
  # The inner shell writes its own pid then execs java, so the pid file is right even if setsid forks.
  # 9>&- : do not hand the stack lock to the long-lived broker.
  # Heap: the test suite leaves ~1,400 partitions and its groups; old gen then holds ~230 MB.
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$run_dir/kafka.pid" \
    java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
    -cp "$kafka_libs/*" kafka.Kafka "$kafka_conf" \
    </dev/null >"$run_dir/kafka/server.log" 2>&1 9>&- &
  log "kafka $kafka_version starting on $bootstrap (log: $run_dir/kafka/server.log)"
}

# Waits until `check...` succeeds for service $1 (shown as $2, log $3), up to $4 seconds, polling
# every 0.1 s; after a grace of $5 polls, dies with the log's tail as soon as the process has exited.
wait_started() {
  local name=$1 shown=$2 log=$3 secs=$4 grace=$5 i
  shift 5
  for ((i = 0; i < secs * 10; i++)); do
    "$@" && return 0
    if ((i > grace)) && ! alive "$name" "$("${name}_marker")"; then
      tail -n 30 "$log" >&2 || true
      die "$shown exited during startup (log: $log)"
    fi
    sleep 0.1
  done
  die "$shown did not start within $secs s (log: $log)"
}

# The broker logged its "started" line (the caller then makes a real admin request).
kafka_started() { grep -q 'Kafka Server started' "$run_dir/kafka/server.log" 2>/dev/null; }

# The registry answers 401 without credentials: up, with basic auth on.
registry_answers() {
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$registry_port/apis/ccompat/v7/subjects" || true) == 401 ]]
}

kafka_wait() { wait_started kafka kafka "$run_dir/kafka/server.log" 60 10 kafka_started; }

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

# The log file of service $1.
service_log() {
  case $1 in
    kafka) echo "$run_dir/kafka/server.log" ;;
    redis) echo "$run_dir/redis/redis.log" ;;
    registry) echo "$registry_dir/server.log" ;;
  esac
}

# Stops the process named by $run_dir/$1.pid (if it is still ours) and waits for it to exit.
# A pid file left by a process that is gone means the service died on its own (out of memory,
# files, disk...): says so with the errors at the end of its log, so a failed test run shows why.
stop() {
  local name=$1 marker=$2 pid i
  if ! alive "$name" "$marker"; then
    if [[ -s $run_dir/$name.pid ]]; then
      log "$name had exited on its own (pid $(<"$run_dir/$name.pid")); last errors in $(service_log "$name"):"
      grep -E 'ERROR|FATAL|WARN.*(fail|Fail)|OutOfMemory|Too many open files|No space left|Killed|# ' \
        "$(service_log "$name")" 2>/dev/null | tail -n 25 | sed 's/^/stack:   /' >&2 || true
      log "disk: $(df -h "$run_dir" | awk 'NR == 2 {print $4 " free of " $2}'), open files limit $(ulimit -n)"
    else
      log "$name not running"
    fi
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
    if grep -q "^listeners=.*MTLS://" "$kafka_conf"; then
      echo "kafka: SASL_SSL (SCRAM-SHA-512) on localhost:$sasl_ssl_port, mutual TLS on localhost:$mtls_port, certificates in $tls_dir"
    fi
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
  if alive registry "$(registry_marker)"; then
    echo "registry: running (pid $(<"$run_dir/registry.pid"), http://127.0.0.1:$registry_port, https://localhost:$registry_tls_port)"
  else
    echo "registry: stopped"
  fi
  return $rc
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
  kafka) kafka_tool "$@"; exit ;;
  status) status; exit ;; # exits 3 unless Kafka and Redis run
  up | down | topics | clean) ;;
  start | stop)
    [[ ${1:-} =~ ^(kafka|redis|registry)$ ]] || die "usage: stack.sh $cmd kafka|redis|registry"
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
    if [[ ${MOODSTREAM_REGISTRY:-0} == 1 ]]; then registry_up; fi
    kafka_wait
    # Either way an admin request proves that the broker answers.
    if [[ ${MOODSTREAM_NO_TOPICS:-0} == 1 ]]; then create_topics; else create_topics "${demo_topics[@]}"; fi
    if [[ $secure == 1 ]]; then ensure_scram_user; fi
    status
    ;;
  down)
    stop registry "$(registry_marker)"
    stop kafka "$(kafka_marker)"
    stop redis "$(redis_marker)"
    ;;
  topics)
    alive kafka "$(kafka_marker)" || die "kafka is not running (stack.sh up)"
    create_topics "${demo_topics[@]}"
    ;;
  stop)
    case $1 in
      kafka) stop kafka "$(kafka_marker)" ;;
      redis) stop redis "$(redis_marker)" ;;
      registry) stop registry "$(registry_marker)" ;;
    esac
    ;;
  start)
    if [[ $1 == kafka ]]; then
      kafka_up
      kafka_wait
      create_topics # waits until the broker answers an admin request
      if [[ $secure == 1 ]]; then ensure_scram_user; fi
    elif [[ $1 == redis ]]; then
      redis_up
    else
      registry_up
    fi
    ;;
  clean)
    stop registry "$(registry_marker)"
    stop kafka "$(kafka_marker)"
    stop redis "$(redis_marker)"
    rm -rf "$run_dir/kafka" "$run_dir/redis" "$registry_dir" "$tls_dir"
    log "removed Kafka and Redis data under $run_dir"
    ;;
esac
