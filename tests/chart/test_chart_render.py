"""The Helm chart, rendered by our helm (`helm lint`, `helm template`), asserted object by
object. No cluster here: tests/kube/test_chart_install.py sends the same renderings to a
real API server and installs them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, KUBE_VERSION, ROOT, run_helm

# Every option of the chart turned on at once (external Redis with TLS and a password).
ALL_ON: dict[str, Any] = {
    "commonLabels": {"team": "data"},
    "imagePullSecrets": [{"name": "regcred"}],
    "crds": {"install": True, "keep": True, "annotations": {"example.com/owner": "data"}},
    "redis": {
        "url": "redis://redis.data.svc:6379/2",
        "password": {"existingSecret": "redis-auth", "key": "pw"},
        "tls": {"enabled": True, "caSecret": "redis-ca", "caKey": "ca.pem"},
    },
    "operator": {
        "watchNamespaces": ["team-a", "team-b"],
        "logFormat": "plain",
        "extraArgs": ["--verbose"],
        "extraEnv": [{"name": "X", "value": "1"}],
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "ops", "operator": "Exists"}],
        "podAnnotations": {"a": "b"},
        "podLabels": {"c": "d"},
        "serviceAccount": {"annotations": {"iam": "role"}},
    },
    "workers": {
        "image": {"repository": "registry.example.com/app-worker", "tag": "1.2.3"},
        "settings": "app.tasks.settings",
        "concurrency": 20,
        "limits": {"charge_card": {"concurrency": 3}, "*": {"rate": 100, "per": 60}},
        "autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 30},
        "longestJobTimeoutSeconds": 3600,
        "extraEnv": [{"name": "APP_ENV", "value": "prod"}],
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "worker"}},
        }],
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 2},
        "pools": [
            {"name": "emails", "settings": "app.emails.settings", "concurrency": 50},
            {"name": "reports", "queue": "nightly-reports", "autoscaling": {"enabled": False},
             "replicas": 2, "longestJobTimeoutSeconds": 7200,
             "terminationGracePeriodSeconds": 7300,
             "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                           "limits": {"memory": "4Gi"}}},
        ],
    },
    "networkPolicy": {"enabled": True, "metricsFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]},
    "metrics": {"enabled": True,
                "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
}

# The same with the chart's own Redis instead of an external one.
ALL_ON_EMBEDDED: dict[str, Any] = copy.deepcopy(ALL_ON)
ALL_ON_EMBEDDED["redis"] = {"embedded": {"enabled": True}}


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {[o['metadata']['name'] for o in by_kind(objs, kind)]}"
    return found[0]


def pod_specs(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o["spec"]["template"]["spec"]
            for o in by_kind(objs, "Deployment")}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# ----------------------------------------------------------------- lint


@pytest.mark.parametrize("values", [{}, ALL_ON, ALL_ON_EMBEDDED], ids=["default", "all-on",
                                                                       "all-on-embedded"])
def test_helm_lint_is_clean(helm_bin: str, tmp_path: Path, values: dict[str, Any]) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = run_helm(helm_bin, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION,
                      "--values", str(values_file), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[ERROR]" not in result.stdout and "[WARNING]" not in result.stdout, result.stdout


# ----------------------------------------------------------------- defaults


def test_default_values_render_operator_worker_rbac_and_crds(render) -> None:
    objs = render()
    kinds = sorted({o["kind"] for o in objs})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                     "Deployment", "PodDisruptionBudget", "Role", "RoleBinding", "Secret",
                     "Service", "ServiceAccount", "ValidatingAdmissionPolicy",
                     "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration"]
    for o in objs:
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                             "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                             "ValidatingWebhookConfiguration"):
            assert o["metadata"]["namespace"] == "podq-system", o["metadata"]
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == "podq"
        assert o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"

    operator = one(objs, "Deployment", "podq-operator")
    # two replicas, one acting: the Lease holder; a new pod stands by until the old
    # one releases the lease, so a rolling update never has two acting
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    (pdb,) = by_kind(objs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == operator["spec"]["selector"]["matchLabels"]
    pod = operator["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "podq-operator"
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/podq/operator:0.1.0"
    assert container["args"] == [
        "--all-namespaces", "--log-format=json", "--queue-access=explicit",
        "--allow-queue=default=podq-system", "--liveness=http://0.0.0.0:8080/healthz",
        "--leader-elect", "--leader-election-name=podq-operator",
        "--leader-election-namespace=podq-system", "--lease-duration=8", "--renew-deadline=6",
        "--retry-period=1", "--webhook-port=9443",
        "--webhook-cert-dir=/etc/podq/webhook-tls"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert env_of(container)["PODQ_REDIS_URL"]["value"] == "redis://redis:6379/0"

    worker = one(objs, "Deployment", "podq-worker")
    assert "replicas" not in worker["spec"]  # the operator owns it; Argo CD would reset it
    assert worker["metadata"]["labels"]["podq.dev/queue"] == "default"
    assert worker["metadata"]["annotations"] == {
        "podq.dev/concurrency": "10", "podq.dev/min-replicas": "1", "podq.dev/max-replicas": "10"
    }
    wpod = worker["spec"]["template"]["spec"]
    assert wpod["automountServiceAccountToken"] is False
    assert wpod["serviceAccountName"] == "podq-worker"
    assert wpod["terminationGracePeriodSeconds"] == 630  # longest job timeout 600 + 30
    (wc,) = wpod["containers"]
    assert wc["image"] == "ghcr.io/podq/worker:0.1.0"
    assert wc["args"] == ["podq_hello.settings", "--queue=default", "--concurrency=10",
                          "--shutdown-grace-period-s=600"]
    assert wc["livenessProbe"]["exec"]["command"] == ["podq", "worker-health",
                                                      "podq_hello.settings", "--queue=default"]
    assert env_of(wc)["PODQ_REDIS_URL"]["value"] == "redis://redis:6379/0"

    worker_sa = one(objs, "ServiceAccount", "podq-worker")
    assert worker_sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("values", [{}, ALL_ON, ALL_ON_EMBEDDED], ids=["default", "all-on",
                                                                       "all-on-embedded"])
def test_every_pod_is_secure_by_default(render, values: dict[str, Any]) -> None:
    objs = render(values)
    specs = pod_specs(objs)
    assert specs
    for name, pod in specs.items():
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert c["resources"]["limits"]["memory"], name
            # a read-only root file system needs a writable /tmp
            assert any(m["mountPath"] in ("/tmp", "/data") for m in c["volumeMounts"]), name
        if not name.endswith("-operator"):
            assert pod["automountServiceAccountToken"] is False, name


# ----------------------------------------------------------------- RBAC

FORBIDDEN_RESOURCES = {"secrets", "configmaps", "serviceaccounts", "*", "pods/exec",
                       "clusterroles", "roles", "rolebindings", "clusterrolebindings"}


def rules_of(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for o in by_kind(objs, kind) for r in o["rules"]]


def grants(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"]
               for r in rules)


def assert_least_privilege(rules: list[dict[str, Any]]) -> None:
    for r in rules:
        assert "*" not in r["verbs"] and "*" not in r["apiGroups"], r
        assert not FORBIDDEN_RESOURCES & set(r["resources"]), r
        assert "escalate" not in r["verbs"] and "bind" not in r["verbs"], r
    assert not grants(rules, "", "pods", "delete")
    assert not grants(rules, "", "pods", "create")
    # the pod-deletion-cost annotation goes through pods/status, which keeps the spec
    for verb in ("patch", "update"):
        assert not grants(rules, "", "pods", verb)
    assert not grants(rules, "apps", "deployments", "patch")  # scale subresource only
    assert not grants(rules, "apps", "deployments", "delete")
    for verb in ("create", "patch", "delete", "update"):
        assert not grants(rules, "autoscaling", "horizontalpodautoscalers", verb)
        assert not grants(rules, "keda.sh", "scaledobjects", verb)
        assert not grants(rules, "apiextensions.k8s.io", "customresourcedefinitions", verb)


def assert_operator_needs(rules: list[dict[str, Any]]) -> None:
    for verb in ("get", "list", "watch", "patch", "create", "delete"):
        assert grants(rules, "podq.dev", "jobs", verb), verb
    for verb in ("get", "list", "watch", "patch"):
        assert grants(rules, "podq.dev", "cronjobs", verb), verb
    assert grants(rules, "podq.dev", "jobs/status", "patch")
    assert grants(rules, "podq.dev", "cronjobs/status", "patch")
    # blockOwnerDeletion on CronJob children needs update on the owner's finalizers
    assert grants(rules, "podq.dev", "cronjobs/finalizers", "update")
    assert grants(rules, "", "events", "create")
    assert grants(rules, "events.k8s.io", "events", "create")
    for verb in ("get", "list", "watch"):
        assert grants(rules, "apps", "deployments", verb)
    # nothing on pods or scale where Jobs are: that is the worker namespaces' Role
    assert not grants(rules, "apps", "deployments/scale", "patch")
    assert not [r for r in rules if {"pods", "pods/status"} & set(r["resources"])]


def assert_worker_rules(rules: list[dict[str, Any]]) -> None:
    assert grants(rules, "apps", "deployments/scale", "patch")
    assert grants(rules, "", "pods", "list") and grants(rules, "", "pods/status", "patch")
    assert grants(rules, "autoscaling", "horizontalpodautoscalers", "list")
    assert grants(rules, "keda.sh", "scaledobjects", "list")
    assert not grants(rules, "podq.dev", "jobs", "list")


LEADER_ELECTION_ROLE = "podq-operator-leader-election"
WORKERS_ROLE = "podq-operator-workers"


def without_leader_election(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["metadata"]["name"] not in (LEADER_ELECTION_ROLE, WORKERS_ROLE)]


def test_pod_rights_only_in_worker_namespaces(render) -> None:
    objs = render()
    (role,) = [r for r in by_kind(objs, "Role") if r["metadata"]["name"] == WORKERS_ROLE]
    assert role["metadata"]["namespace"] == "podq-system"
    assert_worker_rules(role["rules"])
    assert_least_privilege(role["rules"])
    (binding,) = [b for b in by_kind(objs, "RoleBinding")
                  if b["metadata"]["name"] == WORKERS_ROLE]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "podq-operator", "namespace": "podq-system"}]
    # more worker namespaces by value; none at all without a pool
    objs = render({"operator": {"workerNamespaces": ["batch", "podq-system"]}})
    assert sorted(r["metadata"]["namespace"] for r in by_kind(objs, "Role")
                  if r["metadata"]["name"] == WORKERS_ROLE) == ["batch", "podq-system"]
    objs = render({"workers": {"enabled": False}})
    assert not [r for r in by_kind(objs, "Role") if r["metadata"]["name"] == WORKERS_ROLE]
    # namespaced mode: only where the operator watches, the only place it sees pools
    objs = render({"operator": {"watchNamespaces": ["team-a", "batch"],
                                "workerNamespaces": ["batch", "elsewhere"]}})
    assert [r["metadata"]["namespace"] for r in by_kind(objs, "Role")
            if r["metadata"]["name"] == WORKERS_ROLE] == ["batch"]


def test_leader_election_role_grants_the_lease_only(render) -> None:
    objs = render()
    role = one(objs, "Role", LEADER_ELECTION_ROLE)
    assert role["metadata"]["namespace"] == "podq-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["podq-operator"], "verbs": ["get", "update"]}]
    binding = one(objs, "RoleBinding", LEADER_ELECTION_ROLE)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "podq-operator", "namespace": "podq-system"}]


def test_without_leader_election_one_replica_recreated(render) -> None:
    objs = render({"operator": {"replicas": 1, "leaderElection": {"enabled": False}}})
    operator = one(objs, "Deployment", "podq-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [o for o in by_kind(objs, "Role") if o["metadata"]["name"] == LEADER_ELECTION_ROLE]


def test_rbac_cluster_mode(render) -> None:
    objs = without_leader_election(render())
    assert not by_kind(objs, "Role") and not by_kind(objs, "RoleBinding")
    rules = rules_of(objs, "ClusterRole")
    assert_operator_needs(rules)
    assert_least_privilege(rules)
    assert grants(rules, "apiextensions.k8s.io", "customresourcedefinitions", "watch")
    assert grants(rules, "", "namespaces", "watch")
    for binding in by_kind(objs, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "podq-operator", "namespace": "podq-system"}
        ]
        assert binding["roleRef"]["name"] in {o["metadata"]["name"]
                                              for o in by_kind(objs, "ClusterRole")}


def test_rbac_namespaced_mode_uses_roles_in_listed_namespaces_only(render) -> None:
    objs = render({"operator": {"watchNamespaces": ["team-a", "team-b"]}})
    (operator,) = [d for d in by_kind(objs, "Deployment") if d["metadata"]["name"].endswith(
        "-operator")]
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args

    objs = without_leader_election(objs)
    roles = by_kind(objs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    bindings = by_kind(objs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                "name": "podq-operator"}
        assert b["subjects"][0]["namespace"] == "podq-system"
    for role in roles:
        assert_operator_needs(role["rules"])
        assert_least_privilege(role["rules"])

    # cluster-wide: only what kopf needs to see its CRDs, nothing about namespaces or jobs
    cluster_rules = rules_of(objs, "ClusterRole")
    assert cluster_rules == [{"apiGroups": ["apiextensions.k8s.io"],
                              "resources": ["customresourcedefinitions"],
                              "verbs": ["list", "watch"]}]


def test_rbac_can_be_left_to_the_user(render) -> None:
    objs = render({"operator": {"rbac": {"create": False}, "serviceAccount": {
        "create": False, "name": "my-operator"}}})
    assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding", "ClusterRole",
                                                 "ClusterRoleBinding")]
    operator = one(objs, "Deployment", "podq-operator")
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == "my-operator"
    assert "podq-operator" not in {o["metadata"]["name"] for o in by_kind(objs, "ServiceAccount")}


# ----------------------------------------------------------------- workers


def test_fixed_size_pool_has_replicas_and_equal_bounds(render) -> None:
    objs = render({"workers": {"autoscaling": {"enabled": False}, "replicas": 3}})
    worker = one(objs, "Deployment", "podq-worker")
    assert worker["spec"]["replicas"] == 3
    assert worker["metadata"]["annotations"]["podq.dev/min-replicas"] == "3"
    assert worker["metadata"]["annotations"]["podq.dev/max-replicas"] == "3"


def test_worker_pools_one_deployment_per_queue(render) -> None:
    objs = render(ALL_ON)
    workers = {d["metadata"]["name"]: d for d in by_kind(objs, "Deployment")
               if d["metadata"]["name"].startswith("podq-worker")}
    assert sorted(workers) == ["podq-worker", "podq-worker-emails", "podq-worker-reports"]

    queues = {n: d["metadata"]["labels"]["podq.dev/queue"] for n, d in workers.items()}
    assert queues == {"podq-worker": "default", "podq-worker-emails": "emails",
                      "podq-worker-reports": "nightly-reports"}
    # distinct selectors, so the Deployments do not adopt each other's pods
    selectors = [tuple(sorted(d["spec"]["selector"]["matchLabels"].items()))
                 for d in workers.values()]
    assert len(set(selectors)) == 3

    default, emails, reports = (workers[n] for n in ("podq-worker", "podq-worker-emails",
                                                     "podq-worker-reports"))
    assert "replicas" not in default["spec"] and "replicas" not in emails["spec"]
    assert reports["spec"]["replicas"] == 2
    # a pool inherits the top-level worker values and overrides its own
    ec = emails["spec"]["template"]["spec"]["containers"][0]
    assert ec["image"] == "registry.example.com/app-worker:1.2.3"
    assert ec["args"][:2] == ["app.emails.settings", "--queue=emails"]
    assert emails["metadata"]["annotations"] == {
        "podq.dev/concurrency": "50", "podq.dev/min-replicas": "0", "podq.dev/max-replicas": "30"
    }
    assert env_of(ec)["APP_ENV"]["value"] == "prod"
    assert emails["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 3630
    rpod = reports["spec"]["template"]["spec"]
    assert rpod["terminationGracePeriodSeconds"] == 7300
    assert "--shutdown-grace-period-s=7200" in rpod["containers"][0]["args"]
    assert rpod["containers"][0]["args"][:2] == ["app.tasks.settings", "--queue=nightly-reports"]
    # resources replace the default as a whole (no stray default cpu/memory mixed in)
    assert rpod["containers"][0]["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"},
                                                  "limits": {"memory": "4Gi"}}
    for d in workers.values():
        pod = d["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["topologySpreadConstraints"]

    pdbs = {p["metadata"]["name"]: p for p in by_kind(objs, "PodDisruptionBudget")
            if p["metadata"]["name"] != "podq-operator"}
    assert sorted(pdbs) == sorted(workers)
    for name, pdb in pdbs.items():
        assert pdb["spec"]["maxUnavailable"] == 2
        assert pdb["spec"]["selector"] == workers[name]["spec"]["selector"]


def test_no_worker_when_disabled(render) -> None:
    objs = render({"workers": {"enabled": False}})
    assert [d["metadata"]["name"] for d in by_kind(objs, "Deployment")] == ["podq-operator"]


# ----------------------------------------------------------------- Redis


def test_external_redis_with_password_secret_and_tls(render) -> None:
    objs = render(ALL_ON)
    for name, pod in pod_specs(objs).items():
        c = pod["containers"][0]
        env_list = [e["name"] for e in c["env"]]
        # $(VAR) expansion only sees variables defined earlier in the list
        assert env_list.index("PODQ_REDIS_PASSWORD") < env_list.index("PODQ_REDIS_URL"), name
        env = env_of(c)
        assert env["PODQ_REDIS_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "redis-auth", "key": "pw"}}
        assert env["PODQ_REDIS_URL"]["value"] == (
            "rediss://:$(PODQ_REDIS_PASSWORD)@redis.data.svc:6379/2"
            "?ssl_ca_certs=/etc/podq/redis-tls/ca.pem")
        assert {"name": "redis-tls", "mountPath": "/etc/podq/redis-tls", "readOnly": True} in (
            c["volumeMounts"])
        (vol,) = [v for v in pod["volumes"] if v["name"] == "redis-tls"]
        assert vol["secret"] == {"secretName": "redis-ca",
                                 "items": [{"key": "ca.pem", "path": "ca.pem"}]}
    assert not [o for o in objs if o["metadata"]["name"] == "podq-redis"]


def test_redis_user_name_keeps_its_place(render) -> None:
    objs = render({"redis": {"url": "redis://app@r:6379/0",
                             "password": {"existingSecret": "s"}}})
    env = env_of(one(objs, "Deployment", "podq-operator")["spec"]["template"]["spec"][
        "containers"][0])
    assert env["PODQ_REDIS_URL"]["value"] == "redis://app:$(PODQ_REDIS_PASSWORD)@r:6379/0"


def test_redis_url_from_secret(render) -> None:
    objs = render({"redis": {"urlSecret": {"name": "redis-url", "key": "u"}}})
    for pod in pod_specs(objs).values():
        env = env_of(pod["containers"][0])
        assert env["PODQ_REDIS_URL"]["valueFrom"] == {
            "secretKeyRef": {"name": "redis-url", "key": "u"}}
        assert "PODQ_REDIS_PASSWORD" not in env


def test_embedded_redis_is_official_image_with_generated_password(render) -> None:
    objs = render(ALL_ON_EMBEDDED)
    redis = one(objs, "Deployment", "podq-redis")
    assert redis["spec"]["replicas"] == 1 and redis["spec"]["strategy"] == {"type": "Recreate"}
    (c,) = redis["spec"]["template"]["spec"]["containers"]
    assert c["image"].startswith("docker.io/library/redis:")
    assert "bitnami" not in yaml.safe_dump(objs)
    assert "--requirepass" in c["args"]
    assert c["args"][c["args"].index("--maxmemory-policy") + 1] == "noeviction"
    secret = one(objs, "Secret", "podq-redis")
    assert len(secret["data"]["redis-password"]) > 30
    service = one(objs, "Service", "podq-redis")
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    for name, pod in pod_specs(objs).items():
        if name == "podq-redis":
            continue
        env = env_of(pod["containers"][0])
        assert env["PODQ_REDIS_URL"]["value"] == "redis://:$(PODQ_REDIS_PASSWORD)@podq-redis:6379/0"
        assert env["PODQ_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "podq-redis", "key": "redis-password"}
    policy = one(objs, "NetworkPolicy", "podq-redis")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "redis", "protocol": "TCP"}]


def redis_secrets(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Secrets but the webhook's certificate (generated at each render, see
    test_webhook_chart.py)."""
    return [o for o in by_kind(objs, "Secret") if o["type"] != "kubernetes.io/tls"]


