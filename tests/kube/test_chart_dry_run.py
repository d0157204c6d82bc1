"""The Helm chart's renderings against a real API server, without installing them: a
server-side dry-run of every object (the API server's schemas, defaulting, admission),
and every pod admitted in a namespace that enforces the `restricted` Pod Security
Standard.

The renderings hold cluster-scoped objects (CRDs, ClusterRoles), so this module runs its
own control plane (`plane`, conftest.py), apart from the session's. The install itself:
test_chart_install.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_install_helpers import CHART, ensure_namespace, helm, values_file, wait_for

from podq.testing import ControlPlane

# the chart's rendering with every option on (tests/chart/test_chart_render.py has the
# same; kept here as data so the two test folders stay independent)
ALL_ON: dict[str, Any] = {
    "commonLabels": {"team": "data"},
    "imagePullSecrets": [{"name": "regcred"}],
    "crds": {"annotations": {"example.com/owner": "data"}},
    "redis": {"url": "redis://redis.data.svc:6379/2",
              "password": {"existingSecret": "redis-auth", "key": "pw"},
              "tls": {"enabled": True, "caSecret": "redis-ca", "caKey": "ca.pem"}},
    "operator": {"watchNamespaces": ["team-a", "team-b"], "logFormat": "plain",
                 "priorityClassName": "system-cluster-critical",
                 "tolerations": [{"key": "ops", "operator": "Exists"}]},
    "workers": {"settings": "app.tasks.settings", "concurrency": 20,
                "autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 30},
                "longestJobTimeoutSeconds": 3600,
                "topologySpreadConstraints": [{
                    "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "worker"}}}],
                "podDisruptionBudget": {"enabled": True, "maxUnavailable": "25%"},
                "pools": [{"name": "emails", "concurrency": 50},
                          {"name": "reports", "autoscaling": {"enabled": False}, "replicas": 2}]},
    "networkPolicy": {"enabled": True, "metricsFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]},
    "metrics": {"enabled": True, "serviceMonitor": {"enabled": True},
                "grafanaDashboard": {"enabled": True}},
    "extraObjects": [{"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "{{ .Release.Name }}-extra"}, "data": {"a": "b"}}],
}
ALL_ON_EMBEDDED = {**ALL_ON, "redis": {"embedded": {"enabled": True}}}


# ---------------------------------------------------------------- server-side dry-run


@pytest.mark.parametrize("values", [{}, ALL_ON, ALL_ON_EMBEDDED,
                                    {"operator": {"watchNamespaces": ["team-a"]},
                                     "crds": {"install": False}}],
                         ids=["default", "all-on", "all-on-embedded", "namespaced"])
def test_rendered_manifests_pass_server_side_dry_run(plane: ControlPlane, tmp_path: Path,
                                                     values: dict[str, Any]) -> None:
    """The API server (its schemas, defaulting, admission) accepts every object the chart
    renders. ServiceMonitor is left out: its CRD belongs to the Prometheus Operator."""
    namespace = f"dry-{uuid.uuid4().hex[:6]}"
    for name in (namespace, "team-a", "team-b"):
        ensure_namespace(plane, name)
    rendered = helm(plane, "template", f"r{uuid.uuid4().hex[:6]}", str(CHART), "-n", namespace,
                    "--kube-version", "1.37.2", "-f", values_file(tmp_path, values)).stdout
    objs = [o for o in yaml.safe_load_all(rendered) if o]
    sent = [o for o in objs if o["kind"] != "ServiceMonitor"]
    assert len(sent) >= len(objs) - 1
    manifest = yaml.safe_dump_all(sent)
    result = plane.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-",
                           input=manifest, check=False)
    assert result.returncode == 0, result.stderr
    accepted = json.loads(result.stdout)
    items = accepted["items"] if accepted.get("kind") == "List" else [accepted]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in items) == sorted(
        (o["kind"], o["metadata"]["name"]) for o in sent)
    for item in items:
        if item["kind"] == "Deployment":
            # what the API server made of the pod template: still secure
            pod = item["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            for c in pod["containers"]:
                assert c["securityContext"]["readOnlyRootFilesystem"] is True
                assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("values", [ALL_ON, ALL_ON_EMBEDDED], ids=["all-on", "all-on-embedded"])
def test_every_pod_passes_the_restricted_pod_security_standard(
    plane: ControlPlane, tmp_path: Path, values: dict[str, Any]
) -> None:
    """Pods made from each Deployment's template are admitted (server-side dry-run) in a
    namespace that enforces the `restricted` Pod Security Standard."""
    namespace = f"restricted-{uuid.uuid4().hex[:6]}"
    plane.kubectl("create", "namespace", namespace)
    plane.kubectl("label", "namespace", namespace,
                  "pod-security.kubernetes.io/enforce=restricted")
    rendered = helm(plane, "template", "podq", str(CHART), "-n", namespace,
                    "--kube-version", "1.37.2", "-f", values_file(tmp_path, values)).stdout
    objs = [o for o in yaml.safe_load_all(rendered) if o]
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    assert len(deployments) >= 4
    # the check is real: a pod without the security settings is refused there (once the
    # admission plugin's namespace cache has seen the label)
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare",
                                                            "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}

    def bare_refused() -> bool:
        result = plane.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(bare),
                               check=False)
        return result.returncode != 0 and "restricted" in result.stderr

    wait_for("PodSecurity enforcement in the new namespace", bare_refused, 30)
    # the pods' ServiceAccounts must exist for admission
    accounts = [o for o in objs if o["kind"] == "ServiceAccount"]
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(accounts))
    for deployment in deployments:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": deployment["metadata"]["name"], "namespace": namespace,
                            "labels": deployment["spec"]["template"]["metadata"]["labels"]},
               "spec": deployment["spec"]["template"]["spec"]}
        result = plane.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(pod),
                               check=False)
        assert result.returncode == 0, f"{deployment['metadata']['name']}: {result.stderr}"
        assert "violate" not in result.stderr, result.stderr
