"""A canary Job's apply-to-Complete time with 20 poison resources present, against none
(issue 8). A script that prints figures, not a test.

    .venv/bin/python benchmarks/poison_canary.py [--runs 15]

On this machine: a private control plane and redis-server, one `podq operator` watching
the namespaces `poison` and `canary`, one `podq worker` (queue default). The canary is a
no-op Job created in `canary` (through the API, one at a time); its time is from the
create call until its status reads complete. Measured --runs times with no poison, then
again with 20 poison resources in `poison`, all on the canary's own queue or beside it:
kwargs nested 2,000 and 9,000 levels, meta of 1 MiB and nested 2,000 and 40 levels,
kwargs of 100 KiB and nested 40 levels, three bad retryBackoff values, an unregistered function, a
function returning NaN, results nested 300 and 5,000 levels, and 6 Jobs whose job
records in Redis were then corrupted (unparsable JSON, a string instead of a hash, a
list, a foreign field, bad numbers, a bad status), 4 of them on the canary's queue,
which the operator reads on every pass and keeps failing on (with backoff).

Target: the median with poison within 1.5x the median without; the operator never
restarts (its process is the one started first, alive at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aioredis
from kubernetes_asyncio import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from podq import Queue  # noqa: E402
from podq.operator import safejson  # noqa: E402
from podq.testing import ControlPlane, RedisServer, stop_process  # noqa: E402

GROUP, VERSION = "podq.dev", "v1alpha1"
PODQ = str(ROOT / ".venv" / "bin" / "podq")
T = TypeVar("T")
FAR = "2999-01-01T00:00:00Z"  # scheduled: queued on its queue, never run


def deep(levels: int) -> str:
    return '{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)


# name -> spec as JSON text (deep values cannot be written by json.dumps)
POISON = {
    "deep-kwargs-2000": f'{{"function":"noop","kwargs":{deep(2000)}}}',
    "deep-kwargs-9000": f'{{"function":"noop","kwargs":{deep(9000)}}}',
    "deep-kwargs-40": f'{{"function":"echo","kwargs":{deep(40)}}}',
    "deep-meta-2000": f'{{"function":"noop","meta":{deep(2000)}}}',
    "meta-1mib": json.dumps({"function": "noop", "meta": {"m": "m" * (1 << 20)}}),
    "kwargs-100kib": json.dumps({"function": "echo", "kwargs": {"k": "k" * 100_000}}),
    "backoff-string": json.dumps({"function": "noop", "retryBackoff": "fast"}),
    "backoff-huge": json.dumps({"function": "noop", "retryBackoff": 1e12}),
    "backoff-object": json.dumps({"function": "noop", "retryBackoff": {"a": 1}}),
    "deep-meta-40": f'{{"function":"noop","meta":{deep(40)}}}',
    "unregistered": json.dumps({"function": "not_registered_anywhere"}),
    "nan-result": json.dumps({"function": "nan_result"}),
    "deep-result-300": json.dumps({"function": "deep_result", "kwargs": {"depth": 300}}),
    "deep-result-5000": json.dumps({"function": "deep_result", "kwargs": {"depth": 5000}}),
}
# name -> (queue, how the job record is corrupted once queued)
CORRUPT = {
    "corrupt-json": ("default", lambda r, k: r.hset(k, "job", "{not json")),
    "corrupt-list": ("default", lambda r, k: r.hset(k, "job", "[1, 2]")),
    "corrupt-attempts": ("default", lambda r, k: r.hset(k, "attempts", "many")),
    "corrupt-status": ("default", lambda r, k: r.hset(k, "status", "sideways")),
    "corrupt-type": ("idle", lambda r, k: replace_with_string(r, k)),
    "corrupt-field": ("idle", lambda r, k: r.hset(k, "job", '{"function": "noop", "rogue": 1}')),
}


async def replace_with_string(redis: aioredis.Redis, key: str) -> None:
    await redis.delete(key)
    await redis.set(key, "not a hash")


async def wait_for(probe: Callable[[], Awaitable[T | None]], within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{what} not within {within} s")


async def canary_s(custom: client.CustomObjectsApi, index: int) -> float:
    name = f"canary-{index:04d}"
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Job", "metadata": {"name": name},
            "spec": {"function": "noop"}}
    started = time.perf_counter()
    await custom.create_namespaced_custom_object(GROUP, VERSION, "canary", "jobs", body)

    async def complete() -> bool:
        got = await custom.get_namespaced_custom_object(GROUP, VERSION, "canary", "jobs", name)
        return (got.get("status") or {}).get("status") == "complete"
    await wait_for(complete, 60, f"canary {name}")
    return time.perf_counter() - started


async def canaries(custom: client.CustomObjectsApi, runs: int, first: int) -> list[float]:
    return [await canary_s(custom, first + i) for i in range(runs)]


def create_raw(plane: ControlPlane, name: str, spec_json: str) -> None:
    manifest = (f'{{"apiVersion":"{GROUP}/{VERSION}","kind":"Job",'
                f'"metadata":{{"name":"{name}"}},"spec":{spec_json}}}')
    plane.kubectl("create", "-n", "poison", "-f", "-", input=manifest)


async def add_poison(plane: ControlPlane, custom: client.CustomObjectsApi, url: str) -> None:
    for name, spec in POISON.items():
        create_raw(plane, name, spec)
    redis = aioredis.from_url(url)
    try:
        for name, (queue_name, damage) in CORRUPT.items():
            create_raw(plane, name, json.dumps(
                {"function": "noop", "queue": queue_name, "scheduled": FAR}))

            async def queued(name: str = name) -> str | None:
                got = await custom.get_namespaced_custom_object(
                    GROUP, VERSION, "poison", "jobs", name)
                status = got.get("status") or {}
                return status.get("jobKey") if status.get("status") == "queued" else None
            key = await wait_for(queued, 60, f"{name} queued")
            queue = Queue.from_url(url, name=queue_name)
            await damage(redis, queue.job_id(key))
            await queue.disconnect()
    finally:
        await redis.aclose()


def start(plane: ControlPlane, redis: RedisServer, logs: Path) -> list[subprocess.Popen[bytes]]:
    operator = subprocess.Popen(
        [PODQ, "operator", "--namespace", "poison", "--namespace", "canary",
         "--redis-url", redis.url],
        env=plane.env, stdout=(logs / "operator.log").open("wb"), stderr=subprocess.STDOUT)
    worker = subprocess.Popen(
        [PODQ, "worker", "operator_worker_settings.settings", "--redis-url", redis.url],
        env=dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "kube")),
        stdout=(logs / "worker.log").open("wb"), stderr=subprocess.STDOUT)
    return [operator, worker]


async def measure(plane: ControlPlane, redis: RedisServer, runs: int,
                  operator: subprocess.Popen[bytes]) -> None:
    async with await config.new_client_from_config(config_file=str(plane.kubeconfig),
                                                    persist_config=False) as api:
        custom = client.CustomObjectsApi(api)
        await canaries(custom, 3, 9000)  # warm-up: the operator's watches, the worker
        clean = await canaries(custom, runs, 0)
        await add_poison(plane, custom, redis.url)
        poisoned = await canaries(custom, runs, 1000)
    base, hit = statistics.median(clean), statistics.median(poisoned)
    print(f"canary apply-to-Complete, no poison:   median {base:.3f} s,"
          f" max {max(clean):.3f} s ({runs} runs)")
    print(f"canary apply-to-Complete, {len(POISON) + len(CORRUPT)} poison:"
          f" median {hit:.3f} s, max {max(poisoned):.3f} s ({runs} runs)")
    print(f"ratio {hit / base:.2f}x (target <= 1.5x): {'met' if hit <= 1.5 * base else 'NOT met'}")
    alive = operator.poll() is None
    print(f"operator restarts: {0 if alive else 'exited: ' + str(operator.returncode)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    safejson.install()  # this process reads deep Jobs back too
    logs = Path(tempfile.mkdtemp(prefix="podq-poison-bench-"))
    plane = ControlPlane.up(logs / "control-plane", exit_with=os.getpid())
    with plane, RedisServer() as redis:
        plane.kubectl("apply", "-f", str(ROOT / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "crd/jobs.podq.dev",
                      "--timeout=60s")
        for namespace in ("poison", "canary"):
            plane.kubectl("create", "namespace", namespace)
        while plane.kubectl("get", "jobs.podq.dev", "-A", check=False).returncode:
            time.sleep(0.1)  # Established comes before the storage serves
        processes = start(plane, redis, logs)
        try:
            asyncio.run(measure(plane, redis, args.runs, processes[0]))
        finally:
            for process in reversed(processes):
                stop_process(process)
    print(f"logs: {logs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
