{{/* Names, labels, the service catalog, and the pieces every Bulwark pod shares. */}}

{{- define "bulwark.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bulwark.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bulwark.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "bulwark.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bulwark
{{- end -}}

{{- define "bulwark.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bulwark.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: dict "root" $ "component" NAME. */}}
{{- define "bulwark.componentLabels" -}}
{{ include "bulwark.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bulwark.componentSelector" -}}
{{ include "bulwark.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bulwark.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The services the chart runs, in chain order: module (`python -m`), gRPC port and health service name (or
HTTP port and probe path), the files of the keys Secret each one reads (libs/bulwark/crypto: rings, signing and verify keys; tokens.json
for the gRPC APIs), the shared volumes, and the policies. tests/deploy checks this against
libs/bulwark/stack/catalog.py.
*/}}
{{- define "bulwark.catalog" -}}
ingest-anonymizer:
  module: services.ingest_anonymizer
  keys: [field.json, pseudonym.json, dlq.json]
  policies: [anonymizer]
trainer:
  module: services.trainer
  keys: [kek.json, signing.key, verify.json, dlq.json]
  shared: rw
  checkpoints: true
  strategy: Recreate
quantizer:
  module: services.quantizer
  keys: [kek.json, signing.key, verify.json, dlq.json]
  shared: rw
robustness-guard:
  module: services.robustness_guard
  keys: [kek.json, signing.key, verify.json, dlq.json]
  shared: rw
  policies: [guard]
updater:
  module: services.updater
  grpc: {port: 50053, service: bulwark.api.v1.ModelAdmin, env: BULWARK_UPDATER_PORT}
  keys: [verify.json, dlq.json]
  tokens: true
  shared: ro
  modelRepository: true
  strategy: Recreate
inference:
  module: services.inference
  grpc: {port: 50051, service: bulwark.api.v1.InferenceService, env: BULWARK_INFERENCE_PORT}
  keys: [verify.json]
  tokens: true
  shared: ro
  policies: [guard]
explainer:
  module: services.explainer
  grpc: {port: 50052, service: bulwark.api.v1.ExplainService, env: BULWARK_EXPLAINER_PORT}
  keys: [kek.json, verify.json, dlq.json]
  tokens: true
  shared: ro
console:
  module: services.console
  http: {port: 8080, path: /api/config, env: BULWARK_CONSOLE_PORT, hostEnv: BULWARK_CONSOLE_HOST}
  keys: [verify.json]
  tokens: true
  clientToken: true
  shared: ro
  policies: [guard]
{{- end -}}

{{/* A policy's YAML text: the value when set, else the chart's copy of the default. dict "root" $ "name" N */}}
{{- define "bulwark.policy" -}}
{{- default (.root.Files.Get (printf "files/policies/%s.yaml" .name)) (index .root.Values.policies .name) -}}
{{- end -}}

{{- define "bulwark.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create -}}
{{- printf "%s-%s" (include "bulwark.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{/* Triton's endpoints: the chart's own Deployment, or the external one. */}}
{{- define "bulwark.tritonGrpcUrl" -}}
{{- if .Values.triton.enabled -}}
{{- printf "%s-triton:8001" (include "bulwark.fullname" .) -}}
{{- else -}}
{{- required "triton.external.grpcUrl is required when triton.enabled is false" .Values.triton.external.grpcUrl -}}
{{- end -}}
{{- end -}}

{{- define "bulwark.tritonHttpUrl" -}}
{{- if .Values.triton.enabled -}}
{{- printf "%s-triton:8000" (include "bulwark.fullname" .) -}}
{{- else -}}
{{- required "triton.external.httpUrl is required when triton.enabled is false" .Values.triton.external.httpUrl -}}
{{- end -}}
{{- end -}}

{{/*
The keys a pod reads: only the listed files of the keys Secret (a missing one fails the mount, so a
forgotten key shows up at scheduling, not as a crash), and tokens.json when present.
dict "root" $ "files" LIST "tokens" BOOL
*/}}
{{- define "bulwark.keysVolume" -}}
- name: keys
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ .root.Values.keys.secretName }}
          items:
            {{- range .files }}
            - key: {{ . }}
              path: {{ . }}
            {{- end }}
      {{- if .tokens }}
      - secret:
          name: {{ .root.Values.keys.secretName }}
          optional: true
          items:
            - key: tokens.json
              path: tokens.json
      {{- end }}
{{- end -}}

{{/* Volumes for Secrets of the infrastructure clients (Kafka and Redis TLS, gRPC server TLS). */}}
{{- define "bulwark.tlsVolumes" -}}
{{- with .Values.kafka.tls.secretName }}
- name: kafka-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- with .Values.redis.tls.secretName }}
- name: redis-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- with .Values.grpcTls.secretName }}
- name: grpc-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "bulwark.tlsMounts" -}}
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  mountPath: /run/bulwark/kafka-tls
  readOnly: true
{{- end }}
{{- if .Values.redis.tls.secretName }}
- name: redis-tls
  mountPath: /run/bulwark/redis-tls
  readOnly: true
{{- end }}
{{- if .Values.grpcTls.secretName }}
- name: grpc-tls
  mountPath: /run/bulwark/grpc-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Environment every Bulwark container gets beside the env ConfigMap: its instance id and the passwords. */}}
{{- define "bulwark.commonEnv" -}}
- name: BULWARK_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- with .Values.kafka.sasl.passwordSecret.name }}
- name: BULWARK_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.kafka.sasl.passwordSecret.key }}
{{- end }}
{{- with .Values.redis.passwordSecret.name }}
- name: BULWARK_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.redis.passwordSecret.key }}
{{- end }}
{{- end -}}

