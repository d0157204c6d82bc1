"""The Worker in-process from start to stop: hooks, its liveness record, burst
mode, a stop that a Redis call cannot hang."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engine_helpers import FUNCTIONS, Workers, wait_for

from podq import Job, Queue, Worker


async def test_hooks_run_in_order_with_the_context(queue: Queue, workers: Workers) -> None:
    calls: list[str] = []

    async def startup(ctx: dict) -> None:
        calls.append("startup")
        ctx["db"] = "conn"

    def before(ctx: dict) -> None:
        calls.append(f"before:{ctx['job'].function}:{ctx['db']}")

    async def after(ctx: dict) -> None:
        calls.append(f"after:{ctx['job'].status.value}")

    async def shutdown(ctx: dict) -> None:
        calls.append("shutdown")

    worker = await workers.start(
        queue, FUNCTIONS, startup=startup, shutdown=[shutdown],
        before_process=before, after_process=[after],
    )
    await queue.apply("add", a=1, b=1, timeout=30)
    await wait_for(lambda: len(calls) >= 3, 30)
    await worker.stop()
    assert calls == ["startup", "before:add:conn", "after:complete", "shutdown"]


async def test_liveness_record_lists_the_worker_and_its_jobs(
    queue: Queue, workers: Workers
) -> None:
    worker = await workers.start(queue, FUNCTIONS, concurrency=4, metadata={"pool": "a"})
    job = await queue.enqueue("sleeps", seconds=1)
    await wait_for(lambda: queue.count("active"), 30)

    async def has_active() -> bool:
        records = await queue.workers()
        return bool(records and records[0]["active"] == [job.key])

    await wait_for(has_active, 30)
    [record] = await queue.workers()
    assert record["id"] == worker.id and record["hostname"] in worker.id
    assert record["pid"] > 0 and record["queue_key"] == "test" and record["concurrency"] == 4
    assert "add" in record["functions"] and record["metadata"] == {"pool": "a"}
    assert abs(record["ts"] - time.time() * 1000) < 5000
    assert await queue.redis.pttl(queue.worker_key(worker.id)) > 0  # it expires
    await worker.stop()
    assert await queue.workers() == []


async def test_burst_mode_stops_when_empty_and_after_max_jobs(queue: Queue) -> None:
    await queue.enqueue_many([Job("add", kwargs={"a": i, "b": 0}) for i in range(5)])
    worker = Worker(queue, FUNCTIONS, burst=True, dequeue_timeout=0.05, handle_signals=False)
    await asyncio.wait_for(worker.start(), 30)
    assert await queue.count("incomplete") == 0 and worker.complete == 5
    await queue.enqueue_many([Job("add", kwargs={"a": i, "b": 0}) for i in range(5)])
    worker = Worker(queue, FUNCTIONS, burst=True, max_burst_jobs=2, dequeue_timeout=0.05,
                    handle_signals=False)
    await asyncio.wait_for(worker.start(), 30)
    assert worker.complete == 2 and await queue.count("queued") == 3


async def test_stop_finishes_when_a_redis_call_swallows_the_cancel(queue: Queue) -> None:
    # On Python 3.11 asyncio.wait_for, through which redis-py sends commands, drops a
    # cancel arriving as the send completes; the upkeep loops then ran on and stop()
    # waited for them forever (a teardown hang under load).
    calls = 0
    real = queue.write_worker_info

    async def swallows_one_cancel(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        await real(*args, **kwargs)
        if calls == 2:  # the liveness loop's first round (start() wrote the first)
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                pass

    queue.write_worker_info = swallows_one_cancel  # type: ignore[method-assign]
    worker = Worker(queue, FUNCTIONS, timers={"worker_info": 0.05, "abort": 0.2, "sweep": 0.3},
                    handle_signals=False)
    task = asyncio.create_task(worker.start())
    try:
        await wait_for(lambda: calls >= 2, 30)
        await asyncio.wait_for(worker.stop(), 30)
        await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=5)
