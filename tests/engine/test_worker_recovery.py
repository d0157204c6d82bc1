"""The Worker in-process recovering: jobs of a dead worker run again, a Redis
outage loses no job."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engine_helpers import FUNCTIONS, Workers, wait_for

from podq import Job, Queue, Status, Worker


async def test_fix6_dead_worker_jobs_recovered_even_without_timeout(
    queue: Queue, workers: Workers
) -> None:
    # a "worker" that took jobs and died: it has no liveness record
    await queue.enqueue("add", key="retry-me", a=1, b=1, retries=2, timeout=0, heartbeat=0)
    await queue.enqueue("add", key="no-attempts-left", a=1, b=1, timeout=0, heartbeat=0)
    taken, _ = await queue.take(2, "ghost:1:dead")
    assert len(taken) == 2
    started = time.monotonic()
    await workers.start(queue, FUNCTIONS)
    # the lost runs were disruptions: both jobs run again, as attempt 1, and complete
    for key in ("retry-me", "no-attempts-left"):
        recovered = Job("add", key=key, queue=queue)
        await recovered.refresh(until_complete=30)
        assert recovered.status is Status.COMPLETE and recovered.result == 2
        assert recovered.attempts == 1 and recovered.disruptions == 1
    assert time.monotonic() - started < 15  # by the 0.3 s sweeps, with margin for load


async def test_worker_survives_a_redis_outage_without_losing_jobs(tmp_path: Any) -> None:
    from podq.testing import RedisServer

    server = RedisServer().start()
    try:
        queue = Queue.from_url(server.url, name="outage")
        worker = Worker(queue, FUNCTIONS, handle_signals=False,
                        timers={"schedule": 0.5, "worker_info": 0.3, "sweep": 60, "abort": 0.3},
                        liveness_ttl=30)
        task = asyncio.create_task(worker.start())
        job = await queue.enqueue("sleeps", seconds=1.5, timeout=30)
        await wait_for(lambda: queue.count("active"), 30)
        await queue.redis.save()  # Redis comes back with its data (from the RDB file)
        server.stop()
        await asyncio.sleep(0.8)
        server.start()
        await job.refresh(until_complete=30)
        assert job.status is Status.COMPLETE and job.result == "slept"
        assert await queue.apply("add", a=5, b=5, timeout=30) == 10  # still taking jobs
        await worker.stop()
        await asyncio.wait_for(task, 30)
        await queue.disconnect()
    finally:
        server.close()
