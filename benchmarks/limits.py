"""The cost of flow control (issue 14): no-op throughput with and without limits.

    .venv/bin/python benchmarks/limits.py [--jobs 3000] [--concurrency 10] [--rounds 3]

One worker of concurrency C runs N no-op jobs (put in untimed, with enqueue_many) on a
private redis-server, from start to empty queue, under each setting, in turn, `rounds`
times (the best round of each is shown, the machine being shared):

- none: no limits (take.lua checks the limits hash's existence only);
- other: a limit on another function (the limits are read, this job's checked);
- concurrency: a concurrency limit on the job's function that never binds
  (each take counts and records a slot per job);
- rate: a rate limit on the job's function that never binds (a GCRA per job);
- both: concurrency and rate on the function, and a queue-wide concurrency limit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from podq import Job, Queue, Worker  # noqa: E402
from podq.queue import QUEUE_LIMIT, Limit  # noqa: E402
from podq.testing import RedisServer  # noqa: E402

HUGE = 10**9

SETTINGS: dict[str, dict[str, Limit]] = {
    "none": {},
    "other": {"elsewhere": Limit(concurrency=3)},
    "concurrency": {"noop": Limit(concurrency=HUGE)},
    "rate": {"noop": Limit(rate=HUGE, per=1, burst=HUGE)},
    "both": {"noop": Limit(concurrency=HUGE, rate=HUGE, per=1, burst=HUGE),
             QUEUE_LIMIT: Limit(concurrency=HUGE)},
}


RAN = {"count": 0, "goal": 0}
ALL_RAN = asyncio.Event()


async def noop(ctx: dict) -> None:
    RAN["count"] += 1
    if RAN["count"] >= RAN["goal"]:
        ALL_RAN.set()


async def one_run(url: str, limits: dict[str, Limit], jobs: int, concurrency: int) -> float:
    """Seconds for one worker to run `jobs` no-op jobs under these limits."""
    queue = Queue.from_url(url, name="bench")
    await queue.connect()
    await queue.redis.flushall()
    await queue.set_limits(limits)
    for start in range(0, jobs, 1000):
        await queue.enqueue_many(
            [Job("noop", key=f"j{i}", ttl=60) for i in range(start, min(jobs, start + 1000))])
    worker = Worker(queue, [("noop", noop)], concurrency=concurrency, handle_signals=False)
    RAN.update(count=0, goal=jobs)
    ALL_RAN.clear()
    began = time.perf_counter()
    task = asyncio.create_task(worker.start())
    await asyncio.wait_for(ALL_RAN.wait(), 300)
    elapsed = time.perf_counter() - began
    await worker.stop()  # drains: the last write-backs land
    await asyncio.wait_for(task, 30)
    stats = await queue.stats()
    assert stats["complete"] == jobs, stats
    await queue.disconnect()
    return elapsed


async def take_cost(url: str, limits: dict[str, Limit], jobs: int, batch: int) -> float:
    """Redis's own time (µs, INFO commandstats) per job taken by take.lua, taking `jobs`
    jobs `batch` at a time: the limit check's cost without the client's noise."""
    queue = Queue.from_url(url, name="bench")
    await queue.connect()
    await queue.redis.flushall()
    await queue.set_limits(limits)
    for start in range(0, jobs, 1000):
        await queue.enqueue_many(
            [Job("noop", key=f"j{i}", ttl=60) for i in range(start, min(jobs, start + 1000))])
    await queue.redis.config_resetstat()
    taken = 0
    while taken < jobs:
        got, _ = await queue.take(batch, "bench")
        taken += len(got)
    stats = await queue.redis.info("commandstats")
    await queue.disconnect()
    return stats["cmdstat_evalsha"]["usec"] / jobs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    best: dict[str, float] = {}
    cost: dict[str, float] = {}
    with RedisServer() as server:
        for _ in range(args.rounds):
            for name, limits in SETTINGS.items():
                seconds = await one_run(server.url, limits, args.jobs, args.concurrency)
                best[name] = min(best.get(name, seconds), seconds)
                us = await take_cost(server.url, limits, args.jobs, args.concurrency)
                cost[name] = min(cost.get(name, us), us)
    base = args.jobs / best["none"]
    print(f"{args.jobs} no-op jobs, worker concurrency {args.concurrency}, "
          f"best of {args.rounds} rounds; take.lua: Redis µs per job taken")
    print(f"{'limits':<12} {'seconds':>8} {'jobs/s':>8} {'vs none':>8} {'take µs/job':>12}")
    for name, seconds in best.items():
        rate = args.jobs / seconds
        print(f"{name:<12} {seconds:>8.2f} {rate:>8.0f} {100 * (rate / base - 1):>+7.1f}% "
              f"{cost[name]:>12.1f}")


if __name__ == "__main__":
    asyncio.run(main())
