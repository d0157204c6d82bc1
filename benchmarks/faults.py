"""The fault suite: Job resources on the real control plane and redis-server while
workers, operators, Redis and the API server are broken on purpose. A script that
prints figures; tests/kube/test_fault_suite.py runs a short version in CI.

    .venv/bin/python benchmarks/faults.py [--jobs 300] [--retries 1 3] [--runs 1]

Each run (per --retries value): a fresh redis-server and namespace, two operators with
leader election and three workers (concurrency 10), all restarted when they exit, as the
kubelet restarts a container and a Deployment replaces a pod. Jobs run `fault_task`
(0.5-4 s, never fails by itself). Between waves of new Jobs, one fault at a time:

    worker-sigkill     a worker SIGKILLed (its running jobs are cut short)
    leader-sigkill     the operator holding the Lease SIGKILLed
    flushall           FLUSHALL on Redis
    redis-restart      redis-server restarted empty
    delete-20          20 queued or running Jobs deleted (must never run to completion
                       after that, and their resources must go)
    worker-sigterm     a worker SIGTERMed (drains within its grace period)
    apiserver-restart  kube-apiserver stopped 3 s and started again
    kill-storm         8 worker SIGKILLs within 8 s
    redis-stopped-20s  redis-server SIGSTOPped for 20 s (unreachable, data kept)

Then it waits (bounded) until every Job is finished and counts, from the Job resources
and a ledger of executions kept outside Redis (benchmarks/fault_worker.py):

    lost            a Job not deleted by the suite that vanished, or Complete without
                    its function ever having returned
    stuck           not finished when the settle deadline passed
    wrongly failed  Failed or Aborted (the function never fails: every failure is the
                    infrastructure's)
    duplicates      functions that returned more than once, by the fault just before
                    the second run
    ran after delete  a deleted Job whose function started more than 2 s after deletion
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from podq.operator.names import job_key  # noqa: E402
from podq.testing import ControlPlane, RedisServer  # noqa: E402

GROUP, VERSION = "podq.dev", "v1alpha1"
PODQ = str(ROOT / ".venv" / "bin" / "podq")
BENCHMARKS = Path(__file__).resolve().parent
TERMINAL = {"complete", "failed", "aborted"}
ALL_FAULTS = ("worker-sigkill", "leader-sigkill", "flushall", "redis-restart", "delete-20",
              "worker-sigterm", "apiserver-restart", "kill-storm", "redis-stopped-20s")
DATA_LOSS = ("flushall", "redis-restart")  # faults in which Redis forgets jobs
SHORT_FAULTS = ("worker-sigkill", "leader-sigkill", "flushall", "delete-20", "worker-sigterm",
                "redis-stopped-20s")


# -- processes that come back -------------------------------------------------------------


class Supervised:
    """A process started again `restart_delay` seconds after it exits, as the kubelet
    restarts a container (or a Deployment replaces a pod), until `retire()`."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path,
                 restart_delay: float = 1.0) -> None:
        self.name, self.args, self.env, self.logs = name, args, env, logs
        self.restart_delay = restart_delay
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.retired = False

    def start(self) -> None:
        self.starts += 1
        log = (self.logs / f"{self.name}.log").open("ab")
        log.write(f"\n--- start {self.starts} at {time.time():.3f}\n".encode())
        log.flush()
        self.popen = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                      env=self.env, cwd=ROOT, start_new_session=True)
        log.close()

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(sig)

    async def supervise(self) -> None:
        while not self.retired:
            if not self.alive:
                await asyncio.sleep(self.restart_delay)
                if not self.retired:
                    self.start()
            await asyncio.sleep(0.2)

    def retire(self, timeout: float = 20) -> None:
        self.retired = True
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def log_text(self) -> str:
        path = self.logs / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


# -- one run ----------------------------------------------------------------------------


