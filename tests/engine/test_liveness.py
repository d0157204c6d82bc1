"""A worker's own liveness record and its sweeps, on real Redis."""

from __future__ import annotations

import asyncio

from engine_helpers import Workers, wait_for

from podq import Queue, Status


async def naps(ctx: dict, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "napped"


async def test_a_worker_that_stalled_past_its_liveness_ttl_does_not_sweep_its_own_job(
    queue: Queue, workers: Workers
) -> None:
    """A worker process stalled (CPU starvation, a long pause) for longer than its
    liveness ttl: its record expired meanwhile. When it runs again, its sweep may come
    before its liveness write; the sweep must not take the worker's own running job for
    a dead worker's (it was put back and ran twice)."""
    # long timers: no loop rewrites the record or sweeps on its own during the test
    timers = {"schedule": 0.5, "worker_info": 60, "sweep": 60, "abort": 0.2}
    worker = await workers.start(queue, [("naps", naps)], timers=timers, liveness_ttl=0.5)
    job = await queue.enqueue("naps", seconds=30, timeout=0)
    await wait_for(lambda: queue.count("active"), 30)
    running = await queue.job(job.key)

    async def past_lease() -> bool:  # on Redis's clock, as the sweep compares
        seconds, micros = await queue.redis.time()
        return seconds * 1000 + micros // 1000 - running.started > 1000

    await wait_for(past_lease, 30)
    # the stall: the record expired (as it would), and no sweep lock is held
    await queue.redis.delete(queue.worker_key(worker.id), queue.keys.sweep_lock)
    await worker._sweep()  # the sweep loop's step, first after the stall
    stored = await queue.job(job.key)
    assert stored.status is Status.ACTIVE and stored.disruptions == 0, stored.error
    assert await queue.count("active") == 1 and await queue.count("queued") == 0
    assert await queue.redis.exists(queue.worker_key(worker.id))  # it said it lives
