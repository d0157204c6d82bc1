"""podq's job engine against SAQ on SAQ's own workload, side by side, in one run.

    .venv/bin/python benchmarks/engine_vs_saq.py [--jobs 1000] [--concurrency 10]
        [--workloads enqueue,bulk,noop,sleep,latency,paced] [--rate 1000] [--seconds 10]
        [--runs 1] [--uvloop]

Both libraries run the same code (podq keeps SAQ's API), each in its own process,
against one private redis-server that is flushed between them. Figures, in seconds:

- enqueue: N single `queue.enqueue(...)` calls, 20 in flight (SAQ's benchmark);
- bulk enqueue: podq's pipelined `enqueue_many` (SAQ has none: its row repeats the loop);
- noop: a worker of concurrency C processing N no-op jobs, from start to empty queue
  (also as jobs/s); without the enqueue workload the jobs are put in untimed;
- sleep: N jobs sleeping 0..50 ms (25 ms on average; ideal N*0.025/C seconds);
- latency: enqueue-to-start of single jobs on an idle worker, p50 and p99 in ms;
- paced: enqueue-to-start while another process enqueues `--rate` jobs/s for `--seconds`
  (default 10 s: 10,000 jobs at 1,000 jobs/s; the worker's process does not enqueue),
  p50 and p99 in ms.

`--runs N` runs the side by side N times (SAQ then podq each time) and prints each
figure's median and range: on a shared machine one run says little about a tail.
`--uvloop` runs both on uvloop (when installed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import random
import statistics
import subprocess
import sys
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

STARTED: dict[str, float] = {}
STARTED_EVENT = asyncio.Event()
PACED: list[float] = []  # enqueue-to-start of paced jobs, seconds
PACED_EVENT = asyncio.Event()
WORKLOADS = ("enqueue", "bulk", "noop", "sleep", "latency", "paced")


async def noop(ctx: dict) -> None:
    return None


async def sleeper(ctx: dict, *, seconds: float) -> None:
    await asyncio.sleep(seconds)


async def stamp(ctx: dict, *, token: str) -> None:
    STARTED[token] = time.perf_counter()
    STARTED_EVENT.set()


async def paced(ctx: dict, *, sent: float) -> None:
    # perf_counter is CLOCK_MONOTONIC, one clock for every process of the host
    PACED.append(time.perf_counter() - sent)
    PACED_EVENT.set()


FUNCTIONS = [noop, sleeper, stamp, paced]


async def wait_until_empty(queue: object, poll_s: float = 0.005) -> None:
    # Polls like SAQ's own benchmark, but finer (5 ms, not 100 ms) so it adds little.
    while await queue.count("incomplete"):  # type: ignore[attr-defined]  # noqa: ASYNC110
        await asyncio.sleep(poll_s)


async def enqueue_loop(
    queue: object, function: str, kwargs_list: list[dict], in_flight: int = 20
) -> None:
    limit = asyncio.Semaphore(in_flight)

    async def one(kwargs: dict) -> None:
        async with limit:
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


async def fill(lib: str, queue: object, function: str, kwargs_list: list[dict]) -> None:
    """Put jobs in untimed, the fastest way the library has."""
    if not await enqueue_bulk(lib, queue, function, kwargs_list):
        await enqueue_loop(queue, function, kwargs_list, in_flight=100)


async def run_worker(module: t.Any, queue: object, concurrency: int) -> tuple[t.Any, t.Any]:
    worker = module.Worker(queue=queue, functions=FUNCTIONS, concurrency=concurrency)
    return worker, asyncio.create_task(worker.start())


async def stop_worker(worker: t.Any, task: asyncio.Task) -> None:
    await worker.stop()
    task.cancel()


def percentiles(values_ms: list[float]) -> tuple[float, float]:
    values_ms = sorted(values_ms)
    return statistics.median(values_ms), values_ms[max(int(len(values_ms) * 0.99) - 1, 0)]


def make_queue(lib: str, url: str) -> t.Any:
    """The library's queue on url. SAQ's gets a pool of 1,000 connections: on redis-py
    8's default pool (100) its worker fails at concurrency 100 with "Too many
    connections" (podq's callers wait for a connection instead)."""
    module = importlib.import_module(lib)
    if lib == "saq":
        from redis import asyncio as aioredis
        from saq.queue.redis import RedisQueue

        return RedisQueue(aioredis.from_url(url, max_connections=1000))
    return module.Queue.from_url(url)


