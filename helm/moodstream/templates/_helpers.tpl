{{/* Chart name, truncated to the 63 characters Kubernetes allows in names and labels. */}}
{{- define "moodstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full resource name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "moodstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "moodstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "moodstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "moodstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "moodstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: worker
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "moodstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "moodstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: digest wins; the default tag is appVersion, plus "-cpu" for the CPU image. */}}
{{- define "moodstream.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- $tag := .Values.image.tag | default (printf "%s%s" .Chart.AppVersion (ternary "" "-cpu" .Values.gpu.enabled)) }}
{{- printf "%s:%s" .Values.image.repository (toString $tag) }}
{{- end }}
{{- end }}

{{- define "moodstream.modelVariant" -}}
{{- .Values.model.variant | default (ternary "fp16" "int8" .Values.gpu.enabled) }}
{{- end }}

{{- define "moodstream.executionProvider" -}}
{{- .Values.model.executionProvider | default (ternary "cuda" "cpu" .Values.gpu.enabled) }}
{{- end }}

{{/* librdkafka settings as a dict: derived from kafka.sasl / kafka.tls, then kafka.options on top. */}}
{{- define "moodstream.kafkaOptionsDict" -}}
{{- $k := .Values.kafka }}
{{- $o := dict }}
{{- if $k.sasl.enabled }}
{{- $_ := set $o "security.protocol" (ternary "SASL_SSL" "SASL_PLAINTEXT" $k.tls.enabled) }}
{{- $_ := set $o "sasl.mechanism" $k.sasl.mechanism }}
{{- $_ := set $o "sasl.username" $k.sasl.username }}
{{- else if $k.tls.enabled }}
{{- $_ := set $o "security.protocol" "SSL" }}
{{- end }}
{{- if $k.tls.enabled }}
{{- if $k.tls.caKey }}{{ $_ := set $o "ssl.ca.location" (printf "%s/ca.crt" $k.tls.mountPath) }}{{ end }}
{{- if $k.tls.certKey }}{{ $_ := set $o "ssl.certificate.location" (printf "%s/tls.crt" $k.tls.mountPath) }}{{ end }}
{{- if $k.tls.keyKey }}{{ $_ := set $o "ssl.key.location" (printf "%s/tls.key" $k.tls.mountPath) }}{{ end }}
{{- end }}
{{- range $key, $value := $k.options }}
{{- $_ := set $o $key (toString $value) }}
{{- end }}
{{- toYaml $o }}
{{- end }}

{{/* MOODSTREAM_KAFKA_PROPERTIES: one key=value per line (values may contain commas), sorted for a
stable ConfigMap checksum. */}}
{{- define "moodstream.kafkaProperties" -}}
{{- $o := include "moodstream.kafkaOptionsDict" . | fromYaml }}
{{- $pairs := list }}
{{- range $key := keys $o | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $key (toString (index $o $key))) }}
{{- end }}
{{- join "\n" $pairs }}
{{- end }}

{{/* Termination grace period: drain timeout rounded up to seconds + 10, or the validated explicit value. */}}
{{- define "moodstream.terminationGracePeriodSeconds" -}}
{{- $drainMs := int64 .Values.drainTimeoutMs }}
{{- $grace := toString .Values.terminationGracePeriodSeconds }}
{{- if or (eq $grace "") (eq $grace "<nil>") }}
{{- add (div (add $drainMs 999) 1000) 10 }}
{{- else }}
{{- if lt (mul (int64 $grace) 1000) (add $drainMs 5000) }}
{{- fail (printf "terminationGracePeriodSeconds (%s) must exceed drainTimeoutMs (%d ms) by at least 5 s, or the kubelet kills the worker before its final flush and offset commit; raise it or leave it empty to derive it" $grace $drainMs) }}
{{- end }}
{{- int64 $grace }}
{{- end }}
{{- end }}

{{/* Reply templates content given to the chart: inline value, else the chart's files/replies.yaml. */}}
{{- define "moodstream.repliesContent" -}}
{{- .Values.replies.templates | default (.Files.Get "files/replies.yaml") }}
{{- end }}

{{/* Name of the ConfigMap carrying replies.yaml, empty when the image's built-in file is used. */}}
{{- define "moodstream.repliesConfigMap" -}}
{{- if .Values.replies.existingConfigMap }}
{{- .Values.replies.existingConfigMap }}
{{- else if include "moodstream.repliesContent" . }}
{{- printf "%s-replies" (include "moodstream.fullname" .) }}
{{- end }}
{{- end }}

{{/* Name of the ConfigMap carrying input-mapping.yaml, empty when there is no input mapping. */}}
{{- define "moodstream.inputMappingConfigMap" -}}
{{- if .Values.inputMapping.existingConfigMap }}
{{- .Values.inputMapping.existingConfigMap }}
{{- else if .Values.inputMapping.mapping }}
{{- printf "%s-input-mapping" (include "moodstream.fullname" .) }}
{{- end }}
{{- end }}

{{/* KEDA's name for the SASL mechanism. */}}
{{- define "moodstream.kedaSasl" -}}
{{- get (dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512") .Values.kafka.sasl.mechanism }}
{{- end }}

{{/* Checks that values.schema.json cannot express; rendering fails with a message naming the fix. */}}
{{- define "moodstream.validate" -}}
{{- $k := .Values.kafka }}
{{- $keda := .Values.autoscaling.keda }}
{{- $hpa := .Values.autoscaling.hpa }}
{{- if and $keda.enabled $hpa.enabled }}
{{- fail "autoscaling.keda.enabled and autoscaling.hpa.enabled are mutually exclusive: both would drive the Deployment's replicas" }}
{{- end }}
{{- $partitions := int64 $k.partitions }}
{{- if and $keda.enabled (gt (int64 $keda.minReplicaCount) (int64 $keda.maxReplicaCount)) }}
{{- fail "autoscaling.keda.minReplicaCount must not exceed maxReplicaCount" }}
{{- end }}
{{- if and $keda.enabled (gt $partitions 0) (gt (int64 $keda.maxReplicaCount) $partitions) }}
{{- fail (printf "autoscaling.keda.maxReplicaCount (%d) exceeds kafka.partitions (%d): a consumer group gives each partition to one member, extra replicas would idle" (int64 $keda.maxReplicaCount) $partitions) }}
{{- end }}
{{- if and $hpa.enabled (gt $partitions 0) (gt (int64 $hpa.maxReplicas) $partitions) }}
{{- fail (printf "autoscaling.hpa.maxReplicas (%d) exceeds kafka.partitions (%d): extra consumers would idle" (int64 $hpa.maxReplicas) $partitions) }}
{{- end }}
{{- if and $k.sasl.enabled (not $k.sasl.existingSecret) }}
{{- fail "kafka.sasl.enabled needs kafka.sasl.existingSecret (the Secret holding the SASL password)" }}
{{- end }}
{{- if and $k.sasl.enabled (not $k.sasl.username) }}
{{- fail "kafka.sasl.enabled needs kafka.sasl.username" }}
{{- end }}
{{- if and $k.tls.enabled (not $k.tls.existingSecret) (or $k.tls.caKey $k.tls.certKey $k.tls.keyKey) }}
{{- fail "kafka.tls needs kafka.tls.existingSecret when caKey, certKey or keyKey is set (set caKey to \"\" to use the image's CA store)" }}
{{- end }}
{{- if and $k.tls.keyPasswordKey (not $k.tls.keyKey) }}
{{- fail "kafka.tls.keyPasswordKey needs kafka.tls.keyKey (the encrypted key it unlocks)" }}
{{- end }}
{{- if and $k.oauthbearer.existingSecret (not $k.oauthbearer.clientSecretKey) }}
{{- fail "kafka.oauthbearer.existingSecret needs kafka.oauthbearer.clientSecretKey" }}
{{- end }}
{{- if ne (empty $k.tls.certKey) (empty $k.tls.keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together (mutual TLS needs both)" }}
{{- end }}
{{- range $key, $value := $k.options }}
{{- if contains "\n" (toString $value) }}
{{- fail (printf "kafka.options.%s contains a line break, which MOODSTREAM_KAFKA_PROPERTIES cannot carry" $key) }}
{{- end }}
{{- if regexMatch "(?i)password|secret" $key }}
{{- fail (printf "kafka.options.%s looks like a secret; kafka.options is stored in a ConfigMap. Use kafka.sasl.existingSecret, kafka.tls.keyPasswordKey or kafka.oauthbearer.existingSecret" $key) }}
{{- end }}
{{- end }}
{{- if hasKey $k.options "session.timeout.ms" }}
{{- fail "set the session timeout with kafka.sessionTimeoutMs, not kafka.options.session.timeout.ms (the worker checks it against the drain timeout)" }}
{{- end }}
{{- if ge (int64 .Values.drainTimeoutMs) (int64 $k.sessionTimeoutMs) }}
{{- fail (printf "drainTimeoutMs (%d) must be below the consumer session timeout (kafka.sessionTimeoutMs, %d ms): the group would evict the draining worker before it commits" (int64 .Values.drainTimeoutMs) (int64 $k.sessionTimeoutMs)) }}
{{- end }}
{{- range $key, $value := .Values.extraConfig }}
{{- if not (regexMatch "^[A-Z_][A-Z0-9_]*$" $key) }}
{{- fail (printf "extraConfig.%s is not an environment variable name" $key) }}
{{- end }}
{{- if regexMatch "PASSWORD|SECRET|TOKEN" $key }}
{{- fail (printf "extraConfig.%s looks like a secret; extraConfig is stored in a ConfigMap. Use extraEnv with a secretKeyRef" $key) }}
{{- end }}
{{- end }}
{{- if regexMatch "^[a-z]+://[^/]*@" .Values.kafka.schemaRegistryUrl }}
{{- fail "kafka.schemaRegistryUrl must not carry credentials: set kafka.schemaRegistryAuth.username and existingSecret" }}
{{- end }}
{{- if regexMatch "^[a-z]+://[^/@]*:[^/@]*@" .Values.redis.url }}
{{- fail "redis.url must not carry a password: put it in a Secret and set redis.existingSecret" }}
{{- end }}
{{- end }}

{{/*
KEDA scalingModifiers formula: the sum of the per-topic lag triggers (lag0 + lag1 + ...).
*/}}
{{- define "moodstream.kedaLagFormula" -}}
{{- $terms := list -}}
{{- range $i, $_ := .Values.kafka.topics -}}
{{- $terms = append $terms (printf "lag%d" $i) -}}
{{- end -}}
{{- join " + " $terms -}}
{{- end -}}
