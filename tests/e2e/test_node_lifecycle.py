"""`up --node` / `down`: the session's node keeps to its network namespace while pods run
on it, and once it and the demo's node are down nothing of them is left on the host (no
process, mount, network namespace, packet filter rule, address, cgroup, run folder or
state folder of the host's own); bad input to `up` is refused before anything starts."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from chart_release import node_module, script_module
from host import (
    HostSnapshot,
    NodeRun,
    host_addresses,
    host_firewall,
    host_state,
    link_address,
    netns_names,
    processes_mentioning,
)

from podq.testing import ControlPlane, run_control_plane_script


def test_the_node_keeps_to_its_network_namespace(
    node_plane: ControlPlane, host_before: HostSnapshot, bridge_mac_at_up: str
) -> None:
    netns = node_plane.state["node"]["netns"]
    assert netns in netns_names()
    # the node's address and the pod network exist only inside the namespace
    assert host_addresses() == host_before.addresses
    assert node_plane.state["node"]["ip"] not in host_addresses()
    # the host reaches the API server and Redis on loopback only (the forwarder)
    assert node_plane.server.startswith("https://127.0.0.1:")
    assert node_plane.redis_url and node_plane.redis_url.startswith("redis://127.0.0.1:")
    host, port = node_plane.redis_url.removeprefix("redis://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(b"PING\r\n")
        assert conn.recv(16) == b"+PONG\r\n"
    name = f"pause-{uuid.uuid4().hex[:6]}"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "pause", "image": "podq.local/pause:1",
                                    "imagePullPolicy": "Never"}]}}
    node_plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    node_plane.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=60s")
    # the pod network's gateway keeps the MAC it had before any pod joined (pods join and
    # leave): the pods' ARP entries for it stay right (a bridge left to pick its ports'
    # lowest MAC changes it, and pods lose Redis and the API server for up to ~30 s)
    assert link_address(netns, "podq0") == bridge_mac_at_up
    # the kubelet's and the pod network's rules are the namespace's, not the host's
    assert host_firewall() == host_before.firewall
    veths = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "type", "veth"],
                           capture_output=True, text=True, check=True).stdout.split()
    pod_netns = veths[veths.index("link-netns") + 1]  # a pod's, wired to our bridge
    assert pod_netns in netns_names() - host_before.netns
    node_plane.kubectl("delete", "pod", name, "--wait=false")


def test_the_nodes_leave_nothing_behind(
    nodes_down: list[NodeRun], host_before: HostSnapshot
) -> None:
    """Run last of tests/e2e: the demo's node (when it ran) and the session's are down."""
    assert host_firewall() == host_before.firewall
    assert host_addresses() == host_before.addresses
    mounts = Path("/proc/self/mountinfo").read_text()
    for node in nodes_down:
        assert node.netns not in netns_names()
        assert not processes_mentioning(str(node.run)), processes_mentioning(str(node.run))
        assert str(node.run) not in mounts
        assert not list(Path("/sys/fs/cgroup").glob(f"*/{node.cgroup_root.lstrip('/')}"))
        assert not node.run.exists() or not list(node.run.iterdir())
    foreign = host_before.kubelets | set(node_module().kubelets())
    if not foreign:  # CI runs no other node: the host is as it was
        assert netns_names() == host_before.netns  # the pods' namespaces too
        assert host_state() == host_before.state
    else:  # another node of this machine writes there meanwhile: nothing of ours is left
        print(f"kubelets of other nodes (pids {sorted(foreign)}): only our entries checked")
        marks = tuple(f"{node.network}-" for node in nodes_down)
        runs = tuple(str(node.run) for node in nodes_down)
        ours = [str(entry) for folder in map(Path, host_state()) if folder.is_dir()
                for entry in folder.iterdir() if entry.name.startswith(marks)
                or (entry.is_symlink() and str(entry.readlink()).startswith(runs))]
        assert not ours, ours


def test_missing_node_packages_are_installed_or_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh Debian machine lacks some of what a node needs: `up --node` installs each
    with apt-get (so the e2e tests run there); only without apt-get is the node refused,
    the packages named (and the e2e tests skipped with that reason)."""
    node = node_module()
    assert node.unsupported_reason() is None  # this machine runs the node
    bare = tmp_path / "bin"  # a PATH holding nothing but, at first, apt-get
    bare.mkdir()
    (bare / "apt-get").symlink_to(shutil.which("apt-get") or "/usr/bin/apt-get")
    monkeypatch.setenv("PATH", str(bare))
    missing = node.missing_packages()
    for package in ("containerd", "runc", "iproute2", "gcc"):
        assert package in missing, missing
    assert node.unsupported_reason() is None  # apt-get installs them at `up --node`
    (bare / "apt-get").unlink()
    reason = node.unsupported_reason()
    assert reason and "no apt-get" in reason and "iproute2" in reason, reason


def test_a_run_folder_too_long_for_the_node_sockets_is_refused_at_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """containerd refuses a socket path over 104 characters and the kubelet exits on its
    pod-resources socket's: `up --node` says so, naming the limit, before starting
    anything (it failed in containerd's log, the cause buried there), and ./scripts/demo
    takes its processes mode for that reason (scripts/demo.py, the same check)."""
    node = node_module()
    base = tmp_path_factory.mktemp("s")  # a test's own tmp_path is long already
    short = base / "cp"
    assert node.run_folder_problem(short) is None
    long = base / ("x" * (node.SOCKET_PATH_MAX - len(str(short)))) / "cp"
    reason = node.run_folder_problem(long)
    assert reason and "too long for the node's sockets" in reason, reason
    result = run_control_plane_script("up", "--node", run_dir=long, timeout=120)
    assert result.returncode != 0
    assert "too long for the node's sockets" in result.stderr, result.stderr
    # its namespace never made (not a comparison of all: other nodes of a shared machine
    # come and go meanwhile)
    assert node.netns_name(long) not in netns_names()
    assert list(long.iterdir()) == []  # nothing started, nothing written


def node_images(plane: ControlPlane) -> list[str]:
    out = subprocess.run(
        ["ctr", "--address", str(Path(plane.state["node"]["dir"]) / "containerd.sock"),
         "-n", "k8s.io", "images", "ls", "-q"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_image_archives_are_imported_at_up_or_later(
    node_plane: ControlPlane, images: dict[str, dict], tmp_path: Path
) -> None:
    """`up --node --image` imported the session's images while the control plane started;
    `load-image` adds one to a running node; a bad `--image` is refused before anything
    starts."""
    assert {image["ref"] for image in images.values()} <= set(node_images(node_plane))
    assert node_plane.state["node"]["images_imported_in"] > 0
    oci = script_module("podq_oci")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "hello").write_text("hello\n")
    oci.layer_from_dir(tmp_path / "root", tmp_path / "layer.tar")
    ref = f"podq.local/loaded-{uuid.uuid4().hex[:6]}:1"
    oci.write_archive(ref, [tmp_path / "layer.tar"], {"Cmd": ["/hello"]}, tmp_path / "image.tar")
    node_plane.load_images(tmp_path / "image.tar")
    assert ref in node_images(node_plane)

    for args, says in ((["--image", str(tmp_path / "image.tar")], "--image needs --node"),
                       (["--node", "--image", str(tmp_path / "none.tar")],
                        "no such archive")):
        run = tmp_path / f"cp{len(args)}"
        result = run_control_plane_script("up", *args, run_dir=run, timeout=60)
        assert result.returncode != 0
        assert says in result.stderr, result.stderr
        assert not run.exists() or not list(run.iterdir())  # nothing started
