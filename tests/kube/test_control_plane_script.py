"""scripts/control-plane itself: several planes at once, env, status, and its bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from podq.testing import CONTROL_PLANE_SCRIPT, ControlPlane, run_control_plane_script

pytestmark = pytest.mark.kube

FAKE_GO = """#!/bin/sh
if [ "$1 $2" = "env GOVERSION" ]; then echo go1.26.0; exit 0; fi
echo "fake go: cannot build today ($*)" >&2
exit 3
"""


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """os.environ with an empty binary cache, no KUBEBUILDER_ASSETS, plus extra."""
    env = {k: v for k, v in os.environ.items() if k != "KUBEBUILDER_ASSETS"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "empty-cache")
    env.update(extra)
    return env


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_status_env_and_down_when_nothing_runs(tmp_path: Path) -> None:
    run = tmp_path / "never-up"
    status = run_control_plane_script("status", run_dir=run)
    assert status.returncode == 1
    assert "down" in status.stdout
    env = run_control_plane_script("env", run_dir=run)
    assert env.returncode == 1 and env.stdout == ""
    assert "up` first" in env.stderr
    down = run_control_plane_script("down", run_dir=run)
    assert down.returncode == 0 and "already down" in down.stdout


def test_no_go_and_no_assets_says_what_to_install(tmp_path: Path) -> None:
    result = run_control_plane_script("install", env=clean_env(tmp_path, PODQ_GO=""))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "install Go >= 1.26" in lines[0] and "KUBEBUILDER_ASSETS" in lines[0]


def test_unknown_subcommand_is_a_usage_error() -> None:
    result = run_control_plane_script("sideways")
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_empty_kubebuilder_assets_falls_back_to_built_binaries(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    empty = tmp_path / "assets"
    empty.mkdir()
    result = run_control_plane_script(
        "install", env={**os.environ, "KUBEBUILDER_ASSETS": str(empty)}
    )
    assert result.returncode == 0, result.stderr
    assert f"KUBEBUILDER_ASSETS={empty} lacks kube-apiserver, etcd, kubectl" in result.stderr
    paths = dict(line.split() for line in result.stdout.splitlines())
    assert set(paths) == {"kube-apiserver", "kube-controller-manager", "kubectl", "etcd", "helm",
                          "kubelet", "kube-scheduler", "promtool"}
    assert not any(p.startswith(str(empty)) for p in paths.values())


def test_kubebuilder_assets_are_used_and_only_the_rest_is_built(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """envtest's folder (kube-apiserver, etcd, kubectl, here also kube-controller-manager
    and the node's binaries): only helm is built; a failing build shows the command and
    the log's tail."""
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("kube-apiserver", "etcd", "kubectl", "kube-controller-manager", "kubelet",
                 "kube-scheduler"):
        (assets / name).symlink_to((control_plane.bin / name).resolve())
    fake_go = tmp_path / "go"
    fake_go.write_text(FAKE_GO)
    fake_go.chmod(0o755)
    env = clean_env(tmp_path, KUBEBUILDER_ASSETS=str(assets), PODQ_GO=str(fake_go))
    result = run_control_plane_script("install", env=env)
    assert result.returncode == 1
    assert "building helm from helm.sh/helm/v3@" in result.stderr
    assert "kube-apiserver" not in result.stderr  # taken from the assets, not built
    assert "build step failed (exit 3)" in result.stderr
    assert f"{fake_go} mod tidy" in result.stderr  # the command that failed
    assert "fake go: cannot build today (mod tidy)" in result.stderr  # the log's tail