def test_embedded_redis_password_from_an_existing_secret(render) -> None:
    """For Argo CD, which renders without the cluster: no generated Secret that would
    change at every render."""
    objs = render({"redis": {"embedded": {"enabled": True, "existingSecret": "my-redis",
                                          "existingSecretKey": "pw"}}})
    assert not redis_secrets(objs)
    for name, pod in pod_specs(objs).items():
        env = env_of(pod["containers"][0])
        key = "REDIS_PASSWORD" if name == "podq-redis" else "PODQ_REDIS_PASSWORD"
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "my-redis", "key": "pw"}, name


def test_embedded_redis_without_auth(render) -> None:
    objs = render({"redis": {"embedded": {"enabled": True, "auth": False}}})
    assert not redis_secrets(objs)
    redis = one(objs, "Deployment", "podq-redis")["spec"]["template"]["spec"]["containers"][0]
    assert "--requirepass" not in redis["args"]
    operator = one(objs, "Deployment", "podq-operator")["spec"]["template"]["spec"]
    assert env_of(operator["containers"][0])["PODQ_REDIS_URL"]["value"] == (
        "redis://podq-redis:6379/0")


@pytest.mark.parametrize(("values", "message"), [
    ({"redis": {"url": ""}}, "set redis.url"),
    ({"redis": {"url": "redis://:secret@r:6379"}}, "holds a password"),
    ({"redis": {"url": "http://r:6379"}}, "/redis/url"),
    ({"redis": {"embedded": {"enabled": True}, "tls": {"enabled": True}}}, "external Redis"),
    ({"workers": {"longestJobTimeoutSeconds": 600, "terminationGracePeriodSeconds": 600}},
     "must be longer than longestJobTimeoutSeconds"),
    ({"workers": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas"),
    ({"workers": {"settings": ""}}, "needs settings"),
    ({"workers": {"pools": [{"name": "a"}, {"name": "a"}]}}, "two pools named"),
    ({"metrics": {"serviceMonitor": {"enabled": True}}}, "needs metrics.enabled"),
    ({"operator": {"leaderElection": {"enabled": False}}},
     "operator.replicas > 1 needs operator.leaderElection.enabled"),
    ({"operator": {"leaderElection": {"renewDeadlineSeconds": 9}}},
     "retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds"),
])
def test_bad_combinations_fail_with_a_clear_message(render_error, values, message) -> None:
    assert message in render_error(values)


# ----------------------------------------------------------------- schema


@pytest.mark.parametrize(("values", "message"), [
    ({"workerz": {}}, "additional properties 'workerz' not allowed"),
    ({"workers": {"concurency": 5}}, "additional properties 'concurency' not allowed"),
    ({"workers": {"pools": [{"name": "x", "concurrency": 5, "bogus": 1}]}}, "'bogus'"),
    ({"operator": {"watchNamespaces": "team-a"}}, "want array"),
    ({"workers": {"concurrency": "ten"}}, "want integer"),
    ({"workers": {"concurrency": 0}}, "minimum"),
    ({"workers": {"autoscaling": {"enabled": "yes"}}}, "want boolean"),
    ({"operator": {"logFormat": "xml"}}, "value must be one of"),
    ({"crds": {"install": "true"}}, "want boolean"),
    ({"redis": {"embedded": {"image": {"tag": 8}}}}, "want string"),
    ({"operator": {"watchNamespaces": ["Team_A"]}}, "does not match pattern"),
    ({"workers": {"queue": "a\n"}}, "does not match pattern"),  # RE2: `$` ends the text
    ({"operator": {"queueAccess": {"grants": {"a\n": ["x"]}}}}, "does not match pattern"),
])
def test_schema_rejects_unknown_keys_and_wrong_types(render_error, values, message) -> None:
    assert message in render_error(values)


def test_values_file_documents_every_schema_key() -> None:
    """values.yaml and values.schema.json describe the same keys (pools aside)."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], vals: Any, path: str) -> None:
        props = node.get("properties")
        if not props or not isinstance(vals, dict):
            return
        if node.get("additionalProperties") is False:
            extra = set(vals) - set(props)
            assert not extra, f"{path}: keys in values.yaml missing from the schema: {extra}"
        for key, sub in props.items():
            if key in vals:
                walk(sub, vals[key], f"{path}.{key}")
            elif key != "global":
                assert node is not schema or key in values, f"{path}.{key} not in values.yaml"

    walk(schema, values, "")


# ----------------------------------------------------------------- CRDs


def test_chart_crds_are_exact_copies_of_crds_folder() -> None:
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert source, "crds/ is empty"
    assert copies == source, (
        "charts/podq/files/crds/ differs from crds/: run  cp crds/*.yaml charts/podq/files/crds/"
    )


def test_rendered_crds_equal_crds_folder_plus_keep_annotation(render) -> None:
    crds = {o["metadata"]["name"]: o for o in by_kind(render(), "CustomResourceDefinition")}
    source = {}
    for path in (ROOT / "crds").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                source[doc["metadata"]["name"]] = doc
    assert sorted(crds) == sorted(source) == ["cronjobs.podq.dev", "jobs.podq.dev"]
    for name, rendered in crds.items():
        rendered = copy.deepcopy(rendered)
        meta = rendered["metadata"]
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        del meta["annotations"]
        for key in list(meta["labels"]):
            if key not in source[name]["metadata"].get("labels", {}):
                del meta["labels"][key]
        assert rendered == source[name], name


def test_crds_optional_and_keep_optional(render) -> None:
    assert not by_kind(render({"crds": {"install": False}}), "CustomResourceDefinition")
    crds = by_kind(render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert len(crds) == 2
    for crd in crds:
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})


# ----------------------------------------------------------------- extras


def test_all_options_on_render_everything(render) -> None:
    objs = render(ALL_ON)
    kinds = {o["kind"] for o in objs}
    assert kinds == {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                     "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Role",
                     "RoleBinding", "Secret", "Service", "ServiceAccount", "ServiceMonitor",
                     "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                     "ValidatingWebhookConfiguration"}
    for o in objs:
        assert o["metadata"]["labels"]["team"] == "data"

    operator = one(objs, "Deployment", "podq-operator")
    c = operator["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-port=9090" in c["args"] and "--verbose" in c["args"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in c["ports"]
    service = one(objs, "Service", "podq-operator-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = one(objs, "ServiceMonitor", "podq-operator")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    sa = one(objs, "ServiceAccount", "podq-operator")
    assert sa["metadata"]["annotations"] == {"iam": "role"}
    for crd in by_kind(objs, "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["example.com/owner"] == "data"

    policies = {p["metadata"]["name"]: p for p in by_kind(objs, "NetworkPolicy")}
    assert sorted(policies) == ["podq-operator", "podq-worker", "podq-worker-emails",
                                "podq-worker-reports"]
    for name in ("podq-worker", "podq-worker-emails", "podq-worker-reports"):
        # no ingress rules at all: worker pods accept no connections
        assert policies[name]["spec"]["policyTypes"] == ["Ingress"]
        assert "ingress" not in policies[name]["spec"]
    ingress = policies["podq-operator"]["spec"]["ingress"]
    assert {"ports": [{"port": "healthz", "protocol": "TCP"}]} in ingress
    assert any(rule.get("from") == ALL_ON["networkPolicy"]["metricsFrom"] for rule in ingress)


# ----------------------------------------------------------------- package and docs


def without_certificates(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rendering with the webhook's generated CA and certificate blanked (each render
    makes new ones)."""
    for o in objs:
        if o["kind"] == "Secret" and o["type"] == "kubernetes.io/tls":
            o["data"] = dict.fromkeys(o["data"], "")
        for hook in o.get("webhooks") or ():
            hook["clientConfig"].pop("caBundle", None)
    return objs


def test_packaged_chart_renders_the_same(helm_bin: str, tmp_path: Path, render) -> None:
    """What users install from a chart repository: `helm package` keeps files/crds/."""
    run_helm(helm_bin, "package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("podq-*.tgz")
    out = run_helm(helm_bin, "template", "podq", str(package), "--namespace", "podq-system",
                   "--kube-version", KUBE_VERSION).stdout
    from_package = [d for d in yaml.safe_load_all(out) if d]
    assert without_certificates(from_package) == without_certificates(render())
    assert len(by_kind(from_package, "CustomResourceDefinition")) == 2


def chart_values_in(text: str) -> list[dict[str, Any]]:
    """The ```yaml blocks of a Markdown text that are chart values (top-level keys of
    values.yaml only)."""
    known = set(yaml.safe_load((CHART / "values.yaml").read_text()))
    found = []
    for block in text.split("```yaml\n")[1:]:
        doc = yaml.safe_load(block.split("```", 1)[0])
        if isinstance(doc, dict) and doc and set(doc) <= known:
            found.append(doc)
    return found


def test_values_shown_in_docs_install_render(render) -> None:
    snippets = chart_values_in((ROOT / "docs" / "install.md").read_text())
    assert len(snippets) >= 5
    for values in snippets:
        render(values)


def test_values_in_the_gitops_examples_render(render) -> None:
    app = yaml.safe_load((ROOT / "examples/gitops/argocd/podq-application.yaml").read_text())
    assert app["spec"]["source"]["path"] == "charts/podq"
    objs = render(app["spec"]["source"]["helm"]["valuesObject"])
    worker = one(objs, "Deployment", "podq-worker")
    assert "replicas" not in worker["spec"]
    # the ignored differences name the webhook's generated Secret and configuration
    # (release podq in podq-system, as the Application installs it)
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
    for ignored in app["spec"]["ignoreDifferences"]:
        assert one(objs, ignored["kind"], ignored["name"])

    (release,) = [d for d in yaml.safe_load_all(
        (ROOT / "examples/gitops/flux/podq-helmrelease.yaml").read_text())
        if d["kind"] == "HelmRelease"]
    assert release["spec"]["chart"]["spec"]["chart"] == "./charts/podq"
    render(release["spec"]["values"])


# ----------------------------------------------------------------- queue access


def operator_args(objs: list[dict[str, Any]]) -> list[str]:
    return one(objs, "Deployment", "podq-operator")["spec"]["template"]["spec"][
        "containers"][0]["args"]


def test_each_pool_grants_its_queue_to_its_namespaces(render) -> None:
    # by default the release namespace only, explicitly
    args = operator_args(render())
    assert "--queue-access=explicit" in args
    assert [a for a in args if a.startswith("--allow-queue")] == [
        "--allow-queue=default=podq-system"]
    args = operator_args(render({
        "workers": {"namespaces": ["team-a"],
                    "pools": [{"name": "emails", "namespaces": ["team-b", "team-c"]},
                              {"name": "reports"},  # inherits team-a
                              {"name": "more-emails", "queue": "emails",
                               "namespaces": ["team-a"]}]},
        "operator": {"queueAccess": {"grants": {"ext": ["*"], "emails": ["team-d"]}}}}))
    assert sorted(a for a in args if a.startswith("--allow-queue")) == [
        "--allow-queue=default=team-a",
        "--allow-queue=emails=team-b,team-c,team-a,team-d",
        "--allow-queue=ext=*",
        "--allow-queue=reports=team-a"]
    assert "--queue-access=open" in operator_args(render({"operator": {"queueAccess": {
        "mode": "open"}}}))


def test_queue_access_values_are_checked(render_error) -> None:
    assert "mode" in render_error({"operator": {"queueAccess": {"mode": "closed"}}})
    assert "namespaces" in render_error({"workers": {"namespaces": ["Not_A_Namespace"]}})


def test_pod_status_policy_limits_the_operator_to_the_cost_annotation(render) -> None:
    objs = render()
    (policy,) = by_kind(objs, "ValidatingAdmissionPolicy")
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == [
        "pods/status"]
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:podq-system:podq-operator'")
    (binding,) = by_kind(objs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"],
                               "validationActions": ["Deny"]}
    for values in ({"operator": {"rbac": {"podStatusPolicy": False}}},
                   {"operator": {"rbac": {"create": False}}}):
        assert not by_kind(render(values), "ValidatingAdmissionPolicy")
