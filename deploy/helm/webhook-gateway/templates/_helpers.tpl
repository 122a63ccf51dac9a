{{/* Names and labels. */}}
{{- define "wg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wg.fullname" -}}
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

{{- define "wg.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "wg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include "wg.selector" (list . "gateway") */}}
{{- define "wg.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "wg.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "wg.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The config sections each process reads. */}}
{{- define "wg.gatewayConfig" -}}
{{- $c := .Values.config -}}
{{- $out := dict "kafka" $c.kafka "sources" $c.sources -}}
{{- if $c.topics }}{{ $_ := set $out "topics" $c.topics }}{{ end -}}
{{- if $c.gateway }}{{ $_ := set $out "gateway" (deepCopy $c.gateway) }}{{ end -}}
{{- if include "wg.spool" . -}}
{{- /* The journal lives on the pod's own volume (gateway-statefulset mode). */ -}}
{{- $_ := set $out.gateway.spool "path" "/var/lib/webhook-gateway/spool" -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* "true" when the durable spool is enabled: the gateway then runs as a StatefulSet,
     each pod with its own volume, so a restarted pod drains what it journaled. */}}
{{- define "wg.spool" -}}
{{- $g := .Values.config.gateway | default dict -}}
{{- $spool := $g.spool | default dict -}}
{{- if $spool.enabled }}true{{ end -}}
{{- end -}}

{{- define "wg.gatewayKind" -}}
{{- if include "wg.spool" . }}StatefulSet{{ else }}Deployment{{ end -}}
{{- end -}}

{{- define "wg.consumersConfig" -}}
{{- $c := .Values.config -}}
{{- toYaml (dict "kafka" $c.kafka "consumers" $c.consumers) -}}
{{- end -}}

{{/* env entries from Secrets: include "wg.secretEnv" list-of-{env,secretName,key} */}}
{{- define "wg.secretEnv" -}}
{{- range . }}
- name: {{ required "each secret env entry needs `env`" .env }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "secret env %s needs `secretName`" .env) .secretName }}
      key: {{ required (printf "secret env %s needs `key`" .env) .key }}
{{- end }}
{{- end -}}

{{- define "wg.commonEnv" -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: LOG_FORMAT
  value: json
{{- end -}}

{{/* Seconds the gateway needs after SIGTERM: delay + grace, plus time to flush. */}}
{{- define "wg.gatewayGrace" -}}
{{- $g := .Values.config.gateway | default dict -}}
{{- $need := add (int (ceil (default 0 $g.shutdown_delay_seconds))) (int (ceil (default 30 $g.shutdown_grace_seconds))) -}}
{{- $set := .Values.gateway.terminationGracePeriodSeconds -}}
{{- if $set -}}
{{- if le (int $set) $need -}}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%v) must be above config.gateway shutdown_delay_seconds + shutdown_grace_seconds (%d), or in-flight webhooks are cut off" $set $need) -}}
{{- end -}}
{{- int $set -}}
{{- else -}}
{{- add $need 15 -}}
{{- end -}}
{{- end -}}

{{/* Seconds the consumers need after SIGTERM: grace, plus commit and leaving the group. */}}
{{- define "wg.consumersGrace" -}}
{{- $need := int (ceil (default 30 .Values.config.consumers.shutdown_grace_seconds)) -}}
{{- $set := .Values.consumers.terminationGracePeriodSeconds -}}
{{- if $set -}}
{{- if le (int $set) $need -}}
{{- fail (printf "consumers.terminationGracePeriodSeconds (%v) must be above config.consumers.shutdown_grace_seconds (%d), or deliveries in flight are cut off" $set $need) -}}
{{- end -}}
{{- int $set -}}
{{- else -}}
{{- add $need 15 -}}
{{- end -}}
{{- end -}}

{{/* Partitions of the consumed topics (a topic missing from config.topics gets the
     default of `topics create`, 6). The group's round-robin assignor gives every member
     partitions only while members <= the total. */}}
{{- define "wg.consumedPartitions" -}}
{{- $total := 0 -}}
{{- range $t := .Values.config.consumers.topics -}}
{{- $p := 6 -}}
{{- range $.Values.config.topics -}}
{{- if eq .name $t -}}{{- $p = int (default 6 .partitions) -}}{{- end -}}
{{- end -}}
{{- $total = add $total $p -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{- define "wg.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wg.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Topology spread constraints of one component, each selecting that component's pods
     unless it says otherwise: include "wg.spread" (list . "gateway" constraints) */}}
{{- define "wg.spread" -}}
{{- $ := index . 0 -}}
{{- $selector := include "wg.selector" (list $ (index . 1)) | fromYaml -}}
{{- $items := list -}}
{{- range index . 2 -}}
{{- $items = append $items (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" $selector))) -}}
{{- end -}}
{{- toYaml $items -}}
{{- end -}}

{{/* A digest of the Secrets a component reads (looked up in the cluster at install and
     upgrade; empty under `helm template`): a changed secret rolls the pods on the next
     `helm upgrade`. include "wg.secretsChecksum" (list . refs) */}}
{{- define "wg.secretsChecksum" -}}
{{- $ := index . 0 -}}
{{- $seen := list -}}
{{- range index . 1 -}}
{{- $secret := lookup "v1" "Secret" $.Release.Namespace .secretName -}}
{{- $seen = append $seen (printf "%s=%s" .secretName (toJson (default dict $secret.data))) -}}
{{- end -}}
{{- $seen | sortAlpha | join ";" | sha256sum -}}
{{- end -}}
