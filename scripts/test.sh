#!/usr/bin/env bash
# The test command (README, CI): installs what the build and the tests need, starts the local stack
# (Kafka + Redis), runs every test target against it, then stops the stack. Exits with cargo's status.
#
#   scripts/test.sh [cargo test args...]   e.g. scripts/test.sh --test pipeline
#   MOODSTREAM_KEEP_STACK=1                keep the running stack and its data, and leave it running
#                                          afterwards (faster reruns); otherwise the broker starts empty
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source-path=SCRIPTDIR source=env.sh
. scripts/env.sh

moodstream_build_deps
scripts/setup-ort.sh >/dev/null
# Only the console's browser test needs Chromium: the whole suite, or a run naming it.
if (($# == 0)) || [[ " $* " == *console* ]]; then
  moodstream_browser_deps
fi

if [[ ${MOODSTREAM_KEEP_STACK:-0} != 1 ]]; then
  # Set before `up` so a half-started stack is stopped too; the script's exit status is kept.
  # `down` reports a service that died during the run, with the errors from its log.
  trap 'deploy/local/stack.sh down' EXIT
  # Every run starts from an empty broker: the suite creates a few thousand partitions, and a
  # cache kept between runs (CI) would otherwise pile them up run after run.
  deploy/local/stack.sh clean
fi
# The integration tests need every service: the Schema Registry and the secured listeners
# (SASL_SSL, mutual TLS) for tests/schema_registry.rs and tests/secure_kafka.rs.
export MOODSTREAM_KAFKA_SECURE=${MOODSTREAM_KAFKA_SECURE:-1}
MOODSTREAM_REGISTRY=1 deploy/local/stack.sh up

# Static checks of the deployment files; written separately, optional here.
if [[ -x deploy/validate.sh ]]; then
  deploy/validate.sh
fi

# Every target unless the arguments pick some (`--test X`, `--lib`, ...): cargo runs all of them when
# --all-targets comes with a selection.
targets=(--all-targets)
for arg in "$@"; do
  case $arg in --lib | --bins | --bin | --bin=* | --test | --test=* | --tests | --bench | --benches | --examples | --doc) targets=() ;; esac
done
# The feedback retrain's gate, head surgery and feedback parsing (models/train/test_*.py, light venv, ~20 s).
if (($# == 0)); then models/train/setup.sh retrain; "$MOODSTREAM_CACHE/venv-retrain/bin/python" -m unittest discover -s models/train -p 'test_*.py'; fi
cargo test --locked "${targets[@]}" "$@"
