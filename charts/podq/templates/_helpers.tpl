{{/* Names */}}
{{- define "podq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podq.fullname" -}}
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

{{- define "podq.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object */}}
{{- define "podq.labels" -}}
helm.sh/chart: {{ include "podq.chart" . }}
app.kubernetes.io/name: {{ include "podq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: podq
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "operator") */}}
{{- define "podq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podq.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "podq.operator.fullname" -}}
{{- printf "%s-operator" (include "podq.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podq.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "podq.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "podq.worker.serviceAccountName" -}}
{{- if .Values.workers.serviceAccount.create -}}
{{- default (printf "%s-worker" (include "podq.fullname" .) | trunc 63 | trimSuffix "-") .Values.workers.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.workers.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "podq.redis.fullname" -}}
{{- printf "%s-redis" (include "podq.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* image reference: (dict "image" .Values.x.image "root" $) */}}
{{- define "podq.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The Redis URL before the password is inserted, scheme forced to rediss:// with TLS and
the CA file appended as redis-py's `ssl_ca_certs` query argument.
*/}}
{{- define "podq.redis.baseUrl" -}}
{{- $url := .Values.redis.url -}}
{{- if .Values.redis.embedded.enabled -}}
{{- $url = printf "redis://%s:6379/0" (include "podq.redis.fullname" .) -}}
{{- end -}}
{{- if not $url -}}
{{- fail "podq: set redis.url (e.g. redis://my-redis:6379/0), or redis.urlSecret.name, or redis.embedded.enabled=true" -}}
{{- end -}}
{{- if not (regexMatch "^rediss?(\\+cluster)?://" $url) -}}
{{- fail (printf "podq: redis.url must start with redis://, rediss://, redis+cluster:// or rediss+cluster://, got %q" $url) -}}
{{- end -}}
{{- if and (regexMatch "^rediss?(\\+cluster)?://[^/@]*:[^/@]*@" $url) -}}
{{- fail "podq: redis.url holds a password; put it in a Secret and set redis.password.existingSecret (or redis.urlSecret)" -}}
{{- end -}}
{{- if .Values.redis.tls.enabled -}}
{{- if .Values.redis.embedded.enabled -}}
{{- fail "podq: redis.tls is for an external Redis; the embedded Redis serves plain TCP inside the cluster" -}}
{{- end -}}
{{- $url = regexReplaceAll "^redis(\\+cluster)?://" $url "rediss${1}://" -}}
{{- if .Values.redis.tls.caSecret -}}
{{- $sep := ternary "&" "?" (contains "?" $url) -}}
{{- $url = printf "%s%sssl_ca_certs=/etc/podq/redis-tls/%s" $url $sep .Values.redis.tls.caKey -}}
{{- end -}}
{{- end -}}
{{- $url -}}
{{- end -}}

{{/* The name of the Secret holding the Redis password, if any */}}
{{- define "podq.redis.passwordSecret" -}}
{{- if .Values.redis.embedded.enabled -}}
{{- if .Values.redis.embedded.auth -}}
{{- default (include "podq.redis.fullname" .) .Values.redis.embedded.existingSecret -}}
{{- end -}}
{{- else -}}
{{- .Values.redis.password.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "podq.redis.passwordKey" -}}
{{- if .Values.redis.embedded.enabled -}}
{{- if .Values.redis.embedded.existingSecret -}}
{{- .Values.redis.embedded.existingSecretKey -}}
{{- else -}}
redis-password
{{- end -}}
{{- else -}}
{{- .Values.redis.password.key -}}
{{- end -}}
{{- end -}}

{{/* env entries giving PODQ_REDIS_URL to a container */}}
{{- define "podq.redis.env" -}}
{{- if .Values.redis.urlSecret.name }}
- name: PODQ_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.urlSecret.name }}
      key: {{ .Values.redis.urlSecret.key }}
{{- else }}
{{- $url := include "podq.redis.baseUrl" . -}}
{{- $secret := include "podq.redis.passwordSecret" . -}}
{{- if $secret }}
- name: PODQ_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "podq.redis.passwordKey" . }}
{{- /* insert ":$(PODQ_REDIS_PASSWORD)@" after the scheme and the optional user name */}}
{{- if regexMatch "^rediss?(\\+cluster)?://[^/@]*@" $url }}
{{- $url = regexReplaceAll "^(rediss?(\\+cluster)?://[^/@]*)@" $url "${1}:$$(PODQ_REDIS_PASSWORD)@" }}
{{- else }}
{{- $url = regexReplaceAll "^(rediss?(\\+cluster)?://)" $url "${1}:$$(PODQ_REDIS_PASSWORD)@" }}
{{- end }}
{{- end }}
- name: PODQ_REDIS_URL
  value: {{ $url | quote }}
{{- end }}
{{- end -}}

{{/* volume and mount for the Redis CA, when set */}}
{{- define "podq.redis.tlsVolumes" -}}
{{- if and .Values.redis.tls.enabled .Values.redis.tls.caSecret }}
- name: redis-tls
  secret:
    secretName: {{ .Values.redis.tls.caSecret }}
    items:
      - key: {{ .Values.redis.tls.caKey }}
        path: {{ .Values.redis.tls.caKey }}
{{- end }}
{{- end -}}

{{- define "podq.redis.tlsMounts" -}}
{{- if and .Values.redis.tls.enabled .Values.redis.tls.caSecret }}
- name: redis-tls
  mountPath: /etc/podq/redis-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* The worker pools: the default one (if enabled) and workers.pools, each merged over
the top-level worker settings. Returns YAML: {pools: [...]} */}}
{{- define "podq.worker.pools" -}}
{{- $w := .Values.workers -}}
{{- $base := omit $w "pools" "enabled" "serviceAccount" "podDisruptionBudget" -}}
{{- $pools := list -}}
{{- if $w.enabled -}}
{{- $pools = append $pools (merge (dict "name" "" ) (deepCopy $base)) -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $i, $p := $w.pools -}}
{{- if not $p.name -}}
{{- fail (printf "podq: workers.pools[%d] needs a name" $i) -}}
{{- end -}}
{{- if hasKey $seen $p.name -}}
{{- fail (printf "podq: workers.pools has two pools named %q" $p.name) -}}
{{- end -}}
{{- $_ := set $seen $p.name true -}}
{{- $pool := deepCopy $base -}}
{{- range $key, $value := $p -}}
{{- if and (has $key (list "image" "autoscaling" "livenessProbe" "metrics")) (kindIs "map" $value) -}}
{{- /* partial overrides of these merge: {autoscaling: {enabled: false}} keeps the bounds */ -}}
{{- $_ := set $pool $key (mergeOverwrite (deepCopy (index $base $key)) (deepCopy $value)) -}}
{{- else -}}
{{- /* everything else (resources, nodeSelector, affinity, ...) replaces the default */ -}}
{{- $_ := set $pool $key (deepCopy $value) -}}
{{- end -}}
{{- end -}}
{{- if not (hasKey $p "queue") -}}
{{- $_ := set $pool "queue" $p.name -}}
{{- end -}}
{{- if not (hasKey $p "limits") -}}
{{- /* limits are a queue's: another pool's queue has other functions */ -}}
{{- $_ := unset $pool "limits" -}}
{{- end -}}
{{- $pools = append $pools $pool -}}
{{- end -}}
{{- toYaml (dict "pools" $pools) -}}
{{- end -}}

{{/* `podq worker --limit` arguments of a pool's limits (values `limits`, docs/limits.md):
none when null (the limits in Redis are left alone), --no-limits when empty. */}}
{{- define "podq.worker.limitArgs" -}}
{{- if kindIs "map" .limits -}}
{{- if not .limits }}
- --no-limits
{{- end -}}
{{- range $name, $limit := .limits -}}
{{- $parts := list -}}
{{- if hasKey $limit "concurrency" -}}
{{- $parts = append $parts (printf "concurrency:%d" (int $limit.concurrency)) -}}
{{- end -}}
{{- if hasKey $limit "rate" -}}
{{- $per := "60" -}}
{{- if hasKey $limit "per" -}}
{{- $per = toString $limit.per -}}
{{- end -}}
{{- $parts = append $parts (printf "rate:%d/%s" (int $limit.rate) $per) -}}
{{- if hasKey $limit "burst" -}}
{{- $parts = append $parts (printf "burst:%d" (int $limit.burst)) -}}
{{- end -}}
{{- end }}
- {{ printf "--limit=%s=%s" $name (join "," $parts) | quote }}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "podq.worker.fullname" -}}
{{- $full := include "podq.fullname" .root -}}
{{- if .pool.name -}}
{{- printf "%s-worker-%s" $full .pool.name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-worker" $full | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "podq.worker.component" -}}
{{- if .name -}}
{{- printf "worker-%s" .name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
worker
{{- end -}}
{{- end -}}

{{/* Namespaces the operator manages: a list, or empty for all */}}
{{- define "podq.watchNamespaces" -}}
{{- toYaml (dict "namespaces" (uniq .Values.operator.watchNamespaces)) -}}
{{- end -}}

{{/* Queue grants, queue -> namespaces: each worker pool grants its queue to its
`namespaces` (default: the release namespace), plus operator.queueAccess.grants. */}}
{{- define "podq.queueGrants" -}}
{{- $grants := dict -}}
{{- range $pool := (include "podq.worker.pools" . | fromYaml).pools -}}
{{- $ns := $pool.namespaces | default (list $.Release.Namespace) -}}
{{- $_ := set $grants $pool.queue (concat (default (list) (get $grants $pool.queue)) $ns | uniq) -}}
{{- end -}}
{{- range $queue, $ns := .Values.operator.queueAccess.grants -}}
{{- $_ := set $grants $queue (concat (default (list) (get $grants $queue)) $ns | uniq) -}}
{{- end -}}
{{- toYaml (dict "grants" $grants) -}}
{{- end -}}

{{/* Redis ACL (redis.acl): the queues of the rendered worker pools, the Secret of their
users' passwords, and the rules of one queue's user, which must stay those of
podq.queue.keys.acl_rules (tests/chart compares them). */}}
{{- define "podq.redis.aclQueues" -}}
{{- $queues := list -}}
{{- range $pool := (include "podq.worker.pools" . | fromYaml).pools -}}
{{- $queues = append $queues $pool.queue -}}
{{- end -}}
{{- toYaml (dict "queues" ($queues | uniq | sortAlpha)) -}}
{{- end -}}

{{- define "podq.redis.aclSecret" -}}
{{- default (printf "%s-acl" (include "podq.redis.fullname" .)) .Values.redis.acl.existingSecret -}}
{{- end -}}

{{- define "podq.redis.aclRules" -}}
{{- toYaml (list "resetkeys" (printf "~podq:{%s}:*" .) "~podq:queues" "resetchannels" (printf "&podq:{%s}:*" .) "+@all" "-@dangerous" "+info" "-scan" "-randomkey") -}}
{{- end -}}

{{/* env entries giving PODQ_REDIS_URL to the containers of one worker pool: as the
pool's queue user under redis.acl, else as the operator */}}
{{- define "podq.redis.workerEnv" -}}
{{- $root := .root -}}
{{- if $root.Values.redis.acl.enabled }}
{{- if $root.Values.redis.urlSecret.name }}
{{- fail "podq: redis.acl needs the URL without credentials (redis.url), not redis.urlSecret" }}
{{- end }}
{{- if and (not $root.Values.redis.embedded.enabled) (not $root.Values.redis.acl.existingSecret) }}
{{- fail "podq: redis.acl with an external Redis needs redis.acl.existingSecret (one password per queue, key: the queue name)" }}
{{- end }}
{{- if and $root.Values.redis.embedded.enabled (not $root.Values.redis.embedded.auth) }}
{{- fail "podq: redis.acl needs redis.embedded.auth: without a password every client is Redis's default user, with access to every queue" }}
{{- end }}
- name: PODQ_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "podq.redis.aclSecret" $root }}
      key: {{ .pool.queue }}
- name: PODQ_REDIS_URL
  value: {{ regexReplaceAll "^(rediss?(?:\\+cluster)?://)([^/@]*@)?" (include "podq.redis.baseUrl" $root) (printf "${1}podq-%s:$$(PODQ_REDIS_PASSWORD)@" .pool.queue) | quote }}
{{- else }}
{{- include "podq.redis.env" $root }}
{{- end }}
{{- end -}}
