"""How fast the podq operator turns Job resources into completed jobs, against the raw
ceiling of the same API server. A script that prints figures, not a test.

    .venv/bin/python benchmarks/operator_throughput.py [--jobs 1000] [--memory-jobs 5000]
        [--no-hiredis]

One run, on this machine: a private control plane (etcd, kube-apiserver,
kube-controller-manager) and redis-server, then

1. raw ceiling: a plain kubernetes_asyncio client creates N Job objects and patches
   each one's status once (no operator watches that namespace): what the API server
   can do for the operator's minimum work (create + one status write per Job);
2. operator: N Job resources created at once (no-op function) in a watched namespace,
   one `podq worker` (concurrency 100); time until every resource shows Complete,
   the operator's CPU seconds and peak RSS;
3. memory: more Job resources until --memory-jobs exist, all complete; operator RSS;
4. backlog (--backlog-jobs N): the worker stopped, N more Job resources of a function no
   worker runs, all Queued; then the operator's CPU over --idle-s seconds, while its
   reconcile (every 10 s) reads each unfinished job from Redis again: the operator's
   steady Redis reading, where hiredis (the fast extra) counts (--no-hiredis: without).

Targets (issue 4): N=1000 Complete in under 30 s on 2 cores and within 3x the raw
ceiling; operator memory under 200 MB with 5000 Job resources present.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubernetes_asyncio import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from podq.testing import ControlPlane, RedisServer, stop_process  # noqa: E402

GROUP, VERSION = "podq.dev", "v1alpha1"
PODQ = str(ROOT / ".venv" / "bin" / "podq")
PARALLEL = 32  # requests in flight, for the raw client and for creating resources
MERGE = "application/merge-patch+json"


def job_body(name: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Job", "metadata": {"name": name},
            "spec": {"function": "noop"}}


async def in_parallel(count: int, make) -> None:
    semaphore = asyncio.Semaphore(PARALLEL)

    async def one(index: int) -> None:
        async with semaphore:
            await make(index)
    await asyncio.gather(*(one(i) for i in range(count)))


async def raw_ceiling(custom: client.CustomObjectsApi, namespace: str, count: int) -> float:
    started = time.perf_counter()

    async def create_and_patch(index: int) -> None:
        name = f"raw-{index:05d}"
        await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "jobs",
                                                     job_body(name))
        await custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "jobs", name,
            {"status": {"status": "complete", "attempts": 1, "progress": 1.0}},
            _content_type=MERGE)
    await in_parallel(count, create_and_patch)
    return time.perf_counter() - started


async def all_complete(custom: client.CustomObjectsApi, namespace: str, count: int,
                       deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        listed = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "jobs")
        done = sum(1 for item in listed["items"]
                   if (item.get("status") or {}).get("status") == "complete")
        if done >= count:
            return True
        await asyncio.sleep(0.2)
    return False


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def prepare(plane: ControlPlane) -> None:
    plane.kubectl("apply", "-f", str(ROOT / "crds"))
    plane.kubectl("wait", "--for=condition=Established", "crd/jobs.podq.dev",
                  "crd/cronjobs.podq.dev", "--timeout=60s")
    for namespace in ("raw", "bench"):
        plane.kubectl("create", "namespace", namespace)
    while plane.kubectl("get", "jobs.podq.dev", "-A", check=False).returncode:
        time.sleep(0.1)  # Established comes before the storage serves


async def api_for(plane: ControlPlane) -> client.ApiClient:
    return await config.new_client_from_config(config_file=str(plane.kubeconfig),
                                               persist_config=False)


async def measure_raw(plane: ControlPlane, count: int) -> float:
    async with await api_for(plane) as api:
        raw_s = await raw_ceiling(client.CustomObjectsApi(api), "raw", count)
    print(f"raw ceiling: {count} creates + {count} status patches in {raw_s:.2f} s"
          f" ({2 * count / raw_s:.0f} requests/s, {PARALLEL} in flight)")
    return raw_s


def start_processes(plane: ControlPlane, redis: RedisServer, logs: Path,
                    no_hiredis: bool = False) -> list[subprocess.Popen[bytes]]:
    # --no-hiredis: the operator as if hiredis were not installed (redis-py falls back to
    # its Python parser), to weigh the fast extra in the operator image
    podq = [sys.executable, "-c", "import sys; sys.modules['hiredis'] = None;"
            " from podq.cli import main; sys.exit(main())"] if no_hiredis else [PODQ]
    operator = subprocess.Popen(
        [*podq, "operator", "--namespace", "bench", "--redis-url", redis.url],
        env=plane.env, stdout=(logs / "operator.log").open("wb"), stderr=subprocess.STDOUT)
    worker_env = dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "kube"),
                      PODQ_TEST_CONCURRENCY="100")
    worker = subprocess.Popen(
        [PODQ, "worker", "operator_worker_settings.settings", "--redis-url", redis.url],
        env=worker_env, stdout=(logs / "worker.log").open("wb"), stderr=subprocess.STDOUT)
    time.sleep(3)  # operator startup and watch establishment (not measured)
    return [operator, worker]


async def measure_operator(plane: ControlPlane, args: argparse.Namespace, raw_s: float,
                           pid: int) -> None:
    async with await api_for(plane) as api:
        custom = client.CustomObjectsApi(api)
        cpu_before = proc_cpu_s(pid)
        started = time.perf_counter()
        await in_parallel(args.jobs, lambda i: custom.create_namespaced_custom_object(
            GROUP, VERSION, "bench", "jobs", job_body(f"bench-{i:05d}")))
        created_s = time.perf_counter() - started
        ok = await all_complete(custom, "bench", args.jobs, deadline_s=300)
        total_s = time.perf_counter() - started
        cpu_s = proc_cpu_s(pid) - cpu_before
        rss, peak = proc_memory_mb(pid)
        print(f"operator: {args.jobs} Job resources created in {created_s:.2f} s,"
              f" all Complete after {total_s:.2f} s{'' if ok else ' (DEADLINE MISSED)'}")
        print(f"  ratio to the raw ceiling: {total_s / raw_s:.2f}x (target <= 3x);"
              f" target < 30 s: {'met' if total_s < 30 else 'NOT met'}")
        print(f"  operator CPU: {cpu_s:.1f} s ({cpu_s / total_s * 100:.0f}% of one core);"
              f" RSS {rss:.0f} MB, peak {peak:.0f} MB")

        extra = args.memory_jobs - args.jobs
        if extra > 0:
            started = time.perf_counter()
            await in_parallel(extra, lambda i: custom.create_namespaced_custom_object(
                GROUP, VERSION, "bench", "jobs", job_body(f"more-{i:05d}")))
            ok = await all_complete(custom, "bench", args.memory_jobs, deadline_s=900)
            more_s = time.perf_counter() - started
            rss, peak = proc_memory_mb(pid)
            print(f"memory: {args.memory_jobs} Job resources present, all Complete"
                  f"{'' if ok else ' (DEADLINE MISSED)'} ({extra} more took {more_s:.1f} s);"
                  f" operator RSS {rss:.0f} MB, peak {peak:.0f} MB (target < 200 MB)")


async def measure_backlog(plane: ControlPlane, count: int, idle_s: float, pid: int) -> None:
    async with await api_for(plane) as api:
        custom = client.CustomObjectsApi(api)
        body = {**job_body(""), "spec": {"function": "unserved"}}
        await in_parallel(count, lambda i: custom.create_namespaced_custom_object(
            GROUP, VERSION, "bench", "jobs",
            {**body, "metadata": {"name": f"backlog-{i:05d}"}}))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            listed = await custom.list_namespaced_custom_object(
                GROUP, VERSION, "bench", "jobs")
            queued = sum(1 for item in listed["items"] if item["metadata"]["name"].startswith(
                "backlog-") and (item.get("status") or {}).get("status") == "queued")
            if queued >= count:
                break
            await asyncio.sleep(1.0)
        else:
            print(f"backlog: only {queued} of {count} Queued (DEADLINE MISSED)")
            return
        await asyncio.sleep(2.0)  # the last status writes settle (not measured)
        cpu_before, started = proc_cpu_s(pid), time.perf_counter()
        await asyncio.sleep(idle_s)
        cpu_s, spent = proc_cpu_s(pid) - cpu_before, time.perf_counter() - started
        print(f"backlog: {count} Job resources Queued, no worker: operator CPU {cpu_s:.2f} s"
              f" in {spent:.0f} s ({cpu_s / spent * 100:.1f}% of one core)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--memory-jobs", type=int, default=5000)
    parser.add_argument("--no-hiredis", action="store_true",
                        help="run the operator as if hiredis were not installed")
    parser.add_argument("--backlog-jobs", type=int, default=0)
    parser.add_argument("--idle-s", type=float, default=60.0)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="podq-operator-bench-"))
    plane = ControlPlane.up(logs / "control-plane", exit_with=os.getpid())
    with plane, RedisServer() as redis:
        prepare(plane)
        raw_s = asyncio.run(measure_raw(plane, args.jobs)) if args.jobs else 0.0
        processes = start_processes(plane, redis, logs, args.no_hiredis)
        try:
            if args.jobs:
                asyncio.run(measure_operator(plane, args, raw_s, processes[0].pid))
            if args.backlog_jobs:
                stop_process(processes[1])  # the worker: the backlog stays queued
                asyncio.run(measure_backlog(plane, args.backlog_jobs, args.idle_s,
                                            processes[0].pid))
        finally:
            for process in reversed(processes):
                stop_process(process)
    print(f"logs: {logs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
