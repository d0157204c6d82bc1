"""Write-backs on a real redis-server: those of one event-loop turn go as one pipeline
on one connection, and a guarded finish sends only what the run changed, or the whole
job when Redis lost it (issue 11, part 4)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from podq import Queue, Status


async def connected_clients(url: str) -> int:
    probe = aioredis.from_url(url)
    try:
        return int((await probe.info("clients"))["connected_clients"])
    finally:
        await probe.aclose()


async def test_300_finishes_at_once_share_one_pipelined_connection(redis_url: str) -> None:
    queue = Queue.from_url(redis_url, name="batched")
    await queue.connect()
    try:
        await queue.enqueue_many([{"function": "f", "key": f"k{i}"} for i in range(300)])
        jobs, _ = await queue.take(300, "w1")
        assert len(jobs) == 300
        await queue.disconnect()  # a pool of no open connection, then only the finishes
        queue = Queue.from_url(redis_url, name="batched")
        before = await connected_clients(redis_url)
        wrote = await asyncio.gather(*(
            queue.finish(job, Status.COMPLETE, result=i, expect=True)
            for i, job in enumerate(jobs)))
        assert all(wrote)
        # one connection carried them all (unbatched, 50 would have opened)
        assert await connected_clients(redis_url) - before == 1
        done = await queue.jobs([f"k{i}" for i in range(300)])
        assert [(j.status, j.result) for j in done] == [
            (Status.COMPLETE, i) for i in range(300)]
        assert await queue.count("incomplete") == 0
    finally:
        await queue.disconnect()


async def test_a_guarded_finish_of_a_job_redis_lost_writes_it_back_whole(queue: Queue) -> None:
    await queue.enqueue("f", key="lost", retries=3, meta={"m": 1})
    [job], _ = await queue.take(1, "w1")
    await queue.redis.delete(queue.job_id("lost"))  # Redis lost it while it ran
    assert await queue.finish(job, Status.COMPLETE, result={"r": 2}, expect=True)
    stored = await queue.job("lost")
    assert stored is not None
    assert (stored.status, stored.result, stored.attempts, stored.worker_id, stored.retries,
            stored.meta) == (Status.COMPLETE, {"r": 2}, 1, "w1", 3, {"m": 1})
    assert stored.attempt_id == job.attempt_id and stored.completed > 0


async def test_a_guarded_finish_writes_what_changed_since_the_job_was_read(
    queue: Queue,
) -> None:
    await queue.enqueue("f", key="k", timeout=0)
    [job], _ = await queue.take(1, "w1")
    await queue.abort(job, "stop")  # Redis: aborting, error "stop"; the run's copy: active
    job.disruptions = 2  # a stored field the run's copy changed
    assert await queue.finish(job, Status.COMPLETE, result=1, expect=True)
    stored = await queue.job("k")
    assert (stored.status, stored.error, stored.disruptions, stored.result) == (
        Status.COMPLETE, None, 2, 1)
    assert (stored.attempts, stored.worker_id) == (1, "w1")  # as the take left them
