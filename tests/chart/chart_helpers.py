"""Helpers shared by the chart tests: paths, our helm binary, running it; the values
with every option on (ALL_ON, ALL_ON_EMBEDDED) and pickers of rendered objects."""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from podq.testing import run_control_plane_script

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podq"
# the API server version our control plane runs; `helm template` checks kubeVersion with it
KUBE_VERSION = "1.37.2"


def find_helm() -> str:
    return find_binary("helm")


def find_binary(name: str) -> str:
    """helm or promtool: PODQ_HELM / PODQ_PROMTOOL, else what `scripts/control-plane
    install` names (built once from Go modules, then cached)."""
    explicit = os.environ.get(f"PODQ_{name.upper()}")
    if explicit:
        return explicit
    result = run_control_plane_script("install")
    if result.returncode != 0:
        raise RuntimeError(
            f"`scripts/control-plane install` failed (exit {result.returncode}):\n"
            f"{result.stderr}{result.stdout}"
        )
    match = re.search(rf"^{name}\s+(\S+)\s*$", result.stdout, flags=re.M)
    if not match:
        raise RuntimeError(f"`scripts/control-plane install` named no {name}:\n{result.stdout}")
    return match.group(1)


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/podq-helm/cache",
           "HELM_CONFIG_HOME": "/tmp/podq-helm/config", "HELM_DATA_HOME": "/tmp/podq-helm/data"}
    result = subprocess.run(
        [helm, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stderr}{result.stdout}")
    return result


def check_notes(text: str) -> None:
    """No repository-relative paths (meaningless from a chart repository); links are
    https; raw-file URLs name files (that URL form serves no folders)."""
    assert not re.search(r"(?<![/\w])(docs|worker_image|crds|examples)/", text), text
    for url in re.findall(r"https?://[^\s)]+", text):
        assert url.startswith("https://"), url
        if "raw.githubusercontent.com" in url:
            assert url.endswith(".yaml"), url


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
