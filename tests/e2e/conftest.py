"""End to end: podq's Helm chart on a real node, workers and operator as real pods.

One node (`scripts/control-plane up --node`: kubelet, containerd, runc, kube-scheduler,
a Redis for the pods, all in a network namespace of the run) and one `helm install` of
charts/podq serve every test here (session scope), with the worker and operator images
built from this checkout by `scripts/images` and imported into the node's containerd
(`imagePullPolicy: Never`). The namespace enforces the `restricted` Pod Security level.

Skipped, with the reason, only where this machine cannot run a node: not root, no
cgroups, or packages missing (containerd, runc, CNI plugins, iproute2, gcc) and no apt-get
to install them. Binaries and images are obtained at collection (a cold build
takes minutes; the per-test timeout must not cut it short); a failed build fails.
./scripts/demo (test_demo_node), which mostly waits on pods of a node of its own, starts
right after that, in the background, and runs beside the session node's tests
(demo_run.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from chart_release import NAMESPACE, RELEASE, Release, node_module
from demo_run import BackgroundDemo

from podq.testing import (
    ControlPlane,
    build_images,
    chart_image_values,
    install_chart,
    run_control_plane_script,
)

E2E_DIR = Path(__file__).resolve().parent


SKIP_REASON: str | None = node_module().unsupported_reason()
_prepare_error: str | None = None
_images: dict[str, dict] = {}
_demo: list[BackgroundDemo] = []


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
    try:
        _images.update(build_images())
    except RuntimeError as err:
        _prepare_error = str(err)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start ./scripts/demo if its test is still selected once -k/-m have deselected."""
    if SKIP_REASON or _prepare_error or not _images or session.config.option.collectonly:
        return
    if any(item.path.name == "test_demo_node.py" and E2E_DIR in item.path.resolve().parents
           for item in session.items):
        start_demo()


def start_demo() -> BackgroundDemo:
    """./scripts/demo in the background (once): its images are those built at collection."""
    if not _demo:
        _demo.append(BackgroundDemo())
    return _demo[0]


def pytest_sessionfinish() -> None:
    for demo in _demo:  # its test did not run to the end (-x, interrupted)
        demo.stop()
        demo.remove_run_dir()


@pytest.fixture(scope="session")
def background_demo() -> BackgroundDemo:
    """./scripts/demo, started at collection."""
    if _prepare_error:
        pytest.fail(_prepare_error, pytrace=False)
    return start_demo()


@pytest.fixture(scope="session")
def images() -> dict[str, dict]:
    """The worker and operator images `scripts/images` built (name -> archive, ref ...)."""
    if _prepare_error:
        pytest.fail(_prepare_error, pytrace=False)
    return _images


@pytest.fixture(scope="session")
def node_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if _prepare_error:
        pytest.fail(_prepare_error, pytrace=False)
    started = time.monotonic()
    try:
        plane = ControlPlane.up(tmp_path_factory.mktemp("node"), exit_with=os.getpid(),
                                node=True)
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)
    up = time.monotonic()
    with plane:
        plane.load_images(*(image["archive"] for image in _images.values()))
        print(f"node up in {up - started:.1f}s, images imported in"
              f" {time.monotonic() - up:.1f}s")
        yield plane


def helm_values(plane: ControlPlane) -> dict:
    images = chart_image_values(_images)
    return {
        "redis": {"url": plane.pod_redis_url},
        "metrics": {"enabled": True},  # as ./scripts/demo installs it
        "operator": {
            **images["operator"],
            "logFormat": "plain",
            # quick scale-down, so "back to zero" takes seconds
            "extraArgs": ["--stabilisation-window=2", "--autoscale-interval=1"],
        },
        "workers": {
            **images["workers"],
            "concurrency": 2,
            "metrics": {"enabled": True},  # as ./scripts/demo installs it
            "autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 3},
            "longestJobTimeoutSeconds": 20,
            # a node drain evicts one worker pod at a time (test_chart_on_node)
            "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                          "limits": {"memory": "256Mi"}},
        },
    }


@pytest.fixture(scope="session")
def release(node_plane: ControlPlane) -> Release:
    """charts/podq installed into a namespace that enforces Pod Security `restricted`."""
    plane = node_plane
    try:
        took = install_chart(plane, RELEASE, NAMESPACE, helm_values(plane), restricted=True)
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)
    print(f"helm install --wait took {took:.1f}s")
    deployments = json.loads(plane.kubectl(
        "get", "deployments", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=worker",
        "-o", "json").stdout)["items"]
    assert len(deployments) == 1, deployments
    release = Release(plane, NAMESPACE, deployments[0]["metadata"]["name"])
    started = time.monotonic()
    release.wait_scaled_to_zero()  # the chart's Deployment starts with one pod
    took = time.monotonic() - started
    print(f"the operator scaled the workers to zero in {took:.1f}s")
    # that pod, stopped while it starts, ends at once: not after its grace period (20 + 30 s)
    assert took < 50, f"the first worker pod took {took:.0f}s to go"
    return release
