"""Throughput of podq on a 3-primary Redis Cluster against one redis-server.

    .venv/bin/python benchmarks/cluster_shards.py [--jobs 5000] [--queues 3]
        [--concurrency 50] [--replicas 1]

The same queues (names chosen so that on the cluster each lives on another primary) are
filled with no-op jobs (untimed), then one worker process per queue drains its queue.
Prints, per topology, jobs/s over every queue (wall clock, from the first worker's start
to the last queue empty) and Redis CPU per job (INFO cpu) summed over the primaries,
and over every node (the replicas too). On a machine
with fewer cores than worker processes plus servers the workers share the cores, so
the figure measures podq's client-side cost as much as Redis's (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

import redis

from podq import Job, Queue, Worker
from podq.testing import RedisServer
from podq.testing_cluster import LoopbackCluster


async def noop(ctx: dict) -> None:
    return None


async def child(url: str, name: str, jobs: int, concurrency: int) -> None:
    queue = Queue.from_url(url, name=name)
    worker = Worker(queue, [noop], concurrency=concurrency, handle_signals=False)
    started = time.time()
    task = asyncio.create_task(worker.start())
    deadline = time.monotonic() + 600
    while int((await queue.stats()).get("complete", 0)) < jobs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue {name} not drained in 600 s")
        await asyncio.sleep(0.01)
    ended = time.time()
    await worker.stop()
    await task
    await queue.disconnect()
    print(json.dumps({"started": started, "ended": ended}))


async def fill(url: str, names: list[str], jobs: int) -> None:
    for name in names:
        queue = Queue.from_url(url, name=name)
        for start in range(0, jobs, 1000):
            await queue.enqueue_many([Job("noop") for _ in range(min(1000, jobs - start))])
        await queue.disconnect()


def redis_cpu(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        info = redis.Redis(port=port).info("cpu")
        total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


def measure(url: str, names: list[str], primaries: list[int], nodes: list[int],
            args: argparse.Namespace) -> dict:
    asyncio.run(fill(url, names, args.jobs))
    cpu_before = redis_cpu(primaries)
    all_before = redis_cpu(nodes)
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--child", url, name, "--jobs", str(args.jobs),
         "--concurrency", str(args.concurrency)], stdout=subprocess.PIPE, text=True)
        for name in names]
    times = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0
        times.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(t["ended"] for t in times) - min(t["started"] for t in times)
    total = args.jobs * len(names)
    return {"jobs": total, "seconds": round(wall, 2), "jobs_per_s": round(total / wall),
            "redis_cpu_us_per_job": round(1e6 * (redis_cpu(primaries) - cpu_before) / total, 1),
            "redis_cpu_us_per_job_all_nodes": round(
                1e6 * (redis_cpu(nodes) - all_before) / total, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per queue")
    parser.add_argument("--queues", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=1, help="replicas per primary")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child[0], args.child[1], args.jobs, args.concurrency))
        return
    with tempfile.TemporaryDirectory() as tmp:
        nodes = LoopbackCluster(Path(tmp), nodes=3 * (1 + args.replicas),
                                replicas=args.replicas)
        try:
            nodes.start()
            names: list[str] = []
            owners: set[int] = set()
            for i in range(1000):
                owner = nodes.owner(f"podq:{{bench{i}}}:queued")
                if owner not in owners or len(owners) == 3:
                    names.append(f"bench{i}")
                    owners.add(owner)
                if len(names) == args.queues:
                    break
            primaries = sorted({p for _, _, p in nodes.slots()})
            on_cluster = measure(nodes.url, names, primaries, sorted(nodes.procs), args)
        finally:
            nodes.stop()
    single = RedisServer().start()
    try:
        on_one = measure(single.url, names, [single.port], [single.port], args)
    finally:
        single.stop()
    print(json.dumps({"queues": names, "concurrency": args.concurrency,
                      "cluster_3_primaries": on_cluster, "one_redis_server": on_one},
                     indent=2))


if __name__ == "__main__":
    main()
