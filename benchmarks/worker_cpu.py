"""One podq worker's CPU per job, and Redis's, on no-op jobs (docs/performance.md).

    .venv/bin/python benchmarks/worker_cpu.py [--jobs 30000] [--concurrency 100]
        [--no-hiredis] [--uvloop]

Starts a private redis-server, enqueues the jobs (untimed), then runs a worker in this
process until the queue is empty. Prints jobs/s (wall clock, which a loaded machine
moves a lot), the worker process's CPU time per job (time.process_time) and Redis's
(INFO cpu), which the load disturbs much less.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))


async def noop(ctx: dict) -> None:
    return None


def redis_cpu(client: object) -> float:
    info = client.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure(url: str, jobs: int, concurrency: int) -> None:
    import redis

    from podq import Queue, Worker

    queue = Queue.from_url(url, name="bench")
    await queue.connect()
    await queue.enqueue_many([{"function": "noop"} for _ in range(jobs)])
    probe = redis.Redis.from_url(url)
    redis_before = redis_cpu(probe)
    worker = Worker(queue, [noop], concurrency=concurrency, handle_signals=False)
    began, cpu_began = time.perf_counter(), time.process_time()
    task = asyncio.create_task(worker.start())
    while await queue.count("incomplete"):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    redis_used = redis_cpu(probe) - redis_before
    print(f"{jobs} no-op jobs, concurrency {concurrency}: {seconds:.2f} s = "
          f"{jobs / seconds:.0f} jobs/s; worker CPU {1e6 * cpu / jobs:.0f} us/job, "
          f"Redis CPU {1e6 * redis_used / jobs:.0f} us/job")
    probe.close()
    await worker.stop()
    await task
    await queue.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=30000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--no-hiredis", action="store_true",
                        help="run as if hiredis were not installed")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.no_hiredis:
        sys.modules["hiredis"] = None  # type: ignore[assignment]  # redis-py falls back
    from podq.testing import RedisServer

    with RedisServer() as server:
        coro = measure(server.url, args.jobs, args.concurrency)
        if args.uvloop:
            import uvloop

            uvloop.run(coro)
        else:
            asyncio.run(coro)


if __name__ == "__main__":
    main()
