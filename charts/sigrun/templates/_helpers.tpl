{{/* Names and labels shared by every template. */}}

{{- define "sigrun.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "sigrun.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "sigrun.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "sigrun.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sigrun.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sigrun.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sigrun.labels" -}}
{{ include "sigrun.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sigrun.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sigrun.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sigrun.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* What the operator may do to JobQueues, runner Deployments, pods, Events and Secrets. */}}
{{- define "sigrun.namespacedRules" -}}
# JobQueues: watched by kopf, which also keeps its finalizer and bookkeeping annotations on them.
- apiGroups: ["sigrun.dev"]
  resources: ["jobqueues"]
  verbs: ["get", "list", "watch", "patch", "update"]
# .status: counters, replicas, conditions, the newest DirtyExit.
- apiGroups: ["sigrun.dev"]
  resources: ["jobqueues/status"]
  verbs: ["get", "patch", "update"]
# Owner references with blockOwnerDeletion on the runner Deployments.
- apiGroups: ["sigrun.dev"]
  resources: ["jobqueues/finalizers"]
  verbs: ["update"]
# One runner Deployment per JobQueue: applied, scaled, garbage-collected with the JobQueue.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Runner pods: watched for deaths; patched only to set controller.kubernetes.io/pod-deletion-cost.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
# DirtyExit, Scaled and readiness Events on JobQueues, counted by patching them.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch", "get", "list"]
# The Redis password named by spec.redis.passwordSecretRef (the operator reads the queues too).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end -}}
