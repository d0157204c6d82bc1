"""One real Kubernetes node for scripts/control-plane `up --node`: the pieces and their cleanup.

Everything of the node lives in a network namespace the run creates (`podq-<id>`): the
control plane's processes, containerd, the kubelet, a Redis for the pods, and the pod
network (a bridge `podq0` holding the node's address NODE_IP; pods get addresses of
POD_CIDR behind it). The host's own interfaces see nothing: its users reach the API
server and Redis through a loopback forwarder (`forward`), a process that listens on
the host's 127.0.0.1 and dials from inside the namespace.

Without kube-proxy, a pod reaches the API server at the `kubernetes` Service's address
because the namespace owns SERVICE_IP itself and the API server listens there on 443.

Standard library only (the script runs before any venv exists).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

NODE_NAME = "podq-node"
BRIDGE = "podq0"
# Set, not left to the kernel: a bridge without an address of its own takes the lowest
# of its ports' and changes it when that port goes (a pod deleted) or a lower one joins;
# the pods' ARP entries for NODE_IP then name a MAC nobody answers to, and every pod
# loses Redis and the API server for up to ~30 s (a draining worker's liveness record
# expired and its job was run again elsewhere). Locally administered, unicast.
BRIDGE_MAC = "02:70:6f:64:71:01"
NODE_IP = "10.88.0.1"
POD_CIDR = "10.88.0.0/24"
APISERVER_NODE_PORT = 443  # the `kubernetes` Service's port: pods dial SERVICE_IP:443
REDIS_NODE_PORT = 6379
PAUSE_IMAGE = "podq.local/pause:1"
CNI_BIN_DIR = "/usr/lib/cni"  # where Debian's containernetworking-plugins puts them
PACKAGES = {  # command (or a file it installs) -> Debian package
    "containerd": "containerd",
    "runc": "runc",
    f"{CNI_BIN_DIR}/bridge": "containernetworking-plugins",  # and iptables, a dependency
    "ip": "iproute2",  # the node's network namespace, its bridge
    # the pause image: Kubernetes' pause.c, linked static (gcc alone lacks libc's headers
    # and static library: they are only its recommendation)
    "cc": "gcc",
    "/usr/include/stdio.h": "libc6-dev",
}
CGROUP_FS = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000


class NodeUnsupported(Exception):
    """This machine cannot run a node (and why)."""


def node_id(run: Path) -> str:
    return hashlib.sha256(str(run).encode()).hexdigest()[:8]


def netns_name(run: Path) -> str:
    return f"podq-{node_id(run)}"


def cgroup_root(run: Path) -> str:
    return f"/podq-{node_id(run)}"


# ---------------------------------------------------------------- prerequisites


def unsupported_reason() -> str | None:
    """Why a node cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "a node needs root (containerd, runc and network namespaces)"
    if not (CGROUP_FS / "memory").is_dir() and not (CGROUP_FS / "cgroup.controllers").exists():
        return f"no cgroup hierarchy under {CGROUP_FS}"
    missing = missing_packages()
    if missing and not shutil.which("apt-get"):
        return f"missing {', '.join(missing)} (Debian packages) and no apt-get to install them"
    return None


# The longest path a unix socket may have: containerd refuses longer ones (104, the BSD
# limit, under Linux's 108), and the kubelet exits when its pod-resources socket's is over
# 108. The node's sockets live in its run folder, so that folder's path must stay short.
SOCKET_PATH_MAX = 104


def node_sockets(run: Path) -> list[Path]:
    """The unix sockets the node makes under its run folder (the longest names)."""
    node = run.resolve() / "node"
    return [node / "containerd.sock.ttrpc", node / "kubelet" / "pod-resources" / "kubelet.sock"]


def run_folder_problem(run: Path) -> str | None:
    """Why this run folder cannot hold a node (its path too long for the sockets), or None."""
    longest = max(node_sockets(run), key=lambda p: len(str(p)))
    over = len(str(longest)) - SOCKET_PATH_MAX
    if over <= 0:
        return None
    return (f"the run folder's path is too long for the node's sockets: {longest} would be"
            f" {len(str(longest))} characters, a unix socket's path at most {SOCKET_PATH_MAX};"
            f" choose a run folder at most {len(str(run.resolve())) - over} characters long")


def missing_packages() -> list[str]:
    return sorted({pkg for cmd, pkg in PACKAGES.items()
                   if not (shutil.which(cmd) if "/" not in cmd else Path(cmd).exists())})


def install_packages(say) -> None:
    """containerd, runc and the CNI plugins from Debian's packages, when missing."""
    missing = missing_packages()
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise NodeUnsupported(f"missing {', '.join(missing)} and no apt-get to install them")
    say(f"control-plane: installing {', '.join(missing)} (Debian packages)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise NodeUnsupported(f"{' '.join(cmd)} failed:\n{out.stdout[-1500:]}"
                                  f"{out.stderr[-1500:]}")