def test_up_is_idempotent_and_env_gives_our_kubectl(control_plane: ControlPlane) -> None:
    again = run_control_plane_script("up", run_dir=control_plane.run_dir)
    assert again.returncode == 0
    assert "already up" in again.stderr
    state = json.loads((control_plane.run_dir / "state.json").read_text())
    assert state["processes"] == control_plane.state["processes"]

    env = {**os.environ, "PODQ_CONTROL_PLANE_DIR": str(control_plane.run_dir)}
    shell = subprocess.run(
        ["bash", "-c", f'eval "$({CONTROL_PLANE_SCRIPT} env)" && command -v kubectl && '
         "kubectl version -o json && helm version --short"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert shell.returncode == 0, shell.stderr
    which, rest = shell.stdout.split("\n", 1)
    assert which == str(control_plane.bin / "kubectl")
    version = json.loads(rest[: rest.rindex("}") + 1])
    assert version["serverVersion"]["gitVersion"] == control_plane.state["version"]
    assert rest.strip().splitlines()[-1].startswith("v3.")


def test_two_control_planes_run_at_once_and_down_stops_exactly_its_own(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    second = ControlPlane.up(tmp_path / "second")
    try:
        assert second.server != control_plane.server
        ports = set(second.state["ports"].values())
        assert not ports & set(control_plane.state["ports"].values())
        status = run_control_plane_script("status", run_dir=second.run_dir)
        assert status.returncode == 0, status.stdout
        assert "readyz          ok" in status.stdout
        assert second.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        # they are separate clusters
        second.kubectl("create", "namespace", "only-in-second")
        assert control_plane.kubectl("get", "namespace", "only-in-second",
                                     check=False).returncode != 0
    finally:
        second.down()
    pids = [p["pid"] for p in second.state["processes"].values()]
    assert len(pids) == 3
    assert not any(pid_alive(pid) for pid in pids)
    assert not (tmp_path / "second").exists()
    for info in control_plane.state["processes"].values():
        assert pid_alive(info["pid"])
    assert control_plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    status = run_control_plane_script("status", run_dir=tmp_path / "second")
    assert status.returncode == 1


def test_a_taken_port_is_retried_with_another(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_control_plane_script("up", "--port", str(port), run_dir=tmp_path / "cp")
        try:
            assert result.returncode == 0, result.stderr
            assert f"port {port} is taken; the API server listens on" in result.stderr
            plane = ControlPlane.from_run_dir(tmp_path / "cp")
            assert plane.state["ports"]["apiserver"] != port
            assert plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        finally:
            run_control_plane_script("down", run_dir=tmp_path / "cp")


def test_exit_with_takes_the_control_plane_down_when_its_owner_dies(tmp_path: Path) -> None:
    owner = subprocess.Popen(["sleep", "600"])
    try:
        plane = ControlPlane.up(tmp_path / "cp", exit_with=owner.pid)
    finally:
        owner.kill()
        owner.wait()
    pids = [p["pid"] for p in plane.state["processes"].values()]
    deadline = time.monotonic() + 30
    while any(pid_alive(pid) for pid in pids) or (tmp_path / "cp").exists():
        assert time.monotonic() < deadline, "the watchdog did not take it down"
        time.sleep(0.2)


def test_status_reports_a_dead_process_and_up_starts_afresh(tmp_path: Path) -> None:
    run = tmp_path / "cp"
    plane = ControlPlane.up(run)
    try:
        apiserver = plane.state["processes"]["kube-apiserver"]["pid"]
        os.kill(apiserver, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while pid_alive(apiserver):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status = run_control_plane_script("status", run_dir=run)
        assert status.returncode == 1
        assert "NOT healthy" in status.stdout and "STOPPED" in status.stdout

        again = run_control_plane_script("up", run_dir=run)
        assert again.returncode == 0, again.stderr
        assert "cleaning up a stale or partial control plane" in again.stderr
        old_pids = [p["pid"] for p in plane.state["processes"].values()]
        assert not any(pid_alive(pid) for pid in old_pids)  # the survivors were stopped
        fresh = ControlPlane.from_run_dir(run)
        assert fresh.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    finally:
        run_control_plane_script("down", run_dir=run)


def test_a_cached_binary_of_another_build_recipe_is_rebuilt(tmp_path: Path) -> None:
    """helm built without the Kubernetes version stamp (no bin/.stamp, or another recipe
    in it) is built again; with the script's stamp the cached binary is used."""
    installed = run_control_plane_script("install")
    assert installed.returncode == 0, installed.stderr
    real = {name: Path(path) for name, path in
            (line.split() for line in installed.stdout.splitlines())}
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("kube-apiserver", "etcd", "kubectl", "kube-controller-manager", "kubelet",
                 "kube-scheduler"):
        (assets / name).symlink_to(real[name])
    cache = tmp_path / "cache"
    for name in ("helm", "promtool"):
        folder = cache / "podq" / real[name].parent.parent.name / "bin"
        folder.mkdir(parents=True)
        (folder / name).symlink_to(real[name])
        if name == "promtool":
            (folder / ".stamp").write_text((real[name].parent / ".stamp").read_text())
    helm_stamp = cache / "podq" / real["helm"].parent.parent.name / "bin" / ".stamp"
    fake_go = tmp_path / "go"
    fake_go.write_text(FAKE_GO)
    fake_go.chmod(0o755)
    env = clean_env(tmp_path, XDG_CACHE_HOME=str(cache), KUBEBUILDER_ASSETS=str(assets),
                    PODQ_GO=str(fake_go))
    for stamp in (None, "ldflags: an older recipe\n"):
        if stamp is not None:
            helm_stamp.write_text(stamp)
        result = run_control_plane_script("install", env=env)
        assert result.returncode == 1, result.stdout
        assert "building helm from helm.sh/helm/v3@" in result.stderr
        assert "promtool" not in result.stderr  # its stamp is current
    helm_stamp.write_text((real["helm"].parent / ".stamp").read_text())
    result = run_control_plane_script("install", env=env)
    assert result.returncode == 0, result.stderr
    assert "building" not in result.stderr
    assert f"helm                     {helm_stamp.parent / 'helm'}" in result.stdout

    # promtool is for the tests only: `install --without promtool` (the demo's) and `up`
    # neither need nor build it
    shutil.rmtree(cache / "podq" / real["promtool"].parent.parent.name)
    result = run_control_plane_script("install", "--without", "promtool", env=env)
    assert result.returncode == 0, result.stderr
    assert "promtool" not in result.stdout + result.stderr
    result = run_control_plane_script("install", env=env)
    assert result.returncode == 1
    assert "building promtool from github.com/prometheus/prometheus@" in result.stderr


def test_up_runs_on_kubebuilder_assets(control_plane: ControlPlane, tmp_path: Path) -> None:
    """envtest's three binaries from KUBEBUILDER_ASSETS, the rest from podq's cache."""
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("kube-apiserver", "etcd", "kubectl"):
        (assets / name).symlink_to((control_plane.bin / name).resolve())
    run = tmp_path / "cp"
    result = run_control_plane_script(
        "up", run_dir=run, env={**os.environ, "KUBEBUILDER_ASSETS": str(assets)}
    )
    try:
        assert result.returncode == 0, result.stderr
        binaries = ControlPlane.from_run_dir(run).state["binaries"]
        for name in ("kube-apiserver", "etcd", "kubectl"):
            assert binaries[name] == str(assets / name)
        for name in ("kube-controller-manager", "helm"):
            assert binaries[name] == str((control_plane.bin / name).resolve())
    finally:
        run_control_plane_script("down", run_dir=run)
