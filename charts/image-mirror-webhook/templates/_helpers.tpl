{{- define "imw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "imw.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "imw.labels" -}}
{{ include "imw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "imw.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "imw.policyConfigMap" -}}
{{ .Values.existingPolicyConfigMap | default (printf "%s-policy" (include "imw.fullname" .)) }}
{{- end -}}

{{- define "imw.tlsSecret" -}}
{{- if eq .Values.certificates.mode "existingSecret" -}}
{{ .Values.certificates.existingSecret.name }}
{{- else -}}
{{ include "imw.fullname" . }}-tls
{{- end -}}
{{- end -}}

{{/* The names the API server may use to reach the Service. */}}
{{- define "imw.dnsNames" -}}
{{- $svc := include "imw.fullname" . -}}
{{ $svc }},{{ $svc }}.{{ .Release.Namespace }},{{ $svc }}.{{ .Release.Namespace }}.svc,{{ $svc }}.{{ .Release.Namespace }}.svc.cluster.local
{{- end -}}

{{/* The ConfigMap with the client CA (key ca.crt), or nothing when client authentication is off. */}}
{{- define "imw.clientCaConfigMap" -}}
{{- if .Values.clientAuth.existingConfigMap -}}
{{ .Values.clientAuth.existingConfigMap }}
{{- else if .Values.clientAuth.caCert -}}
{{ include "imw.fullname" . }}-client-ca
{{- end -}}
{{- end -}}