# ---------------------------------------------------------------- network namespace


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {out.stderr.strip()}")
    return out


def create_netns(name: str, service_ip: str) -> None:
    """The node's namespace: loopback, the bridge with NODE_IP, SERVICE_IP on loopback."""
    ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")
    ip("-n", name, "addr", "add", f"{service_ip}/32", "dev", "lo")
    ip("-n", name, "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge")
    ip("-n", name, "addr", "add", f"{NODE_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE)
    ip("-n", name, "link", "set", BRIDGE, "up")


def enter_netns(name: str) -> None:
    """Move this process (single-threaded) into the namespace; its children start there."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def pod_netns_names(name: str) -> list[str]:
    """The pods' namespaces wired to our bridge (their veth peers live in ours)."""
    out = ip("-n", name, "-o", "link", "show", "type", "veth", check=False).stdout
    found = []
    for line in out.splitlines():
        words = line.split()
        if "link-netns" in words:
            found.append(words[words.index("link-netns") + 1])
    return found


def delete_netns(name: str) -> list[str]:
    """Delete our namespace and any pod namespace still wired to it; returns what went."""
    if not (NETNS_DIR / name).exists():
        return []
    gone = []
    for pod_ns in pod_netns_names(name):
        if ip("netns", "delete", pod_ns, check=False).returncode == 0:
            gone.append(pod_ns)
    ip("netns", "delete", name, check=False)
    return [*gone, name]


# ---------------------------------------------------------------- configuration


def containerd_config(node: Path) -> str:
    """containerd 1.6's config: own root, state, socket; CRI for a machine as this one."""
    return f"""version = 2
root = "{node / 'containerd' / 'root'}"
state = "{node / 'containerd' / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{node / 'containerd.sock'}"

[ttrpc]
  address = "{node / 'containerd.sock.ttrpc'}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # no CAP_SYS_RESOURCE here: runc fails "can't get final child's PID from pipe" without it
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{node / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{node / 'cni' / 'net.d'}"
"""


def cni_config(node: Path, network: str) -> str:
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(node / "cni" / "ipam"),
                },
            },
            {"type": "loopback"},
        ],
    }, indent=2) + "\n"


def kubelet_config(node: Path, pki: Path, cgroups: str) -> str:
    """KubeletConfiguration (JSON is YAML) for cgroup v1 without systemd, in the run folder."""
    return json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "failSwapOn": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroups,
        "cgroupsPerQOS": True,
        "containerRuntimeEndpoint": f"unix://{node / 'containerd.sock'}",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "podCIDR": POD_CIDR,
        "podLogsDir": str(node / "pod-logs"),
        "resolvConf": "",
        "clusterDomain": "cluster.local",
        "maxPods": 60,
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                         "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
        "volumePluginDir": str(node / "kubelet" / "volume-plugins"),
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }, indent=2) + "\n"


def create_cgroups(cgroups: str) -> None:
    """The kubelet's cgroupRoot in every v1 hierarchy (it must exist beforehand)."""
    for hierarchy in cgroup_hierarchies():
        (hierarchy / cgroups.lstrip("/")).mkdir(exist_ok=True)


def cgroup_hierarchies() -> list[Path]:
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]  # v2: one tree
    return [p for p in sorted(CGROUP_FS.iterdir())
            if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists()]


# ---------------------------------------------------------------- the pause image


