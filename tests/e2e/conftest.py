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
Once collection is done, two things start in the background, beside the tests that run
before theirs (tests/chart in a full run): ./scripts/demo (test_demo_node), which mostly
waits on pods of a node of its own (demo_run.py), and the session's node and chart
release (SessionNode), which the tests that use them wait for; those tests run last of
tests/e2e. The host is read before anything starts, and the last test checks that both
nodes left nothing behind once they are down (test_node_lifecycle).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from chart_release import NAMESPACE, RELEASE, Release, node_module
from demo_run import BackgroundDemo
from host import HostSnapshot, NodeRun, link_address

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
_session_node: list[SessionNode] = []
_host_before: list[HostSnapshot] = []


def uses(item: pytest.Item, fixture: str) -> bool:
    return fixture in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests/e2e `e2e`; order them so that what the background prepares is waited
    for last: the chart release's tests after the others, then the demo's, then the
    check that the nodes left nothing behind; build binaries and images once, before
    any test."""
    global _prepare_error
    slots = [i for i, item in enumerate(items) if E2E_DIR in item.path.resolve().parents]
    e2e = sorted((items[i] for i in slots), key=lambda item: (
        uses(item, "nodes_down"), item.path.name == "test_demo_node.py",
        uses(item, "release")))
    for i, item in zip(slots, e2e, strict=True):
        items[i] = item
        item.add_marker(pytest.mark.e2e)
        if SKIP_REASON:
            item.add_marker(pytest.mark.skip(reason=f"no real node here: {SKIP_REASON}"))
    if not e2e or SKIP_REASON or config.option.collectonly:
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
    """Start ./scripts/demo and the session's node and release in the background, as far
    as the tests still selected once -k/-m have deselected need them."""
    if SKIP_REASON or _prepare_error or not _images or session.config.option.collectonly:
        return
    e2e = [item for item in session.items if E2E_DIR in item.path.resolve().parents]
    if any(uses(item, "host_before") for item in e2e):
        _host_before.append(HostSnapshot.take())
    if any(item.path.name == "test_demo_node.py" for item in e2e):
        start_demo()
    if any(uses(item, "node_plane") for item in e2e):
        _session_node.append(SessionNode(release=any(uses(item, "release") for item in e2e)))


def start_demo() -> BackgroundDemo:
    """./scripts/demo in the background (once): its images are those built at collection."""
    if not _demo:
        _demo.append(BackgroundDemo())
    return _demo[0]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The session's node goes down after the last test that uses it, not at the end of
    the whole run: idle, it still took CPU from every test after tests/e2e."""
    if _session_node and uses(item, "node_plane") and not any(
            uses(later, "node_plane") for later in _items_after(item)):
        _session_node[0].down()


def _items_after(item: pytest.Item) -> list[pytest.Item]:
    items = item.session.items
    return items[items.index(item) + 1:]


def pytest_sessionfinish() -> None:
    for demo in _demo:  # its test did not run to the end (-x, interrupted)
        demo.stop()
        demo.remove_run_dir()
    for node in _session_node:
        node.down()


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
def node_plane() -> ControlPlane:
    """The session's node, with the images imported (up since collection)."""
    if _prepare_error:
        pytest.fail(_prepare_error, pytrace=False)
    return _session_node[0].result(_session_node[0].plane)


@pytest.fixture(scope="session")
def host_before() -> HostSnapshot:
    """The host as it was once collected, before the demo's and the session's nodes."""
    return _host_before[0]


@pytest.fixture(scope="session")
def bridge_mac_at_up(node_plane: ControlPlane) -> str:
    """The MAC of the session node's pod network gateway before any pod joined."""
    assert _session_node[0].bridge_mac is not None
    return _session_node[0].bridge_mac


@pytest.fixture
def nodes_down(node_plane: ControlPlane) -> list[NodeRun]:
    """The nodes of this run, once down: the demo's (when it ran) after it ended, and the
    session's (taken down here, before its last test would)."""
    runs = []
    for demo in _demo:
        demo.wait(timeout=540)
        runs.append(node_run(demo.run_dir / "control-plane"))
    runs.append(node_run(_session_node[0].run_dir))
    _session_node[0].down()
    return runs


def node_run(run: Path) -> NodeRun:
    node = node_module()
    return NodeRun(run, node.netns_name(run), node.cgroup_root(run), node.network_name(run))


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
    return _session_node[0].result(_session_node[0].release)


class SessionNode:
    """The session's node (`up --node`, the images imported while it starts) and, if
    asked, charts/podq installed on it: prepared in a background thread from the end of
    collection; a fixture waits for what it needs and fails with what went wrong."""

    def __init__(self, release: bool) -> None:
        self.run_dir = Path(tempfile.mkdtemp(prefix="podq-e2e-"))  # short: node sockets
        self.report: list[str] = []
        self.bridge_mac: str | None = None
        self._down = False
        self._thread = ThreadPoolExecutor(max_workers=1)
        self.plane: Future[ControlPlane] = self._thread.submit(self._up)
        self.release: Future[Release] | None = (
            self._thread.submit(self._install) if release else None)

    def _up(self) -> ControlPlane:
        started = time.monotonic()
        plane = ControlPlane.up(self.run_dir, exit_with=os.getpid(), node=True,
                                images=(image["archive"] for image in _images.values()))
        self.report.append(f"node up with its images in {time.monotonic() - started:.1f}s")
        # the pod network's gateway before any pod joined (test_node_lifecycle)
        self.bridge_mac = link_address(plane.state["node"]["netns"], "podq0")
        return plane

    def _install(self) -> Release:
        plane = self.plane.result()
        took = install_chart(plane, RELEASE, NAMESPACE, helm_values(plane), restricted=True)
        self.report.append(f"helm install --wait took {took:.1f}s")
        deployments = json.loads(plane.kubectl(
            "get", "deployments", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=worker",
            "-o", "json").stdout)["items"]
        assert len(deployments) == 1, deployments
        release = Release(plane, NAMESPACE, deployments[0]["metadata"]["name"])
        started = time.monotonic()
        release.wait_scaled_to_zero()  # the chart's Deployment starts with one pod
        took = time.monotonic() - started
        self.report.append(f"the operator scaled the workers to zero in {took:.1f}s")
        # that pod, stopped while it starts, ends at once: not after its grace period
        # (20 + 30 s)
        assert took < 50, f"the first worker pod took {took:.0f}s to go"
        return release

    def result(self, future: Future | None) -> Any:
        """What future gives once done; a failure to prepare fails the test that needs it."""
        assert future is not None, "the session's release was not prepared: not selected"
        try:
            value = future.result(timeout=600)
        except RuntimeError as err:
            pytest.fail(str(err), pytrace=False)
        print("\n".join(self.report))
        return value

    def down(self) -> None:
        """Once (after the last test that uses it, or at the end of the session)."""
        if self._down:
            return
        self._down = True
        self._thread.shutdown(wait=True)  # an `up` or install still going: let it end
        if self.plane.done() and self.plane.exception() is None:
            self.plane.result().down()
        shutil.rmtree(self.run_dir, ignore_errors=True)
