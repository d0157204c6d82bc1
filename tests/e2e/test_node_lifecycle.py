"""`up --node` / `down` of a second node, beside the session's: a pod runs on it, its
traffic stays in the run's network namespace, and `down` leaves nothing behind (no
process, mount, network namespace, iptables chain, cgroup, run folder or state folder of
the host's own)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
from chart_release import NAMESPACE, node_module, script_module

from podq.testing import ControlPlane, run_control_plane_script


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


# where a kubelet, containerd or the CNI plugins keep state by default: the node keeps
# its own under the run folder, so `up` must not create these, nor `down` leave them
HOST_STATE = ("/var/lib/kubelet", "/var/lib/containerd", "/var/lib/cni", "/run/containerd",
              "/var/run/containerd", "/var/log/pods", "/var/log/containers", "/etc/cni",
              "/opt/cni", "/etc/kubernetes", "/run/runc", "/run/calico", "/var/lib/calico")


def host_state(session: ControlPlane) -> dict[str, list[str]]:
    """What exists of HOST_STATE (with the entries of each folder), but for what the
    session's node makes meanwhile (its pods' log links and CNI results)."""
    theirs = (f"_{NAMESPACE}_", f"{session.state['node']['network']}-")
    found = {}
    for folder in map(Path, HOST_STATE):
        if folder.is_dir():
            found[str(folder)] = sorted(p.name for p in folder.iterdir()
                                        if not any(mark in p.name for mark in theirs))
        elif folder.exists():
            found[str(folder)] = []
    return found


def host_firewall() -> str:
    """The host namespace's packet filter rules (iptables and nftables, where present)."""
    dumps = []
    for cmd in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
        if shutil.which(cmd[0]):
            out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
            # counters and the dump's timestamp comments change by themselves
            dumps.append("\n".join(line.split(" [")[0] for line in out.splitlines()
                                   if not line.startswith("#")))
    return "\n".join(dumps)


def link_address(netns: str, link: str) -> str:
    words = subprocess.run(["ip", "-n", netns, "-o", "link", "show", link], capture_output=True,
                           text=True, check=True).stdout.split()
    return words[words.index("link/ether") + 1]


def host_addresses() -> str:
    return subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True,
                          check=True).stdout


def test_a_node_comes_up_runs_a_pod_and_leaves_nothing_behind(
    node_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = tmp_path_factory.mktemp("second-node")
    node = node_module()
    session_node = Path(node_plane.state["node"]["dir"])
    foreign = set(node.other_kubelets(session_node))  # other nodes of a shared machine
    before_addresses = host_addresses()
    before_state, before_firewall = host_state(node_plane), host_firewall()
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
        bridge_mac = link_address(netns, "podq0")
        plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
        plane.kubectl("wait", "--for=condition=Ready", "pod/pause", "--timeout=60s")
        # the pod network's gateway keeps its MAC as pods join (and leave): the pods'
        # ARP entries for it stay right (a bridge left to pick its ports' lowest MAC
        # changes it, and pods lose Redis and the API server for up to ~30 s)
        assert link_address(netns, "podq0") == bridge_mac
        # the kubelet's and the pod network's rules are the namespace's, not the host's
        assert host_firewall() == before_firewall
        veths = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "type", "veth"],
                               capture_output=True, text=True, check=True).stdout.split()
        pod_netns = veths[veths.index("link-netns") + 1]  # the pod's, wired to our bridge
        assert pod_netns in netns_names()
        sandboxes = node.sandbox_ids(Path(plane.state["node"]["dir"]))
    finally:
        plane.down()
    assert netns not in netns_names() and pod_netns not in netns_names()
    assert host_firewall() == before_firewall
    foreign |= set(node.other_kubelets(session_node))
    if not foreign:
        assert host_state(node_plane) == before_state
    else:  # another node of this machine (not the session's) writes there meanwhile:
        # nothing of ours is left, at least (CI runs no other node)
        print(f"kubelets of other nodes (pids {sorted(foreign)}): only our entries checked")
        marks = (f"{plane.state['node']['network']}-", *sandboxes)
        ours = [f"{folder}/{entry.name}" for folder in map(Path, HOST_STATE) if folder.is_dir()
                for entry in folder.iterdir() if any(m in entry.name for m in marks)
                or (entry.is_symlink() and str(run) in os.readlink(entry))]
        assert not ours, ours
    assert not processes_mentioning(str(run)), processes_mentioning(str(run))
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(run) not in mounts
    cgroup = plane.state["node"]["cgroup_root"].lstrip("/")
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{cgroup}"))
    assert not run.exists() or not list(run.iterdir())


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
