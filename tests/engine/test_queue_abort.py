"""Aborting jobs on a real Redis, driven without a worker: queued, scheduled and
active jobs, the abort marker."""

from __future__ import annotations

import time

from engine_helpers import wait_for

from podq import Queue, Status


async def test_abort_queued_job(queue: Queue) -> None:
    job = await queue.enqueue("f", key="a")
    await queue.abort(job, "not needed")
    stored = await queue.job("a")
    assert stored.status is Status.ABORTED and stored.error == "not needed"
    assert job.status is Status.ABORTED
    assert await queue.count("incomplete") == 0


async def test_fix2_aborting_a_scheduled_job_finishes_it_as_aborted(queue: Queue) -> None:
    job = await queue.enqueue("f", key="later", scheduled=time.time() + 3600)
    await job.abort("changed my mind")
    stored = await queue.job("later")
    assert stored.status is Status.ABORTED and stored.error == "changed my mind"
    assert await queue.count("scheduled") == 0 and await queue.count("incomplete") == 0


async def test_abort_active_job_becomes_aborting(queue: Queue) -> None:
    await queue.enqueue("f", key="run")
    [job], _ = await queue.take(1, "w")
    await queue.abort(job, "stop it")
    stored = await queue.job("run")
    assert stored.status is Status.ABORTING and stored.error == "stop it"
    assert await queue.count("active") == 1


async def test_abort_marker_blocks_reenqueue_while_it_lives(queue: Queue) -> None:
    job = await queue.enqueue("f", key="m")
    # a 3 s marker: the refused enqueue runs within it (0.4 s was a window a loaded
    # machine could outlast); then it expires and an enqueue is taken again
    await queue.abort(job, "x", ttl=3)
    assert await queue.enqueue("f", key="m") is None
    assert 0 < await queue.redis.pttl(queue.abort_id("m")) <= 3000
    assert await wait_for(lambda: queue.enqueue("f", key="m"), 30) is not None


async def test_fix4_abort_marker_is_scoped_to_its_queue(queue: Queue) -> None:
    other = Queue(queue.redis, name="other")
    job = await queue.enqueue("f", key="same")
    await queue.abort(job, "x", ttl=60)
    assert await queue.enqueue("f", key="same") is None
    assert await other.enqueue("f", key="same") is not None
    assert await queue.redis.exists(queue.abort_id("same"))
    assert not await queue.redis.exists(other.abort_id("same"))
