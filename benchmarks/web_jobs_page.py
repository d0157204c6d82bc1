"""How fast `podq web` answers its jobs page with 100,000 jobs in a queue.

    .venv/bin/python benchmarks/web_jobs_page.py [--jobs 100000] [--finished 50000] [--requests 40]

A private redis-server gets N queued jobs (and `--finished` complete ones); a `podq web`
process serves them, once it has indexed the finished jobs (the time it took is
printed); each page below is fetched `--requests` times over HTTP on loopback and its
latency printed (p50, p95, max, ms).
Target: under 200 ms. The pages read ranges of the queue's sorted sets and only the
jobs shown, so the figures should not grow with N (a function filter reads at most
5,000 jobs per page, a search by part of a key looks at 50,000 keys at most).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from podq import Job, Queue  # noqa: E402
from podq.testing import RedisServer, free_port, wait_for_port  # noqa: E402


async def fill(url: str, jobs: int, finished: int) -> None:
    queue = Queue.from_url(url, name="bench")
    await queue.connect()
    started = time.perf_counter()
    batch = 5000
    for first in range(0, jobs, batch):
        await queue.enqueue_many([
            Job("resize" if i % 10 else "thumbnail", key=f"job-{i:06}", kwargs={"n": i})
            for i in range(first, min(first + batch, jobs))
        ])
    done = [f"done-{i:06}" for i in range(finished)]
    for first in range(0, finished, batch):
        keys = done[first:first + batch]
        await queue.enqueue_many([Job("resize", key=k) for k in keys])
        async with queue.redis.pipeline(transaction=False) as pipe:  # as if they ran
            for i, key in enumerate(keys, first):
                pipe.hset(queue.keys.job(key), mapping={
                    "status": "complete", "completed": 1_700_000_000_000 + i})
            pipe.zrem(queue.keys.queued, *keys)
            await pipe.execute()
    counts = await queue.counts()
    print(f"filled: {counts.queued} queued, {finished} complete "
          f"in {time.perf_counter() - started:.1f}s")
    await queue.disconnect()


async def measure(base: str, paths: list[str], requests: int) -> None:
    async with aiohttp.ClientSession() as s:
        print(f"{'page':<58} {'p50':>7} {'p95':>7} {'max':>7}  (ms, {requests} requests)")
        for path in paths:
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                async with s.get(base + path) as r:
                    body = await r.read()
                    assert r.status == 200, (path, r.status)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            p95 = times[max(0, int(len(times) * 0.95) - 1)]
            print(f"{path:<58} {statistics.median(times):7.1f} {p95:7.1f} {times[-1]:7.1f}"
                  f"  {len(body) // 1024} KiB")


async def indexed(port: int) -> float:
    """Seconds until the dashboard no longer says it is looking for finished jobs."""
    started = time.perf_counter()
    async with aiohttp.ClientSession() as s:
        while time.perf_counter() - started < 120:
            async with s.get(f"http://127.0.0.1:{port}/queues/bench/jobs?status=complete") as r:
                if "Looking for jobs that finished" not in await r.text():
                    return time.perf_counter() - started
            await asyncio.sleep(0.1)
    raise SystemExit("the dashboard did not index the finished jobs within 120 s")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--finished", type=int, default=50_000)
    p.add_argument("--requests", type=int, default=40)
    args = p.parse_args()
    with RedisServer() as redis:
        asyncio.run(fill(redis.url, args.jobs, args.finished))
        port = free_port()
        podq = Path(sys.executable).parent / "podq"
        proc = subprocess.Popen(
            [str(podq), "web", "--redis-url", redis.url, "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=dict(os.environ),
        )
        try:
            wait_for_port(port, 20)
            print(f"indexed the finished jobs in {asyncio.run(indexed(port)):.1f}s")
            last = max(0, args.jobs - 50)
            paths = [
                "/queues/bench/jobs",
                f"/queues/bench/jobs?start={args.jobs // 2}",
                f"/queues/bench/jobs?start={last}",
                f"/queues/bench/jobs?status=queued&start={last}",
                "/queues/bench/jobs?status=complete&start=25000",
                "/queues/bench/jobs?limit=200",
                "/queues/bench/jobs?function=thumbnail",
                "/queues/bench/jobs?function=thumbnail&start=50000",
                "/queues/bench/jobs?function=absent",
                "/queues/bench/jobs?key=job-0999",
                "/queues/bench/jobs?key=absent",
                "/queues/bench/job?key=job-050000",
                "/queues",
            ]
            asyncio.run(measure(f"http://127.0.0.1:{port}", paths, args.requests))
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
