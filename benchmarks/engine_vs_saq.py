"""podq's job engine against SAQ on SAQ's own workload, side by side, in one run.

    .venv/bin/python benchmarks/engine_vs_saq.py [--jobs 1000] [--concurrency 10]

Both libraries run the same code (podq keeps SAQ's API), each in its own process,
against one private redis-server that is flushed between them. Figures, in seconds:

- enqueue: N single `queue.enqueue(...)` calls, 20 in flight (SAQ's benchmark);
- bulk enqueue: podq's pipelined `enqueue_many` (SAQ has none: its row repeats the loop);
- noop: a worker of concurrency C processing N no-op jobs, from start to empty queue;
- sleep: N jobs sleeping 0..50 ms (25 ms on average; ideal N*0.025/C seconds);
- latency: enqueue-to-start of single jobs on an idle worker, p50 and p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

STARTED: dict[str, float] = {}
STARTED_EVENT = asyncio.Event()


async def noop(ctx: dict) -> None:
    return None


async def sleeper(ctx: dict, *, seconds: float) -> None:
    await asyncio.sleep(seconds)


async def stamp(ctx: dict, *, token: str) -> None:
    STARTED[token] = time.perf_counter()
    STARTED_EVENT.set()


async def wait_until_empty(queue: object, poll_s: float = 0.005) -> None:
    # Polls like SAQ's own benchmark, but finer (5 ms, not 100 ms) so it adds little.
    while await queue.count("incomplete"):  # type: ignore[attr-defined]  # noqa: ASYNC110
        await asyncio.sleep(poll_s)


async def enqueue_loop(queue: object, function: str, kwargs_list: list[dict]) -> None:
    in_flight = asyncio.Semaphore(20)

    async def one(kwargs: dict) -> None:
        async with in_flight:
            await queue.enqueue(function, **kwargs)  # type: ignore[attr-defined]

    await asyncio.gather(*(one(kwargs) for kwargs in kwargs_list))


async def enqueue_bulk(lib: str, queue: object, function: str, kwargs_list: list[dict]) -> bool:
    """podq's pipelined bulk enqueue; False when the library has none."""
    if not hasattr(queue, "enqueue_many"):
        return False
    job_class = importlib.import_module(lib).Job
    jobs = [job_class(function, kwargs=kwargs) for kwargs in kwargs_list]
    await queue.enqueue_many(jobs)  # type: ignore[attr-defined]
    return True


async def measure(lib: str, url: str, n: int, concurrency: int) -> dict[str, float | None]:
    module = importlib.import_module(lib)
    queue = module.Queue.from_url(url)
    if hasattr(queue, "connect"):
        await queue.connect()
    figures: dict[str, float | None] = {}
    rng = random.Random(7)
    sleeps = [{"seconds": rng.uniform(0, 0.05)} for _ in range(n)]
    noops = [{} for _ in range(n)]

    started = time.perf_counter()
    await enqueue_loop(queue, "noop", noops)
    figures["enqueue"] = time.perf_counter() - started

    worker = module.Worker(queue=queue, functions=[noop, sleeper, stamp], concurrency=concurrency)
    started = time.perf_counter()
    worker_task = asyncio.create_task(worker.start())
    await wait_until_empty(queue)
    figures["noop"] = time.perf_counter() - started

    await worker.stop()
    worker_task.cancel()
    started = time.perf_counter()
    figures["bulk enqueue"] = (
        time.perf_counter() - started if await enqueue_bulk(lib, queue, "noop", noops) else None
    )
    if figures["bulk enqueue"] is None:
        started = time.perf_counter()
        await enqueue_loop(queue, "noop", noops)
        figures["bulk enqueue"] = time.perf_counter() - started
    worker = module.Worker(queue=queue, functions=[noop, sleeper, stamp], concurrency=concurrency)
    worker_task = asyncio.create_task(worker.start())
    await wait_until_empty(queue)

    await enqueue_loop(queue, "sleeper", sleeps)
    started = time.perf_counter()
    await wait_until_empty(queue)
    figures["sleep"] = time.perf_counter() - started
    figures["sleep ideal"] = sum(s["seconds"] for s in sleeps) / concurrency

    latencies = []
    for i in range(200):
        token = f"t{i}"
        sent = time.perf_counter()
        await queue.enqueue("stamp", token=token)
        while token not in STARTED:
            await STARTED_EVENT.wait()
            STARTED_EVENT.clear()
        latencies.append((STARTED[token] - sent) * 1000)
    latencies.sort()
    figures["latency p50 ms"] = statistics.median(latencies)
    figures["latency p99 ms"] = latencies[int(len(latencies) * 0.99) - 1]

    await worker.stop()
    worker_task.cancel()
    if hasattr(queue, "disconnect"):
        await queue.disconnect()
    return figures


def run_child(lib: str, url: str, n: int, concurrency: int) -> dict[str, float | None]:
    """One library in its own process: separate imports, event loop and connections."""
    output = subprocess.run(
        [sys.executable, __file__, "--child", lib, "--url", url, "--jobs", str(n),
         "--concurrency", str(concurrency)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushall()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help="use this Redis instead of starting one")
    args = parser.parse_args()

    if args.child:
        figures = asyncio.run(measure(args.child, args.url, args.jobs, args.concurrency))
        print(json.dumps(figures))
        return

    from podq.testing import RedisServer

    with RedisServer() as server:
        results = {}
        for lib in ("saq", "podq"):
            flush(server.url)
            results[lib] = run_child(lib, server.url, args.jobs, args.concurrency)

    saq, podq = results["saq"], results["podq"]
    print(f"N={args.jobs} jobs, concurrency {args.concurrency}, one worker process, "
          f"redis-server on loopback; seconds unless marked")
    print(f"{'workload':<16}{'saq':>10}{'podq':>10}{'podq/saq':>10}")
    for name in ("enqueue", "bulk enqueue", "noop", "sleep", "latency p50 ms", "latency p99 ms"):
        ratio = podq[name] / saq[name] if saq[name] else float("nan")
        print(f"{name:<16}{saq[name]:>10.4f}{podq[name]:>10.4f}{ratio:>10.2f}")
    print(f"{'sleep ideal':<16}{saq['sleep ideal']:>10.4f}{podq['sleep ideal']:>10.4f}"
          f"   podq over ideal: {100 * (podq['sleep'] / podq['sleep ideal'] - 1):+.1f}%")
    print("saq's 'bulk enqueue' is its enqueue loop again: it has no bulk enqueue.")


if __name__ == "__main__":
    main()
