"""Running the real operator and real workers for tests/kube/test_operator*.py.

The operator runs as `podq operator` in a subprocess (so a test can SIGKILL it), with
short intervals; workers run as `podq worker` processes. Everything talks to the
session's control plane and redis-server. Waits poll the API with deadlines.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from podq import Queue
from podq.testing import ControlPlane, free_port

REPO = Path(__file__).resolve().parents[2]
PODQ = str(REPO / ".venv" / "bin" / "podq")
KUBE_TESTS = Path(__file__).resolve().parent
GROUP, VERSION = "podq.dev", "v1alpha1"

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 60, what: str = "condition",
    interval: float = 0.1,
) -> T:
    """Poll `probe` until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


class Process:
    """A child process with its log file; stopped at teardown if still running."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.args = args
        self.log = log
        self._file = log.open("ab")
        self.popen = subprocess.Popen(args, stdout=self._file, stderr=subprocess.STDOUT, env=env,
                                      cwd=REPO, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies or the OOM killer strikes."""
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 15) -> None:
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._file.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Harness:
    """Starts operators and workers for one test, in one namespace."""

    def __init__(self, plane: ControlPlane, namespace: str, redis_url: str, logs: Path,
                 api: client.ApiClient) -> None:
        self.plane = plane
        self.namespace = namespace
        self.redis_url = redis_url
        self.logs = logs
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.processes: list[Process] = []
        self.queues: dict[str, Queue] = {}

    # -- processes ----------------------------------------------------------------------

    def start_operator(self, *extra: str, wait: bool = True) -> Process:
        port = free_port()
        args = [
            PODQ, "operator", "--namespace", self.namespace, "--redis-url", self.redis_url,
            "--reconcile-interval", "1", "--cron-refresh", "1", "--autoscale-interval", "1",
            "--stabilisation-window", "3", "--liveness", f"http://127.0.0.1:{port}/healthz",
            *extra,
        ]
        env = dict(self.plane.env)
        process = Process(args, self.logs / f"operator-{len(self.processes)}.log", env)
        self.processes.append(process)
        if wait:
            self._wait_healthy(process, port)
        return process

    def _wait_healthy(self, process: Process, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive:
                raise AssertionError(f"operator exited:\n{process.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"operator not healthy after {timeout}s:\n{process.tail()}")

    def start_worker(self, queue: str = "default", *, pod_name: str | None = None,
                     concurrency: int | None = None, env: dict[str, str] | None = None,
                     args: tuple[str, ...] = ()) -> Process:
        env = dict(os.environ, PYTHONPATH=str(KUBE_TESTS), **(env or {}))
        if pod_name:
            env["PODQ_TEST_POD_NAME"] = pod_name
        command = [PODQ, "worker", "operator_worker_settings.settings", "--redis-url",
                   self.redis_url, "--queue", queue, *args]
        if concurrency:
            command += ["--concurrency", str(concurrency)]
        process = Process(command, self.logs / f"worker-{len(self.processes)}.log", env)
        self.processes.append(process)
        return process

    def queue(self, name: str = "default") -> Queue:
        if name not in self.queues:
            self.queues[name] = Queue.from_url(self.redis_url, name=name)
        return self.queues[name]

    async def wait_workers(self, count: int, queue: str = "default", within: float = 60) -> None:
        async def enough() -> bool:
            return len(await self.queue(queue).workers()) >= count
        await eventually(enough, within=within, what=f"{count} worker(s) on {queue}")

    async def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
            # captured by pytest, shown only when the test failed
            print(f"--- {' '.join(process.args[1:3])} ({process.log.name}) ---\n{process.tail()}")
        for queue in self.queues.values():
            await queue.disconnect()

    # -- resources ----------------------------------------------------------------------

    async def create(self, kind_plural: str, name: str, spec: dict[str, Any],
                     **metadata: Any) -> dict[str, Any]:
        kind = {"jobs": "Job", "cronjobs": "CronJob"}[kind_plural]
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
                "metadata": {"name": name, **metadata}, "spec": spec}
        return await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, kind_plural, body)

    async def create_job(self, name: str, function: str, **spec: Any) -> dict[str, Any]:
        return await self.create("jobs", name, {"function": function, **spec})

    async def get(self, kind_plural: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, kind_plural, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def get_job(self, name: str) -> dict[str, Any] | None:
        return await self.get("jobs", name)

    async def list_jobs(self, label_selector: str | None = None) -> list[dict[str, Any]]:
        listed = await self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "jobs", label_selector=label_selector or "")
        return listed["items"]

    async def delete_job(self, name: str) -> None:
        await self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                          "jobs", name)

    async def wait_job(self, name: str, predicate: Callable[[dict[str, Any]], bool],
                       within: float = 60, what: str = "") -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            body = await self.get_job(name)
            return body if body is not None and predicate(body) else None
        return await eventually(probe, within=within, what=what or f"Job {name}")

    async def wait_status(self, name: str, *statuses: str, within: float = 60) -> dict[str, Any]:
        return await self.wait_job(
            name, lambda b: (b.get("status") or {}).get("status") in statuses, within,
            what=f"Job {name} to be {'/'.join(statuses)}")

    def reason_column(self) -> dict[str, str]:
        """Job name -> its Reason column in `kubectl get pqjobs` (what a user sees; the
        columns are aligned, an empty cell is blank)."""
        lines = self.plane.kubectl("get", "pqjobs", "-n", self.namespace).stdout.splitlines()
        if not lines:  # "No resources found"
            return {}
        start, end = lines[0].index("REASON"), lines[0].index("ATTEMPTS")
        return {row.split()[0]: row[start:end].strip() for row in lines[1:] if row.strip()}

    async def events(self, name: str) -> list[Any]:
        listed = await self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}")
        return listed.items


def status(body: dict[str, Any]) -> dict[str, Any]:
    """A resource's status ({} before the operator wrote one)."""
    return body.get("status") or {}


def condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status(body).get("conditions") or () if c["type"] == type_),
                None)


@pytest.fixture(scope="session", name="podq_crds")
def podq_crds_fixture(control_plane: ControlPlane) -> ControlPlane:
    """The CRDs from crds/, applied once per session."""
    control_plane.kubectl("apply", "-f", str(REPO / "crds"))
    control_plane.kubectl("wait", "--for=condition=Established", "crd/jobs.podq.dev",
                          "crd/cronjobs.podq.dev", "--timeout=60s")
    # Established comes before the storage serves ("storage is (re)initializing", 429)
    deadline = time.monotonic() + 60
    for resource in ("jobs.podq.dev", "cronjobs.podq.dev"):
        while control_plane.kubectl("get", resource, "-A", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"{resource} not served 60s after Established")
            time.sleep(0.1)
    return control_plane


@pytest.fixture(name="harness")
async def harness_fixture(podq_crds: ControlPlane, namespace: str, redis_url: str,
                  kube_api: client.ApiClient, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(podq_crds, namespace, redis_url, tmp_path, kube_api)
    try:
        yield h
    finally:
        await h.close()
