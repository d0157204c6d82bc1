"""The Helm chart, rendered by our helm (`helm lint`, `helm template`), asserted object by
object: lint, the defaults, every pod's security, worker pools, every option on.
No cluster here: tests/kube/test_chart_install.py sends the same renderings to a real API
server and installs them.

The other renderings by topic: test_chart_render_rbac.py (RBAC, queue access),
test_chart_render_redis.py (Redis), test_chart_render_values.py (values checked; values
shown in docs and examples), test_chart_render_crds.py (CRDs, the packaged chart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import (
    ALL_ON,
    ALL_ON_EMBEDDED,
    CHART,
    KUBE_VERSION,
    by_kind,
    env_of,
    one,
    pod_specs,
    run_helm,
)

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
