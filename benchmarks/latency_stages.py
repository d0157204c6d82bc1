"""Where podq's enqueue-to-start time goes, job by job (docs/performance.md, "Latency").

    .venv/bin/python benchmarks/latency_stages.py [--rate 1000] [--seconds 10] [--runs 1]

The paced workload of engine_vs_saq.py (another process enqueues `--rate` jobs/s, a
worker at concurrency 100 runs them), podq only, with every job's stages stamped on
CLOCK_MONOTONIC (one clock for the processes): when the enqueue call was made (sent),
when its reply reached the producer, when a wake-channel message naming the job reached
the worker (none once tokens wake idle workers), when the take that got the job was
sent and when its reply arrived, and when the function started. Prints, per stage,
p50/p90/p99 of the time since sent, and the CPU per job of the worker, the producer
and Redis, and the load average: on a shared machine the load decides the tail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

STARTED: dict[int, tuple[float, float, str]] = {}  # job number -> (sent, started, key)


async def paced(ctx: dict, *, sent: float, i: int) -> None:
    STARTED[i] = (sent, time.perf_counter(), ctx["job"].key)


async def produce(url: str, rate: int, seconds: float) -> dict[str, t.Any]:
    from podq import Queue

    queue = Queue.from_url(url)
    await queue.connect()
    replied: dict[int, float] = {}
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, sent: float) -> None:
        await queue.enqueue("paced", sent=sent, i=i)
        replied[i] = time.perf_counter()

    cpu = time.process_time()
    began = time.perf_counter()
    for i in range(int(rate * seconds)):  # each on its tick, as engine_vs_saq.py
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, time.perf_counter()))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    cpu = time.process_time() - cpu
    await queue.disconnect()
    return {"replied": replied, "cpu": cpu}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[max(int(len(values) * q) - 1, 0)] * 1000


async def measure(url: str, rate: int, seconds: float) -> None:
    import redis

    from podq import Queue, Worker

    queue = Queue.from_url(url)
    await queue.connect()
    woken: dict[str, float] = {}
    takes: dict[str, tuple[float, float]] = {}
    notifier = queue._wake_notifier
    dispatch = notifier._dispatch

    def stamp_wake(key: str | None, status: str) -> None:
        if key:
            woken.setdefault(key, time.perf_counter())
        dispatch(key, status)

    notifier._dispatch = stamp_wake  # type: ignore[method-assign]

    def stamped(take: t.Any) -> t.Any:
        async def run(*args: t.Any, **kwargs: t.Any) -> t.Any:
            sent = time.perf_counter()
            jobs, next_at = await take(*args, **kwargs)
            for job in jobs:
                takes[job.key] = (sent, time.perf_counter())
            return jobs, next_at

        return run

    queue.take = stamped(queue.take)  # type: ignore[method-assign]
    if hasattr(queue, "take_when_ready"):
        queue.take_when_ready = stamped(queue.take_when_ready)  # type: ignore[attr-defined]
    worker = Worker(queue=queue, functions=[paced], concurrency=100, handle_signals=False)
    running = asyncio.create_task(worker.start())
    await asyncio.sleep(1.0)
    probe = redis.Redis.from_url(url)
    redis_cpu = sum(float(v) for k, v in probe.info("cpu").items()
                    if k in ("used_cpu_user", "used_cpu_sys"))
    cpu = time.process_time()
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        producer = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--producer", "--url", url, "--rate", str(rate),
            "--seconds", str(seconds), "--out", out.name)
        await producer.wait()
        produced = json.loads(await asyncio.to_thread(Path(out.name).read_text))
    total = int(rate * seconds)
    deadline = time.monotonic() + 30
    while len(STARTED) < total and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu
    redis_cpu = sum(float(v) for k, v in probe.info("cpu").items()
                    if k in ("used_cpu_user", "used_cpu_sys")) - redis_cpu
    await worker.stop()
    await running
    await queue.disconnect()

    stages: dict[str, list[float]] = {"enqueue reply": [], "wake message": [],
                                      "take sent": [], "take reply": [], "start": []}
    for i, (sent, started, key) in STARTED.items():
        stages["enqueue reply"].append(produced["replied"][str(i)] - sent)
        if key in woken:
            stages["wake message"].append(woken[key] - sent)
        if key in takes:
            stages["take sent"].append(takes[key][0] - sent)
            stages["take reply"].append(takes[key][1] - sent)
        stages["start"].append(started - sent)
    print(f"{len(STARTED)} of {total} jobs started; load average {os.getloadavg()[0]:.1f}; "
          f"CPU per job: worker {cpu / total * 1e6:.0f} us, producer "
          f"{produced['cpu'] / total * 1e6:.0f} us, Redis {redis_cpu / total * 1e6:.0f} us")
    print(f"{'ms since sent':<16}{'p50':>9}{'p90':>9}{'p99':>9}")
    for name, values in stages.items():
        if values:
            print(f"{name:<16}{pct(values, 0.5):>9.2f}{pct(values, 0.9):>9.2f}"
                  f"{pct(values, 0.99):>9.2f}")
    print("(a take sent before `sent` was already waiting in Redis when the job came)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--producer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.producer:
        produced = asyncio.run(produce(args.url, args.rate, args.seconds))
        Path(args.out).write_text(json.dumps(produced))
        return
    from podq.testing import RedisServer

    for _ in range(args.runs):
        with RedisServer() as server:
            STARTED.clear()
            asyncio.run(measure(server.url, args.rate, args.seconds))


if __name__ == "__main__":
    main()
