"""Real servers for tests, benchmarks and the local run: no mocks.

`RedisServer` starts Debian's `redis-server` on a free loopback port in a
temporary folder and stops exactly that process.

`ControlPlane` drives `scripts/control-plane` (etcd, kube-apiserver,
kube-controller-manager on free loopback ports; with `node=True` also a real node) in a
run folder of its own, and stops exactly what it started.

`build_images` and `install_chart` put podq's chart, with the worker and operator images
built here, on such a node: the e2e tests, `scripts/demo` and benchmarks/ share them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


def ephemeral_port_floor() -> int:
    """The first port the kernel gives outgoing connections (Linux: 32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(below: int | None = None) -> int:
    """A loopback TCP port that was free a moment ago, below `below` (default: the
    kernel's ephemeral range). Below that range no outgoing connection (a test opens
    thousands) can take the port between this choice and the server's bind, which a
    port the kernel picked (bind to 0) is exposed to; only another listener still can,
    and callers retry on that."""
    top = min(below or ephemeral_port_floor(), ephemeral_port_floor())
    for _ in range(200):
        port = random.randrange(10000, top)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in 10000-{top}")


def wait_for_port(port: int, deadline_s: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {deadline_s}s"
                ) from None
            time.sleep(0.02)


def stop_process(process: subprocess.Popen, timeout_s: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within timeout_s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """A private redis-server process on 127.0.0.1 and a free port.

    Use as a context manager, or call start()/stop(). `restart(empty=True)` simulates
    Redis coming back without its data.
    """

    def __init__(self, binary: str | None = None, port: int | None = None) -> None:
        self.binary = binary or os.environ.get("PODQ_REDIS_SERVER") or shutil.which("redis-server")
        if not self.binary:
            raise RuntimeError(
                "redis-server not found: install Debian's package (apt-get install redis-server)"
                " or set PODQ_REDIS_SERVER to its path"
            )
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="podq-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        for _attempt in range(5):
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.dir),
                    "--save", "",
                    "--appendonly", "no",
                    "--protected-mode", "no",
                    "--loglevel", "warning",
                    "--logfile", str(self.dir / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_listening(deadline_s=60):
                return self
            self.process.kill()
            self.process.wait()
            self.port = free_port()  # the port was taken between choice and bind
        raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}")

    def _wait_listening(self, deadline_s: float) -> bool:
        """True once this redis-server answers PING on its port; False if it exited (the
        port was taken between its choice and the bind: whatever accepts connections
        there is not it) or did not answer within deadline_s."""
        assert self.process is not None
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG") and self.process.poll() is None:
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.process:
            stop_process(self.process, 10)
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port; with --save "" it comes back empty."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


REPO = Path(__file__).resolve().parents[2]  # the checkout (podq is installed editable)
CONTROL_PLANE_SCRIPT = Path(
    os.environ.get("PODQ_CONTROL_PLANE_SCRIPT") or REPO / "scripts" / "control-plane"
)


def run_control_plane_script(
    *args: str,
    run_dir: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
) -> subprocess.CompletedProcess[str]:
    """Run scripts/control-plane ARGS (in run_dir if given); output captured as text."""
    full_env = dict(os.environ if env is None else env)
    if run_dir is not None:
        full_env["PODQ_CONTROL_PLANE_DIR"] = str(run_dir)
    return subprocess.run(
        [str(CONTROL_PLANE_SCRIPT), *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, check=False,
    )


@dataclass
class ControlPlane:
    """A running local control plane, as `scripts/control-plane up` recorded it.

    `ControlPlane.up(run_dir)` starts one (building the binaries the first time);
    `down()` stops it and removes its data. Also a context manager.
    """

    run_dir: Path
    kubeconfig: Path
    server: str
    bin: Path
    unprivileged_kubeconfig: Path
    admin_context: str
    unprivileged_context: str
    unprivileged_user: str
    state: dict[str, Any] = field(repr=False)
    # with a node (`up --node`): Redis as the host reaches it, and as pods reach it
    redis_url: str | None = None
    pod_redis_url: str | None = None

    @classmethod
    def up(
        cls, run_dir: Path | None = None, exit_with: int | None = None, port: int | None = None,
        node: bool = False, images: Iterable[str | Path] = (),
    ) -> ControlPlane:
        """Start one in run_dir (default: a new temporary folder).

        exit_with: a pid; the control plane takes itself down once that process is gone
        (so a killed test run leaves nothing behind). port: the API server's port if free.
        node: also a real node (kubelet, containerd, a Redis for the pods; needs root).
        images: image archives (scripts/images) for the node's containerd, imported while
        the rest starts.
        """
        run_dir = Path(run_dir or tempfile.mkdtemp(prefix="podq-control-plane-"))
        args = ["up", "--quiet", *(["--node"] if node else [])]
        args += [f"--image={archive}" for archive in images]
        if exit_with:
            args += ["--exit-with", str(exit_with)]
        if port:
            args += ["--port", str(port)]
        result = run_control_plane_script(*args, run_dir=run_dir)
        if result.returncode != 0:
            raise RuntimeError(
                f"`scripts/control-plane up` failed (exit {result.returncode}):\n"
                f"{result.stderr}{result.stdout}"
            )
        return cls.from_run_dir(run_dir)

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> ControlPlane:
        state = json.loads((run_dir / "state.json").read_text())
        return cls(
            run_dir=run_dir,
            kubeconfig=Path(state["kubeconfig"]),
            server=state["server"],
            bin=Path(state["bin_dir"]),
            unprivileged_kubeconfig=Path(state["unprivileged_kubeconfig"]),
            admin_context=state["admin_context"],
            unprivileged_context=state["unprivileged_context"],
            unprivileged_user=state["unprivileged_user"],
            state=state,
            redis_url=state.get("node", {}).get("redis_url"),
            pod_redis_url=state.get("node", {}).get("pod_redis_url"),
        )

    def load_images(self, *archives: str | Path) -> None:
        """Import image archives (scripts/images) into the node's containerd."""
        result = run_control_plane_script(
            "load-image", *map(str, archives), run_dir=self.run_dir, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"`scripts/control-plane load-image` failed:\n{result.stderr}")

    def down(self) -> None:
        result = run_control_plane_script("down", run_dir=self.run_dir, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(
                f"`scripts/control-plane down` failed:\n{result.stderr}{result.stdout}"
            )

    def restart_apiserver(self, down_for: float = 0.0) -> None:
        """Stop the API server, keep it down `down_for` seconds, start it again (same port
        and etcd) and wait until it is ready: a control-plane outage for fault tests."""
        result = run_control_plane_script("restart-apiserver", "--down-for", str(down_for),
                                          run_dir=self.run_dir, timeout=150)
        if result.returncode != 0:
            raise RuntimeError(
                f"`scripts/control-plane restart-apiserver` failed:\n{result.stderr}{result.stdout}"
            )

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @property
    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG and PATH (our kubectl and helm first) for this cluster."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "PODQ_CONTROL_PLANE_DIR": str(self.run_dir),
        }

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        unprivileged: bool = False,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Our kubectl (never the machine's) against this cluster; raises on failure if check."""
        kubeconfig = self.unprivileged_kubeconfig if unprivileged else self.kubeconfig
        cmd = [str(self.bin / "kubectl"), f"--kubeconfig={kubeconfig}", *args]
        result = subprocess.run(
            cmd, input=input, capture_output=True, text=True, env=self.env, timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stderr}{result.stdout}"
            )
        return result

    def kubectl_json(self, *args: str, **kwargs: Any) -> Any:
        """kubectl ARGS -o json, parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", **kwargs).stdout)

    def wait_for(
        self, what: str, predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2
    ) -> Any:
        """Poll predicate() until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    def discard_namespace(self, name: str) -> None:
        """Delete a test's namespace without waiting, and take the finalizers off the
        podq resources left in it: with the test's operator gone nobody would remove
        them, and the namespace would stay terminating for the rest of the run, its
        objects listed again and again by the namespace controller (a loaded API
        server for every later test)."""
        self.kubectl("delete", "namespace", name, "--wait=false", check=False)
        held = self.kubectl("get", "jobs.podq.dev,cronjobs.podq.dev", "-n", name,
                            "-o", "name", check=False).stdout.split()
        if held:
            self.kubectl("patch", "-n", name, *held, "--type=merge",
                         "-p", '{"metadata":{"finalizers":null}}', check=False)

    def wait_for_service_account(self, namespace: str, name: str = "default") -> None:
        """The serviceaccount controller creates `default` in each namespace shortly after it."""
        self.wait_for(
            f"serviceaccount {namespace}/{name}",
            lambda: self.kubectl(
                "get", "serviceaccount", name, "-n", namespace, check=False
            ).returncode == 0,
        )


def build_images(*names: str) -> dict[str, dict]:
    """`scripts/images build` (cached by inputs): {name: {ref, repository, tag, archive,
    seconds}} of the worker and operator images (or of names)."""
    built = subprocess.run([str(REPO / "scripts" / "images"), "build", *names],
                           capture_output=True, text=True, check=False, timeout=1800)
    if built.returncode != 0:
        raise RuntimeError(f"`scripts/images build` failed:\n{built.stderr}")
    images = [json.loads(line) for line in built.stdout.splitlines() if line.strip()]
    return {image["name"]: image for image in images}


def chart_image_values(images: dict[str, dict]) -> dict:
    """Helm values pointing the chart at images imported into the node (no registry)."""
    def image(name: str) -> dict:
        built = images[name]
        return {"repository": built["repository"], "tag": built["tag"], "pullPolicy": "Never"}
    return {"operator": {"image": image("operator")}, "workers": {"image": image("worker")}}


def install_chart(plane: ControlPlane, release: str, namespace: str, values: dict,
                  restricted: bool = False, timeout: float = 180) -> float:
    """`helm install --wait` of charts/podq into a new namespace (enforcing the
    `restricted` Pod Security level if asked); returns the seconds it took."""
    plane.kubectl("create", "namespace", namespace)
    if restricted:
        plane.kubectl("label", "namespace", namespace,
                      "pod-security.kubernetes.io/enforce=restricted",
                      "pod-security.kubernetes.io/enforce-version=latest")
    plane.wait_for_service_account(namespace)
    home = plane.run_dir / "helm-home"
    env = {**plane.env, "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    started = time.monotonic()
    out = subprocess.run(
        [str(plane.bin / "helm"), "install", release, str(REPO / "charts" / "podq"),
         "-n", namespace, "--values", "-", "--wait", "--timeout", f"{timeout:.0f}s"],
        input=json.dumps(values), capture_output=True, text=True, env=env, check=False,
        timeout=timeout + 60)
    if out.returncode != 0:
        pods = plane.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        events = plane.kubectl("get", "events", "-n", namespace, check=False).stdout
        raise RuntimeError(f"helm install failed:\n{out.stderr}\n{pods}\n{events}")
    return time.monotonic() - started
