"""End to end: podq's Helm chart on a real node, workers and operator as real pods.

One node (`scripts/control-plane up --node`: kubelet, containerd, runc, kube-scheduler,
a Redis for the pods, all in a network namespace of the run) and one `helm install` of
charts/podq serve every test here (session scope), with the worker and operator images
built from this checkout by `scripts/images` and imported into the node's containerd
(`imagePullPolicy: Never`). The namespace enforces the `restricted` Pod Security level.

Skipped, with the reason, only where this machine cannot run a node: not root, no
cgroups, no `ip` command. Binaries and images are obtained at collection (a cold build
takes minutes; the per-test timeout must not cut it short); a failed build fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_release import CHART, NAMESPACE, RELEASE, ROOT, Release

from podq.testing import ControlPlane, run_control_plane_script

E2E_DIR = Path(__file__).resolve().parent


def _node_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "podq_node", ROOT / "scripts" / "lib" / "podq_node.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SKIP_REASON: str | None = _node_module().unsupported_reason()
_prepare_error: str | None = None
_images: dict[str, dict] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests/e2e `e2e`; build binaries and images once, before any test."""
    global _prepare_error
    selected = False
    for item in items:
        if E2E_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)
            if SKIP_REASON:
                item.add_marker(pytest.mark.skip(reason=f"no real node here: {SKIP_REASON}"))
            selected = True
    if not selected or SKIP_REASON or config.option.collectonly:
        return
    result = run_control_plane_script("install")
    if result.returncode != 0:
        _prepare_error = f"`scripts/control-plane install` failed:\n{result.stderr}"
        return
    built = subprocess.run([str(ROOT / "scripts" / "images"), "build"], capture_output=True,
                           text=True, check=False, timeout=1800)
    if built.returncode != 0:
        _prepare_error = f"`scripts/images build` failed:\n{built.stderr}"
        return
    for line in built.stdout.splitlines():
        image = json.loads(line)
        _images[image["name"]] = image


@pytest.fixture(scope="session")
def node_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if _prepare_error:
        pytest.fail(_prepare_error, pytrace=False)
    try:
        plane = ControlPlane.up(tmp_path_factory.mktemp("node"), exit_with=os.getpid(),
                                node=True)
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)
    with plane:
        plane.load_images(*(image["archive"] for image in _images.values()))
        yield plane


def helm_values(plane: ControlPlane) -> dict:
    worker, operator = _images["worker"], _images["operator"]
    return {
        "redis": {"url": plane.pod_redis_url},
        "operator": {
            "image": {"repository": operator["repository"], "tag": operator["tag"],
                      "pullPolicy": "Never"},
            "logFormat": "plain",
            # quick scale-down, so "back to zero" takes seconds
            "extraArgs": ["--stabilisation-window=2", "--autoscale-interval=1"],
        },
        "workers": {
            "image": {"repository": worker["repository"], "tag": worker["tag"],
                      "pullPolicy": "Never"},
            "concurrency": 2,
            "autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 3},
            "longestJobTimeoutSeconds": 20,
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                          "limits": {"memory": "256Mi"}},
        },
    }


@pytest.fixture(scope="session")
def release(node_plane: ControlPlane) -> Release:
    """charts/podq installed into a namespace that enforces Pod Security `restricted`."""
    plane = node_plane
    plane.kubectl("create", "namespace", NAMESPACE)
    plane.kubectl("label", "namespace", NAMESPACE,
                  "pod-security.kubernetes.io/enforce=restricted",
                  "pod-security.kubernetes.io/enforce-version=latest")
    plane.wait_for_service_account(NAMESPACE)
    home = plane.run_dir / "helm-home"
    env = {**plane.env, "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    started = time.monotonic()
    out = subprocess.run(
        [str(plane.bin / "helm"), "install", RELEASE, str(CHART), "-n", NAMESPACE,
         "--values", "-", "--wait", "--timeout", "180s"],
        input=json.dumps(helm_values(plane)), capture_output=True, text=True, env=env,
        check=False, timeout=240)
    if out.returncode != 0:
        pods = plane.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        events = plane.kubectl("get", "events", "-n", NAMESPACE, check=False).stdout
        pytest.fail(f"helm install failed:\n{out.stderr}\n{pods}\n{events}", pytrace=False)
    print(f"helm install --wait took {time.monotonic() - started:.1f}s")
    deployments = json.loads(plane.kubectl(
        "get", "deployments", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=worker",
        "-o", "json").stdout)["items"]
    assert len(deployments) == 1, deployments
    return Release(plane, NAMESPACE, deployments[0]["metadata"]["name"])
