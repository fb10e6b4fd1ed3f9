#!/usr/bin/env bash
# Runs a Kafka CLI tool with the local stack's cached jars, e.g.
#   deploy/local/kafka.sh kafka-topics --bootstrap-server localhost:9092 --list
#   deploy/local/kafka.sh kafka-consumer-groups --bootstrap-server localhost:9092 --describe --group g
# Aliases: see kafka_tool in stack.sh; a fully qualified main class works too.
exec "$(dirname "${BASH_SOURCE[0]}")/stack.sh" kafka "$@"
