"""What a node may not leave on the host: processes, mounts, network namespaces, packet
filter rules, addresses, cgroups and the state folders a kubelet, containerd or the CNI
plugins use by default. Read before the e2e nodes start (conftest.py) and again once
they are down (test_node_lifecycle)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from chart_release import node_module


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def processes_mentioning(marker: str) -> list[str]:
    """Command lines (but this process's) that contain marker, e.g. a run folder."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                continue
            if marker in cmdline:
                found.append(f"{proc.name}: {cmdline}")
    return found


# where a kubelet, containerd or the CNI plugins keep state by default: a node keeps its
# own under its run folder, so `up` must not create these, nor `down` leave them
HOST_STATE = ("/var/lib/kubelet", "/var/lib/containerd", "/var/lib/cni", "/run/containerd",
              "/var/run/containerd", "/var/log/pods", "/var/log/containers", "/etc/cni",
              "/opt/cni", "/etc/kubernetes", "/run/runc", "/run/calico", "/var/lib/calico")


def host_state() -> dict[str, list[str]]:
    """What exists of HOST_STATE, with the entries of each folder."""
    found = {}
    for folder in map(Path, HOST_STATE):
        if folder.is_dir():
            found[str(folder)] = sorted(p.name for p in folder.iterdir())
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


def host_addresses() -> str:
    return subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True,
                          check=True).stdout


def link_address(netns: str, link: str) -> str:
    words = subprocess.run(["ip", "-n", netns, "-o", "link", "show", link], capture_output=True,
                           text=True, check=True).stdout.split()
    return words[words.index("link/ether") + 1]


@dataclass(frozen=True)
class HostSnapshot:
    """The host's side, read while no node of the run is up."""

    state: dict[str, list[str]]
    firewall: str
    addresses: str
    netns: frozenset[str]
    kubelets: frozenset[int]  # other nodes' of a shared machine (CI runs none)

    @classmethod
    def take(cls) -> HostSnapshot:
        return cls(host_state(), host_firewall(), host_addresses(), frozenset(netns_names()),
                   frozenset(node_module().kubelets()))


@dataclass(frozen=True)
class NodeRun:
    """What one `up --node` of the run made, by the names it derives from its run folder."""

    run: Path  # the control plane's run folder (the node's is inside)
    netns: str
    cgroup_root: str
    network: str  # the CNI network: its cached results on the host start with it