@dataclass
class Report:
    retries: int
    jobs: int
    deleted: int = 0
    complete: int = 0
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    wrongly_failed: list[str] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)  # name -> cause
    ran_after_delete: list[str] = field(default_factory=list)
    deleted_left: list[str] = field(default_factory=list)  # deleted, resource still there
    faults: list[tuple[float, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    settle_s: float = 0.0
    takeover_s: float | None = None

    @property
    def ok(self) -> bool:
        return not (self.lost or self.stuck or self.wrongly_failed or self.ran_after_delete
                    or self.deleted_left)

    def lines(self) -> list[str]:
        causes = Counter(self.duplicates.values())
        out = [
            f"retries={self.retries or 'default (1)'}: {self.jobs} Jobs,"
            f" {self.deleted} deleted by the suite,"
            f" faults: {', '.join(name for _, name in self.faults)}",
            f"  complete {self.complete}, lost {len(self.lost)}, stuck {len(self.stuck)},"
            f" wrongly failed {len(self.wrongly_failed)}, duplicates {len(self.duplicates)}"
            f" ({', '.join(f'{c}: {n}' for c, n in sorted(causes.items())) or 'none'}),"
            f" ran after delete {len(self.ran_after_delete)},"
            f" deleted but still present {len(self.deleted_left)}",
            f"  run {self.elapsed_s:.0f} s, settled {self.settle_s:.0f} s after the last fault"
            + (f", leader takeover {self.takeover_s:.1f} s" if self.takeover_s else ""),
        ]
        for label, names in (("lost", self.lost), ("stuck", self.stuck),
                             ("wrongly failed", self.wrongly_failed),
                             ("ran after delete", self.ran_after_delete),
                             ("deleted but present", self.deleted_left)):
            if names:
                out.append(f"  {label}: {', '.join(sorted(names)[:20])}")
        for name, cause in sorted(self.duplicates.items()):
            out.append(f"  duplicate: {name} ({cause})")
        return out


class Run:
    """Everything of one run: processes, clients, bookkeeping."""

    def __init__(self, plane: ControlPlane, redis_server: RedisServer, namespace: str,
                 logs: Path, retries: int, jobs: int, workers: int = 3) -> None:
        self.plane, self.redis_server, self.namespace = plane, redis_server, namespace
        self.logs, self.retries, self.total = logs, retries, jobs
        logs.mkdir(parents=True, exist_ok=True)
        self.ledger = logs / "ledger.txt"
        self.report = Report(retries=retries, jobs=jobs)
        self.created: dict[str, str] = {}  # name -> uid
        self.deleted: dict[str, float] = {}  # name -> when
        self.random = random.Random(retries)
        env = dict(plane.env, PYTHONPATH=str(BENCHMARKS), FAULTS_LEDGER=str(self.ledger))
        self.workers = [
            Supervised(f"worker-{i}", [PODQ, "worker", "fault_worker.settings", "--redis-url",
                                       redis_server.url, "--shutdown-grace-period-s", "10"],
                       env, logs) for i in range(workers)]
        self.operators = [
            Supervised(f"operator-{i}", [PODQ, "operator", "--namespace", namespace,
                                         "--redis-url", redis_server.url, "--leader-elect",
                                         "--leader-election-namespace", namespace],
                       env, logs, restart_delay=2.0) for i in range(2)]
        self.tasks: list[asyncio.Task[None]] = []
        self.api: client.ApiClient | None = None
        self.redis = aioredis.from_url(redis_server.url)

    @property
    def custom(self) -> client.CustomObjectsApi:
        assert self.api is not None
        return client.CustomObjectsApi(self.api)

    async def __aenter__(self) -> Run:
        self.plane.kubectl("create", "namespace", self.namespace)
        self.api = await config.new_client_from_config(config_file=str(self.plane.kubeconfig),
                                                       persist_config=False)
        for process in [*self.operators, *self.workers]:
            process.start()
            self.tasks.append(asyncio.create_task(process.supervise()))
        await self.until(self.leader_known, 60, "an operator to lead")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        for process in [*self.operators, *self.workers]:
            process.retire()
        await self.redis.aclose()
        if self.api is not None:
            await self.api.close()
        self.plane.discard_namespace(self.namespace)

    # -- helpers --------------------------------------------------------------------------

    async def until(self, probe: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                value = await probe()
            except (TimeoutError, ApiException, aiohttp.ClientError, OSError, aioredis.RedisError):
                value = None  # the API server or Redis is one of the things we break
            if value:
                return value
            await asyncio.sleep(0.2)
        raise TimeoutError(f"timed out after {within}s waiting for {what}")

    async def lease_holder(self) -> str | None:
        assert self.api is not None
        try:
            lease = await client.CoordinationV1Api(self.api).read_namespaced_lease(
                "podq-operator", self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return lease.spec.holder_identity

    async def leader_known(self) -> Supervised | None:
        holder = await self.lease_holder()
        if not holder:
            return None
        for operator in self.operators:
            if operator.alive and f"{holder} now leads" in operator.log_text().rsplit(
                    "--- start", 1)[-1]:
                return operator
        return None

    async def jobs(self) -> dict[str, dict[str, Any]]:
        listed = await self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                                 "jobs")
        return {item["metadata"]["name"]: item for item in listed["items"]}

    async def create_wave(self, count: int) -> None:
        start = len(self.created)

        async def one(index: int) -> None:
            name = f"f-{index:04d}"
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Job",
                    "metadata": {"name": name},
                    "spec": {"function": "fault_task", "timeout": 60,
                             "kwargs": {"seconds": round(self.random.uniform(0.5, 4.0), 2)}}}
            if self.retries:  # 0: spec.retries left out, the CRD's default (1) applies
                body["spec"]["retries"] = self.retries
            made = await self.until(lambda: self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "jobs", body), 60, f"creating {name}")
            self.created[name] = made["metadata"]["uid"]
        for first in range(start, start + count, 16):
            await asyncio.gather(*(one(i) for i in range(first, min(first + 16, start + count))))

    async def some_active(self) -> bool:
        jobs = await self.jobs()
        return sum((j.get("status") or {}).get("status") == "active" for j in jobs.values()) >= 3

    def mark(self, name: str) -> None:
        self.report.faults.append((time.time(), name))
        print(f"  {time.strftime('%H:%M:%S')} fault: {name}", flush=True)

    # -- faults -----------------------------------------------------------------------------

    async def fault(self, name: str) -> None:
        if name == "worker-sigkill":
            self.mark(name)
            self.workers[0].signal(signal.SIGKILL)
        elif name == "leader-sigkill":
            leader = await self.until(self.leader_known, 60, "the leader")
            old = await self.lease_holder()
            self.mark(name)
            killed = time.monotonic()
            leader.signal(signal.SIGKILL)

            async def new_holder() -> bool:
                holder = await self.lease_holder()
                return bool(holder) and holder != old
            await self.until(new_holder, 60, "a new leader")
            self.report.takeover_s = time.monotonic() - killed
        elif name == "flushall":
            self.mark(name)
            await self.redis.flushall()
        elif name == "redis-restart":
            self.mark(name)
            await asyncio.to_thread(self.redis_server.restart)
        elif name == "delete-20":
            jobs = await self.until(self.jobs, 60, "the Job list")
            running = [n for n, j in jobs.items() if n not in self.deleted
                       and (j.get("status") or {}).get("status") in (None, "queued", "active")]
            doomed = self.random.sample(running, min(20, len(running)))
            self.mark(name)
            for victim in doomed:
                self.deleted[victim] = time.time()
                await self.until(lambda v=victim: self._delete(v), 60, f"deleting {victim}")
        elif name == "worker-sigterm":
            self.mark(name)
            self.workers[1 % len(self.workers)].signal(signal.SIGTERM)
        elif name == "apiserver-restart":
            self.mark(name)
            await asyncio.to_thread(self.plane.restart_apiserver, 3.0)
        elif name == "kill-storm":
            self.mark(name)
            for _ in range(8):
                self.random.choice(self.workers).signal(signal.SIGKILL)
                await asyncio.sleep(1.0)
        elif name == "redis-stopped-20s":
            process = self.redis_server.process
            assert process is not None
            self.mark(name)
            process.send_signal(signal.SIGSTOP)
            try:
                await asyncio.sleep(20)
            finally:
                process.send_signal(signal.SIGCONT)
        else:
            raise ValueError(f"unknown fault {name!r}")

    async def _delete(self, name: str) -> bool:
        try:
            await self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                              "jobs", name)
        except ApiException as error:
            if error.status != 404:
                raise
        return True

    # -- the run ----------------------------------------------------------------------------

    async def execute(self, faults: tuple[str, ...], settle_within: float) -> Report:
        started = time.monotonic()
        wave = max(1, self.total // (len(faults) + 1))
        for name in faults:
            await self.create_wave(wave)
            await self.until(self.some_active, 60, "jobs running")
            await self.fault(name)
        await self.create_wave(self.total - len(self.created))
        last_fault = time.monotonic()
        try:
            await self.until(self.settled, settle_within, "every Job to finish")
        except TimeoutError:
            pass  # counted as stuck below
        self.report.settle_s = time.monotonic() - last_fault
        self.report.elapsed_s = time.monotonic() - started
        await self.count()
        return self.report

    async def settled(self) -> bool:
        jobs = await self.jobs()
        for name in self.created:
            job = jobs.get(name)
            if name in self.deleted:
                if job is not None:
                    return False
            elif job is None or (job.get("status") or {}).get("status") not in TERMINAL:
                return False
        return True

    def read_ledger(self) -> dict[str, list[tuple[float, str]]]:
        events: dict[str, list[tuple[float, str]]] = {}
        if self.ledger.exists():
            for line in self.ledger.read_text().splitlines():
                stamp, event, key, *_ = line.split(" ")
                events.setdefault(key, []).append((float(stamp), event))
        return events

    def cause(self, first_start: float, first_done: float, second_start: float,
              seen_running: bool) -> str:
        """The faults between a job's first run and its second (from 1 s before the
        first: a fault is marked as it begins, a restart takes effect a moment later).
        A Redis data loss after the first run returned (less 1 s, the same margin) is
        named alone: Redis lost the completion before an operator read it, which explains
        the rerun. So is one while the first run went on, when no operator had read the
        job running (taken a moment before, or while no operator led): it is enqueued
        again at once. One while it ran, after an operator had read it running
        (seen_running), is no cause: the operator waits for that run's write-back; a
        duplicate across it is named '<fault> while running', a defect."""
        within = [(stamp, name) for stamp, name in self.report.faults
                  if first_start - 1.0 <= stamp <= second_start]
        lost = [name for stamp, name in within if name in DATA_LOSS
                and (stamp >= first_done - 1.0 or not seen_running)]
        if lost:
            return "+".join(lost)
        return "+".join(f"{name} while running" if name in DATA_LOSS else name
                        for _, name in within) or "no fault"

    def seen_running(self) -> set[str]:
        """The job keys an operator found missing from Redis while it had read them
        running (its log): it waits for their worker's write-back, never enqueues them
        again at once."""
        marker = " is missing from Redis while it ran"
        keys = set()
        for operator in self.operators:
            for line in operator.log_text().splitlines():
                if marker in line and " job " in line:
                    keys.add(line.split(" job ", 1)[1].split(marker, 1)[0])
        return keys

    async def count(self) -> None:
        report = self.report
        jobs = await self.until(self.jobs, 120, "the Job list")
        ledger = self.read_ledger()
        seen_running = self.seen_running()
        report.deleted = len(self.deleted)
        for name, uid in self.created.items():
            events = sorted(ledger.get(job_key(self.namespace, name, uid), []))
            done = [stamp for stamp, event in events if event == "done"]
            job = jobs.get(name)
            if name in self.deleted:
                if job is not None:
                    report.deleted_left.append(name)
                if any(event == "start" and stamp > self.deleted[name] + 2
                       for stamp, event in events):
                    report.ran_after_delete.append(name)
                continue
            state = (job.get("status") or {}).get("status") if job else None
            if job is None or (state == "complete" and not done):
                report.lost.append(name)
            elif state not in TERMINAL:
                report.stuck.append(name)
            elif state != "complete":
                report.wrongly_failed.append(name)
            else:
                report.complete += 1
            if len(done) > 1:
                starts = [stamp for stamp, event in events if event == "start"]
                second = [stamp for stamp in starts if stamp > done[0]]
                key = job_key(self.namespace, name, uid)
                report.duplicates[name] = self.cause(
                    starts[0], done[0], second[0] if second else done[1], key in seen_running)


async def run_once(plane: ControlPlane, *, jobs: int, retries: int, faults: tuple[str, ...],
                   logs: Path, settle_within: float = 300) -> Report:
    """One run in a fresh namespace with a fresh redis-server; returns its Report."""
    with RedisServer() as redis_server:
        namespace = f"faults-r{retries}-{os.getpid()}-{int(time.time()) % 100000}"
        async with Run(plane, redis_server, namespace, logs, retries, jobs) as run:
            return await run.execute(faults, settle_within)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--retries", type=int, nargs="+", default=[1, 3],
                        help="spec.retries of the Jobs, one run each; 0 leaves it out (the"
                             " CRD's default, 1)")
    parser.add_argument("--runs", type=int, default=1, help="runs per retries value")
    parser.add_argument("--faults", nargs="+", choices=ALL_FAULTS, default=list(ALL_FAULTS))
    parser.add_argument("--logs", type=Path, help="keep process logs here")
    args = parser.parse_args(argv)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="podq-faults-"))
    print(f"logs in {logs}", flush=True)
    plane = ControlPlane.up(exit_with=os.getpid())
    plane.kubectl("apply", "-f", str(ROOT / "crds"))
    plane.kubectl("wait", "--for=condition=Established", "crd/jobs.podq.dev", "--timeout=60s")
    reports = []
    try:
        for retries in args.retries:
            for index in range(args.runs):
                print(f"run {index + 1}/{args.runs}, retries={retries}", flush=True)
                report = await run_once(plane, jobs=args.jobs, retries=retries,
                                        faults=tuple(args.faults),
                                        logs=logs / f"r{retries}-{index}")
                print("\n".join(report.lines()), flush=True)
                reports.append(report)
    finally:
        plane.down()
    print("\nsummary")
    for report in reports:
        print(report.lines()[1].strip(), f"(retries={report.retries or 'default'})")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
