"""`up --node` / `down` of a second node, beside the session's: a pod runs on it, its
traffic stays in the run's network namespace, and `down` leaves nothing behind (no
process, mount, network namespace, cgroup or run folder)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from podq.testing import ControlPlane


def processes_mentioning(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{proc.name}: {cmdline}")
    return found


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def host_addresses() -> str:
    return subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True,
                          check=True).stdout


def test_a_node_comes_up_runs_a_pod_and_leaves_nothing_behind(
    node_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = tmp_path_factory.mktemp("second-node")
    before_addresses = host_addresses()
    plane = ControlPlane.up(run, exit_with=os.getpid(), node=True)
    try:
        netns = plane.state["node"]["netns"]
        assert netns in netns_names()
        # the node's address and the pod network exist only inside the namespace
        assert host_addresses() == before_addresses
        assert plane.state["node"]["ip"] not in host_addresses()
        # the host reaches the API server and Redis on loopback only (the forwarder)
        assert plane.server.startswith("https://127.0.0.1:")
        assert plane.redis_url and plane.redis_url.startswith("redis://127.0.0.1:")
        host, port = plane.redis_url.removeprefix("redis://").split("/")[0].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(16) == b"+PONG\r\n"
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pause"},
               "spec": {"containers": [{"name": "pause", "image": "podq.local/pause:1",
                                        "imagePullPolicy": "Never"}]}}
        plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
        plane.kubectl("wait", "--for=condition=Ready", "pod/pause", "--timeout=60s")
        veths = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "type", "veth"],
                               capture_output=True, text=True, check=True).stdout.split()
        pod_netns = veths[veths.index("link-netns") + 1]  # the pod's, wired to our bridge
        assert pod_netns in netns_names()
    finally:
        plane.down()
    assert netns not in netns_names() and pod_netns not in netns_names()
    assert not processes_mentioning(str(run)), processes_mentioning(str(run))
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(run) not in mounts
    cgroup = plane.state["node"]["cgroup_root"].lstrip("/")
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{cgroup}"))
    assert not run.exists() or not list(run.iterdir())
