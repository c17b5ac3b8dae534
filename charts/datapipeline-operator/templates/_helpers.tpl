{{/* Chart name, overridable. */}}
{{- define "datapipeline-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's resources. */}}
{{- define "datapipeline-operator.fullname" -}}
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

{{/* Labels selecting the operator pod. */}}
{{- define "datapipeline-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "datapipeline-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The selector labels as key=value,... (the operator names its pods in NetworkPolicies). */}}
{{- define "datapipeline-operator.selectorLabelList" -}}
{{- $pairs := list }}
{{- range $key, $value := include "datapipeline-operator.selectorLabels" . | fromYaml }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* Labels of every resource of the chart. */}}
{{- define "datapipeline-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "datapipeline-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: datapipeline
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "datapipeline-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "datapipeline-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "datapipeline-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "datapipeline-operator.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtimeImage.repository (default .Chart.AppVersion .Values.runtimeImage.tag) }}
{{- end }}

{{- define "datapipeline-operator.leaseName" -}}
{{- default (include "datapipeline-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The namespaces the operator watches, comma-separated (`watchNamespaces` and the
single `watchNamespace`, each once); empty: all namespaces. */}}
{{- define "datapipeline-operator.watchNamespaces" -}}
{{- $all := concat (.Values.watchNamespaces | default list) (list .Values.watchNamespace) }}
{{- join "," (compact (uniq $all)) }}
{{- end }}