async def measure(
    lib: str, url: str, n: int, concurrency: int, workloads: list[str], rate: int,
    seconds: float,
) -> dict[str, float | None]:
    module = importlib.import_module(lib)
    queue = make_queue(lib, url)
    if hasattr(queue, "connect"):
        await queue.connect()
    figures: dict[str, float | None] = {}
    rng = random.Random(7)
    noops = [{} for _ in range(n)]

    if "noop" in workloads or "enqueue" in workloads:
        started = time.perf_counter()
        if "enqueue" in workloads:
            await enqueue_loop(queue, "noop", noops)
            figures["enqueue"] = time.perf_counter() - started
        else:
            await fill(lib, queue, "noop", noops)
    if "noop" in workloads:
        started = time.perf_counter()
        worker, task = await run_worker(module, queue, concurrency)
        await wait_until_empty(queue)
        figures["noop"] = time.perf_counter() - started
        figures["noop jobs/s"] = n / figures["noop"]
        await stop_worker(worker, task)
    if "bulk" in workloads:
        await queue.disconnect() if hasattr(queue, "disconnect") else None
        flush(url)
        queue = make_queue(lib, url)
        if hasattr(queue, "connect"):
            await queue.connect()
        started = time.perf_counter()
        if not await enqueue_bulk(lib, queue, "noop", noops):
            await enqueue_loop(queue, "noop", noops)
        figures["bulk enqueue"] = time.perf_counter() - started

    worker, task = await run_worker(module, queue, concurrency)
    await wait_until_empty(queue)
    if "sleep" in workloads:
        sleeps = [{"seconds": rng.uniform(0, 0.05)} for _ in range(n)]
        await enqueue_loop(queue, "sleeper", sleeps)
        started = time.perf_counter()
        await wait_until_empty(queue)
        figures["sleep"] = time.perf_counter() - started
        figures["sleep ideal"] = sum(s["seconds"] for s in sleeps) / concurrency
    if "latency" in workloads:
        latencies = []
        for i in range(200):
            token = f"t{i}"
            sent = time.perf_counter()
            await queue.enqueue("stamp", token=token)  # type: ignore[attr-defined]
            while token not in STARTED:
                await STARTED_EVENT.wait()
                STARTED_EVENT.clear()
            latencies.append((STARTED[token] - sent) * 1000)
        figures["latency p50 ms"], figures["latency p99 ms"] = percentiles(latencies)
    if "paced" in workloads:
        producer = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--producer", lib, "--url", url, "--rate", str(rate),
            "--seconds", str(seconds),
        )
        await producer.wait()
        expected = int(rate * seconds)
        deadline = time.monotonic() + 30
        while len(PACED) < expected and time.monotonic() < deadline:
            PACED_EVENT.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(PACED_EVENT.wait(), deadline - time.monotonic())
        figures["paced p50 ms"], figures["paced p99 ms"] = percentiles(
            [v * 1000 for v in PACED])
        figures["paced started"] = len(PACED)
    await stop_worker(worker, task)
    if hasattr(queue, "disconnect"):
        await queue.disconnect()
    return figures


async def produce(lib: str, url: str, rate: int, seconds: float) -> None:
    """Enqueue `paced` jobs at rate per second for seconds, each on its tick however
    long the previous enqueue takes."""
    queue = make_queue(lib, url)
    if hasattr(queue, "connect"):
        await queue.connect()
    total = int(rate * seconds)
    pending: set[asyncio.Task] = set()
    began = time.perf_counter()
    for i in range(total):
        delay = began + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(queue.enqueue("paced", sent=time.perf_counter()))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    if hasattr(queue, "disconnect"):
        await queue.disconnect()


