{{/*
Names. The chart's objects are "<fullname>-operator" (Deployment, ServiceAccount, RBAC) and
"<fullname>-operator-metrics" (Service), where fullname is the release name, or
"<release>-loam" when the release name does not contain "loam" (fullnameOverride wins).
*/}}
{{- define "loam.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loam.fullname" -}}
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

{{- define "loam.operatorName" -}}
{{- printf "%s-operator" (include "loam.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loam.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "loam.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loam.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "loam.labels" -}}
helm.sh/chart: {{ include "loam.chart" . }}
{{ include "loam.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: loam
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator's ServiceAccount: the one the chart creates, or serviceAccount.name (which must exist when create is false). */}}
{{- define "loam.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "loam.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image of the operator, and the image DataStores' nodes default to: the same one. */}}
{{- define "loam.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The name of the leader-election Lease (in the release namespace). */}}
{{- define "loam.leaseId" -}}
{{- .Values.leaderElection.id }}
{{- end }}
