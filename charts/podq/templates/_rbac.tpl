{{/* What the operator needs in the namespaces it manages (rules of its ClusterRole or of each Role). */}}
{{- define "podq.operator.rules" }}
# podq Job and CronJob resources: watch, patch (kopf's finalizer and annotations), the
# status subresource, and create/delete Jobs (CronJob children, ttl clean-up).
- apiGroups: ["podq.dev"]
  resources: ["jobs", "cronjobs"]
  verbs: ["get", "list", "watch", "patch", "create", "delete"]
- apiGroups: ["podq.dev"]
  resources: ["jobs/status", "cronjobs/status"]
  verbs: ["get", "patch"]
# CronJob children carry blockOwnerDeletion owner references: clusters that enforce
# owner-reference permissions (OwnerReferencesPermissionEnforcement) require this.
- apiGroups: ["podq.dev"]
  resources: ["cronjobs/finalizers"]
  verbs: ["update"]
# Events about the resources it handles.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Worker Deployments (label podq.dev/queue) are watched where Jobs are; acting on them
# (scale, pod annotation) is granted only where worker pools run: podq.operator.workerRules.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/* What the operator needs where worker pools run (a Role in each worker namespace). */}}
{{- define "podq.operator.workerRules" }}
# Autoscaling of worker Deployments on queue depth: the scale subresource only.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
# The pod-deletion-cost annotation, so idle worker pods go first on scale-down. Written
# through pods/status, whose strategy keeps the spec: no right to patch pods, so never
# a changed image or command (docs/security.md).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
# Read-only: a Deployment that an HPA or a KEDA ScaledObject also scales is left alone.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["list"]
{{- end }}

{{/* Namespaces where worker pools run: the release namespace when the chart renders a
pool, plus operator.workerNamespaces (pools deployed by other means); in namespaced mode
only those the operator watches (it never sees a Deployment elsewhere). */}}
{{- define "podq.workerNamespaces" -}}
{{- $ns := list -}}
{{- if (include "podq.worker.pools" . | fromYaml).pools -}}
{{- $ns = append $ns .Release.Namespace -}}
{{- end -}}
{{- $ns = concat $ns .Values.operator.workerNamespaces -}}
{{- $watched := (include "podq.watchNamespaces" . | fromYaml).namespaces -}}
{{- if $watched -}}
{{- $in := list -}}
{{- range $ns -}}
{{- if has . $watched -}}
{{- $in = append $in . -}}
{{- end -}}
{{- end -}}
{{- $ns = $in -}}
{{- end -}}
{{- toYaml (dict "namespaces" (uniq $ns)) -}}
{{- end -}}
