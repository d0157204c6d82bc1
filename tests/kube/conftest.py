"""A real Kubernetes control plane for the tests under tests/kube (all marked `kube`).

`control_plane` (session scope) is a `podq.testing.ControlPlane`: it runs
`scripts/control-plane up` in a private run folder and `down` at the end: etcd,
kube-apiserver (RBAC on) and kube-controller-manager on free loopback ports; no
kubelet, so Pods stay Pending. The binaries are built once (cached under
~/.cache/podq) or taken from KUBEBUILDER_ASSETS; that happens at collection,
before the first test, so a cold build is not cut short by the per-test timeout.
Nothing here is ever skipped: a missing binary is built, and a failed build fails
the tests with the build log's tail.

The operator harness fixtures (`harness`, `podq_crds`: operator_harness.py) are registered
here for every kube test.

`plane` (module scope) is a control plane of the module's own, apart from the session's,
for the chart tests that install cluster-scoped objects (test_chart_install.py,
test_chart_dry_run.py): each such module starts one, and it goes down when the module ends.

    async def test_x(control_plane, kube_api, namespace):
        core = kubernetes_asyncio.client.CoreV1Api(kube_api)
        await core.list_namespaced_pod(namespace)
        control_plane.kubectl("get", "pods", "-n", namespace)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config
from operator_harness import harness_fixture, podq_crds_fixture  # noqa: F401 (fixtures)

from podq.testing import ControlPlane, run_control_plane_script

KUBE_DIR = Path(__file__).resolve().parent

_install_error: str | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/kube `kube`; obtain the binaries once, before any test."""
    global _install_error
    selected = False
    for item in items:
        if KUBE_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.kube)
        selected = selected or item.get_closest_marker("kube") is not None
    if not selected or config.option.collectonly:
        return
    result = run_control_plane_script("install")
    if result.returncode != 0:
        _install_error = (
            f"`scripts/control-plane install` failed (exit {result.returncode}):\n"
            f"{result.stderr}{result.stdout}"
        )


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One control plane for the whole session; stopped and removed at its end."""
    if _install_error:
        pytest.fail(_install_error, pytrace=False)
    try:
        # exit_with: should this run be killed, the control plane goes down by itself
        plane = ControlPlane.up(tmp_path_factory.mktemp("control-plane"), exit_with=os.getpid())
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)
    with plane:
        yield plane


async def api_client(kubeconfig: Path) -> client.ApiClient:
    """A kubernetes_asyncio ApiClient for one kubeconfig (its current context)."""
    return await config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)


@pytest.fixture
async def kube_api(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    """An admin (system:masters) kubernetes_asyncio ApiClient, closed after the test."""
    async with await api_client(control_plane.kubeconfig) as api:
        yield api


@pytest.fixture
async def kube_api_unprivileged(
    control_plane: ControlPlane,
) -> AsyncIterator[client.ApiClient]:
    """An ApiClient as the unprivileged user (no groups, no RBAC grants of its own)."""
    async with await api_client(control_plane.unprivileged_kubeconfig) as api:
        yield api


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace per test (deleted afterwards, without waiting; see
    ControlPlane.discard_namespace)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.discard_namespace(name)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        cp = ControlPlane.up(tmp_path_factory.mktemp("chart-control-plane"))
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)
    with cp:
        yield cp