{{/* A map of extra environment variables as an env list, sorted by name. */}}
{{- define "bulwark.extraEnv" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end -}}

{{/* Pod-level scheduling: the component's own settings, else the chart-wide ones. dict "root" $ "own" MAP */}}
{{- define "bulwark.scheduling" -}}
{{- with (default .root.Values.nodeSelector .own.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default .root.Values.tolerations .own.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default .root.Values.affinity .own.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* An exec probe that reads this pod's heartbeat. dict "service" NAME "args" LIST "root" $ "startup" BOOL */}}
{{- define "bulwark.heartbeatProbe" -}}
exec:
  command: [bulwark, probe, {{ .service }}{{ range .args }}, {{ . }}{{ end }}]
{{- if .startup }}
periodSeconds: 10
timeoutSeconds: {{ .root.Values.probes.timeoutSeconds }}
failureThreshold: {{ .root.Values.probes.startupFailureThreshold }}
{{- else }}
periodSeconds: {{ .root.Values.probes.periodSeconds }}
timeoutSeconds: {{ .root.Values.probes.timeoutSeconds }}
failureThreshold: {{ .root.Values.probes.failureThreshold }}
{{- end }}
{{- end -}}

{{/* An HTTP probe on the pod's port. dict "path" PATH "root" $ "startup" BOOL */}}
{{- define "bulwark.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: http
{{- if .startup }}
periodSeconds: 10
timeoutSeconds: {{ .root.Values.probes.timeoutSeconds }}
failureThreshold: {{ .root.Values.probes.startupFailureThreshold }}
{{- else }}
periodSeconds: {{ .root.Values.probes.periodSeconds }}
timeoutSeconds: {{ .root.Values.probes.timeoutSeconds }}
failureThreshold: {{ .root.Values.probes.failureThreshold }}
{{- end }}
{{- end -}}

{{/* A grpc.health.v1 probe on the pod's port. dict "port" N "service" NAME "root" $ "startup" BOOL */}}
{{- define "bulwark.grpcProbe" -}}
grpc:
  port: {{ .port }}
  service: {{ .service | quote }}
{{- if .startup }}
periodSeconds: 10
timeoutSeconds: {{ .root.Values.probes.timeoutSeconds }}
failureThreshold: {{ .root.Values.probes.startupFailureThreshold }}
{{- else }}
periodSeconds: {{ .root.Values.probes.periodSeconds }}
timeoutSeconds: {{ .root.Values.probes.timeoutSeconds }}
failureThreshold: {{ .root.Values.probes.failureThreshold }}
{{- end }}
{{- end -}}