def run_child(lib: str, url: str, args: argparse.Namespace) -> dict[str, float | None]:
    """One library in its own process: separate imports, event loop and connections."""
    command = [sys.executable, __file__, "--child", lib, "--url", url, "--jobs", str(args.jobs),
               "--concurrency", str(args.concurrency), "--workloads", args.workloads,
               "--rate", str(args.rate), "--seconds", str(args.seconds)]
    if args.uvloop:
        command.append("--uvloop")
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


def run(coro: t.Any, use_uvloop: bool) -> t.Any:
    if use_uvloop:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--rate", type=int, default=1000, help="jobs/s of the paced workload")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--producer", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="how long the paced workload enqueues")
    parser.add_argument("--runs", type=int, default=1, help="side by sides to run")
    parser.add_argument("--url", help="use this Redis instead of starting one")
    args = parser.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")

    if args.producer:
        run(produce(args.producer, args.url, args.rate, args.seconds), args.uvloop)
        return
    if args.child:
        figures = run(measure(args.child, args.url, args.jobs, args.concurrency, workloads,
                              args.rate, args.seconds), args.uvloop)
        print(json.dumps(figures))
        return

    from podq.testing import RedisServer

    runs: dict[str, list[dict[str, float | None]]] = {"saq": [], "podq": []}
    with RedisServer() as server:
        for _ in range(args.runs):
            for lib in ("saq", "podq"):
                flush(server.url)
                runs[lib].append(run_child(lib, server.url, args))
    report(args, workloads, runs)


NAMES = ("enqueue", "bulk enqueue", "noop", "noop jobs/s", "sleep", "latency p50 ms",
         "latency p99 ms", "paced p50 ms", "paced p99 ms", "paced started")


def report(
    args: argparse.Namespace, workloads: list[str], runs: dict[str, list[dict[str, t.Any]]]
) -> None:
    """The figures of one run, or each figure's median [min-max] over several."""
    saq = {k: statistics.median(r[k] for r in runs["saq"]) for k in runs["saq"][0]}
    podq = {k: statistics.median(r[k] for r in runs["podq"]) for k in runs["podq"][0]}
    print(f"N={args.jobs} jobs, concurrency {args.concurrency}, one worker process, "
          f"redis-server on loopback{', uvloop' if args.uvloop else ''}; seconds unless marked"
          + (f"; median of {args.runs} runs [min-max]" if args.runs > 1 else ""))
    print(f"{'workload':<16}{'saq':>12}{'podq':>12}{'podq/saq':>10}")
    for name in NAMES:
        if name not in podq:
            continue
        ratio = podq[name] / saq[name] if saq.get(name) else float("nan")
        line = f"{name:<16}{saq[name]:>12.4f}{podq[name]:>12.4f}{ratio:>10.2f}"
        if args.runs > 1:
            spread = [(min(r[name] for r in runs[lib]), max(r[name] for r in runs[lib]))
                      for lib in ("saq", "podq")]
            line += "   saq [{:.4g}-{:.4g}] podq [{:.4g}-{:.4g}]".format(*spread[0], *spread[1])
        print(line)
    if args.runs > 1 and "paced p99 ms" in podq:
        print("podq paced p99 ms by run:",
              ", ".join(f"{r['paced p99 ms']:.2f}" for r in runs["podq"]))
    if "sleep" in podq:
        print(f"{'sleep ideal':<16}{saq['sleep ideal']:>12.4f}{podq['sleep ideal']:>12.4f}"
              f"   podq over ideal: {100 * (podq['sleep'] / podq['sleep ideal'] - 1):+.1f}%")
    if "bulk enqueue" in podq:
        print("saq's 'bulk enqueue' is its enqueue loop again: it has no bulk enqueue.")
    if "paced" in workloads:
        print(f"paced: {args.rate} jobs/s for {args.seconds:g} s from another process.")


if __name__ == "__main__":
    main()
