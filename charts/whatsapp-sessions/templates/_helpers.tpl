{{/* The release's name prefix: the release name, unless it already holds the chart name. */}}
{{- define "wa.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wa.operator" -}}{{ include "wa.fullname" . }}-operator{{- end -}}
{{- define "wa.router" -}}{{ include "wa.fullname" . }}-router{{- end -}}

{{/* One operator shard (pass (dict "ctx" $ "index" N)): its suffix ("" when there is one
shard, so a release that never sharded keeps its names) and its peering object's name. */}}
{{- define "wa.shardSuffix" -}}
{{- if gt (int .ctx.Values.operator.shards) 1 }}-shard-{{ .index }}{{ end -}}
{{- end -}}
{{- define "wa.peering" -}}whatsapp-sessions{{ include "wa.shardSuffix" . }}{{- end -}}

{{/* Labels of every object; pass (dict "ctx" $ "component" "operator"). */}}
{{- define "wa.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "wa.selectorLabels" . }}
{{- end -}}

{{- define "wa.selectorLabels" -}}
app.kubernetes.io/name: {{ default .ctx.Chart.Name .ctx.Values.nameOverride }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "wa.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The one Secret whose keys become every session pod's environment (SESSION_SECRET). */}}
{{- define "wa.sessionSecret" -}}
{{- $s3 := .Values.s3.existingSecret -}}
{{- $webhook := .Values.rails.webhookSecret.existingSecret -}}
{{- if and $s3 $webhook (ne $s3 $webhook) -}}
{{- fail "s3.existingSecret and rails.webhookSecret.existingSecret must name the same Secret: the operator gives session pods one Secret (SESSION_SECRET)" -}}
{{- end -}}
{{- default $webhook $s3 -}}
{{- end -}}

{{/* Plain settings shared by the session pods (SESSION_POD_ENV) and the operator. */}}
{{- define "wa.sessionEnv" -}}
{{- $env := dict -}}
{{- range $name, $value := .Values.session.extraEnv }}{{ $_ := set $env $name (toString $value) }}{{ end -}}
{{- $_ := set $env "S3_PREFIX" .Values.s3.prefix -}}
{{- with .Values.s3.bucket }}{{ $_ := set $env "S3_BUCKET" . }}{{ end -}}
{{- with .Values.s3.region }}{{ $_ := set $env "S3_REGION" . }}{{ end -}}
{{- with .Values.s3.endpoint }}{{ $_ := set $env "S3_ENDPOINT_URL" . }}{{ end -}}
{{- if .Values.rails.url -}}
{{- $_ := set $env "RAILS_APP_URL" .Values.rails.url -}}
{{- $_ := set $env "RAILS_APP_PORT" (toString .Values.rails.port) -}}
{{- $_ := set $env "RAILS_APP_ENDPOINT_SCOPE" .Values.rails.scope -}}
{{- end -}}
{{- if .Values.router.publicUrl -}}
{{- $_ := set $env "LINK_BASE_URL" (trimSuffix "/" .Values.router.publicUrl) -}}
{{- $_ := set $env "LINK_TTL_SECONDS" (toString .Values.router.linkTtlSeconds) -}}
{{- end -}}
{{- toJson $env -}}
{{- end -}}

{{/* Defaults of a WhatsAppSession spec (SESSION_DEFAULTS), in the spec's own shape. */}}
{{- define "wa.sessionDefaults" -}}
{{- $storage := dict "size" .Values.session.storage.size -}}
{{- with .Values.session.storage.storageClassName }}{{ $_ := set $storage "storageClassName" . }}{{ end -}}
{{- toJson (dict "resources" .Values.session.resources "storage" $storage "backup" .Values.session.backup "hibernation" .Values.session.hibernation) -}}
{{- end -}}

{{/* Hardened container settings of the operator and the router. */}}
{{- define "wa.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "wa.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The Secret of the pod-auth master keys (generated in pod-auth.yaml unless given). */}}
{{- define "wa.podAuthSecret" -}}
{{- default (printf "%s-pod-auth-keys" (include "wa.fullname" .)) .Values.podAuth.existingSecret -}}
{{- end -}}

{{/* The Secret of the link pages' master keys (generated in pod-auth.yaml unless given). */}}
{{- define "wa.linkKeysSecret" -}}
{{- default (printf "%s-link-keys" (include "wa.fullname" .)) .Values.linkKeys.existingSecret -}}
{{- end -}}

{{/* The Secret of the session pods' scrape tokens (generated unless given). */}}
{{- define "wa.scrapeSecret" -}}
{{- default (printf "%s-metrics-scrape" (include "wa.fullname" .)) .Values.metrics.scrapeTokens.existingSecret -}}
{{- end -}}