def pause_image(cache: Path, pause_c: Path, write_archive, layer_from_dir) -> Path:
    """The pod sandbox image: Kubernetes' own pause.c, linked static, cached as an archive."""
    archive = cache / "pause.tar"
    if archive.is_file():
        return archive
    if not shutil.which("cc"):
        raise NodeUnsupported("a C compiler (`cc`, Debian's gcc) is needed for the pause image")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        out = subprocess.run(["cc", "-Os", "-static", "-s", "-o", str(root / "pause"),
                              str(pause_c)], capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise NodeUnsupported(f"compiling {pause_c} failed:\n{out.stderr[-1500:]}")
        layer = Path(tmp) / "layer.tar"
        layer_from_dir(root, layer)
        write_archive(PAUSE_IMAGE, [layer], {"Entrypoint": ["/pause"], "User": "65535:65535"},
                      archive)
    return archive


def import_image(ctr_socket: Path, archive: Path) -> None:
    out = subprocess.run(
        ["ctr", "--address", str(ctr_socket), "-n", "k8s.io", "images", "import",
         str(archive)],  # unpacked now: the first pod of the image starts at once
        capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"ctr images import {archive} failed: {out.stderr.strip()}")


# ---------------------------------------------------------------- teardown


def cgroup_pids(cgroups: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / cgroups.lstrip("/")
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in os.walk(top):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
    return pids


def kill_cgroup_tree(cgroups: str, timeout: float = 10.0) -> int:
    """SIGKILL every process left in our cgroups (containers the runtime did not stop)."""
    killed = 0
    deadline = time.monotonic() + timeout
    while (pids := cgroup_pids(cgroups)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.1)
    return killed


def remove_cgroups(cgroups: str) -> None:
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / cgroups.lstrip("/")
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path (deepest first), from this process's mount table."""
    prefix = str(path).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            found.append(point)
    return sorted(found, key=lambda p: -len(p))


def unmount_under(path: Path) -> list[str]:
    done = []
    for point in mounts_under(path):
        if subprocess.run(["umount", "-l", point], capture_output=True,
                          check=False).returncode == 0:
            done.append(point)
    return done


# What the kubelet and the CNI library write on the host whatever their config says
# (constants in their code): links to each container's log, the device plugins' socket
# folder, the cached result of each pod's network setup. `up` records which of these
# folders it found missing; `down` drops our entries and those folders once empty.
CONTAINER_LOG_LINKS = Path("/var/log/containers")
CNI_RESULTS = Path("/var/lib/cni/results")
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
HOST_FOLDERS = (CONTAINER_LOG_LINKS, DEVICE_PLUGINS,
                Path("/var/lib/kubelet"), CNI_RESULTS, Path("/var/lib/cni"))


def network_name(run: Path) -> str:
    """The CNI network's name: its cached results on the host carry it, so ours are
    told from another node's."""
    return f"podq-{node_id(run)}"


def missing_host_folders() -> list[str]:
    return [str(folder) for folder in HOST_FOLDERS if not folder.exists()]


def sandbox_ids(node: Path) -> set[str]:
    """Ids of the pod sandboxes our containerd made (its CRI keeps a folder for each)."""
    found: set[str] = set()
    for base in (node / "containerd" / "root", node / "containerd" / "state"):
        folder = base / "io.containerd.grpc.v1.cri" / "sandboxes"
        with contextlib.suppress(OSError):
            found.update(p.name for p in folder.iterdir())
    return found


def kubelets() -> dict[int, list[bytes]]:
    """The kubelets running on this host (any node's): pid -> command line."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv and Path(argv[0].decode(errors="replace")).name == "kubelet":
                found[int(proc.name)] = argv
    return found


def other_kubelets(node: Path) -> list[int]:
    """Kubelets running on this host that are not our node's."""
    mark = str(node).encode()
    return [pid for pid, argv in kubelets().items() if not any(mark in a for a in argv)]


def remove_host_leftovers(node: Path, network: str, created: list[str]) -> int:
    """Our log links and cached CNI results, then, once empty, the folders `up` created
    (all of them when no other kubelet runs here); returns how many entries went."""
    gone = 0
    entries = [*(CONTAINER_LOG_LINKS.iterdir() if CONTAINER_LOG_LINKS.is_dir() else []),
               *(CNI_RESULTS.iterdir() if CNI_RESULTS.is_dir() else [])]
    sandboxes = sandbox_ids(node)
    for entry in entries:
        with contextlib.suppress(OSError):
            # a result is `<network>-<sandbox id>-<interface>`; containerd's own loopback
            # one is `cni-loopback-<sandbox id>-lo`
            ours = (os.readlink(entry).startswith(f"{node}/") if entry.is_symlink()
                    else entry.name.startswith(f"{network}-")
                    or entry.name.split("-")[-2:-1] in ([i] for i in sandboxes))
            if ours:
                entry.unlink()
                gone += 1
    if not other_kubelets(node):  # then none of these is anyone's: drop them once empty
        created = [str(folder) for folder in HOST_FOLDERS]
    for folder in sorted(created, key=lambda f: -len(f)):
        if folder == str(DEVICE_PLUGINS):  # our kubelet's socket, left when it stops
            with contextlib.suppress(OSError):
                (DEVICE_PLUGINS / "kubelet.sock").unlink()
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only when empty
    return gone


# containerd 1.6 puts its shims' sockets here whatever its config says; emptied by them
SHIM_SOCKET_DIRS = (Path("/run/containerd/s"), Path("/run/containerd"))


def remove_empty_shim_dirs() -> None:
    for folder in SHIM_SOCKET_DIRS:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: another containerd may use it


def shim_pids(marker: str) -> list[int]:
    """containerd-shim processes started for our containerd (their argv names its socket)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in argv[0] and any(marker.encode() in a for a in argv):
            found.append(int(proc.name))
    return found


# ---------------------------------------------------------------- loopback forwarder


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _forward(routes: list[tuple[socket.socket, str, int]]) -> None:
    async def make_handler(host: str, port: int):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        return handle

    servers = [await asyncio.start_server(await make_handler(host, port), sock=sock)
               for sock, host, port in routes]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def forward(specs: list[str]) -> None:
    """Serve `FD:HOST:PORT` routes: connections accepted on listening socket FD (bound on the
    host's loopback before this process entered the namespace) go to HOST:PORT, dialled
    from the namespace this process runs in."""
    routes = []
    for spec in specs:
        fd, host, port = spec.split(":")
        routes.append((socket.socket(fileno=int(fd)), host, int(port)))
    asyncio.run(_forward(routes))


def listen_on_host_loopback(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
