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
# Autoscaling of worker Deployments on queue depth.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
# The pod-deletion-cost annotation, so idle worker pods go first on scale-down.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# Read-only: a Deployment that an HPA or a KEDA ScaledObject also scales is left alone.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["list"]
{{- end }}
