"""Retrying jobs on a real Redis, driven without a worker: delay and backoff, a
scheduled job readied once, any job put back to queued."""

from __future__ import annotations

import time

from engine_helpers import wait_for

from podq import Job, Queue, Status


async def test_retry_with_delay_and_backoff(queue: Queue) -> None:
    # a retry_delay of 3 s: the checks that it waits all run within it (0.5 s was a
    # window a loaded machine could outlast)
    await queue.enqueue("f", key="r", retries=3, retry_delay=3)
    [job], _ = await queue.take(1, "w")
    retried = time.time()
    await queue.retry(job, "oops")
    stored = await queue.job("r")
    assert stored.status is Status.QUEUED and stored.error == "oops" and stored.attempts == 1
    assert await queue.count("scheduled") == 1  # waits retry_delay
    assert (await queue.take(1, "w"))[0] == []
    async def taken() -> list[Job]:
        return (await queue.take(1, "w"))[0]

    [again] = await wait_for(taken, 30)
    assert time.time() - retried >= 2.99  # not before its delay (Redis TIME: ms)
    assert again.key == "r" and again.attempts == 2
    assert await queue.retry(again, "guarded", expect=True)  # still this attempt: written
    assert not await queue.retry(again, "stale", expect=True)  # no longer active: ignored
    assert (await queue.job("r")).error == "guarded"


async def test_fix3_retrying_a_scheduled_job_never_readies_it_twice(queue: Queue) -> None:
    await queue.enqueue("f", key="s", scheduled=time.time() - 0.01, retries=5)
    [job], _ = await queue.take(1, "w")
    await queue.retry(job, "again")
    await queue.retry(job, "and again")  # retry() on a queued job: still one entry
    assert await queue.count("queued") == 1 and await queue.count("incomplete") == 1
    first, _ = await queue.take(5, "w")
    second, _ = await queue.take(5, "w")
    assert [j.key for j in first] == ["s"] and second == []
    # a job scheduled in the future and retried stays scheduled, once
    await queue.enqueue("f", key="future", scheduled=time.time() + 60)
    future = await queue.job("future")
    await queue.retry(future, None)
    assert await queue.count("scheduled") == 1 and await queue.count("queued") == 0


async def test_retry_puts_any_job_back_to_queued(queue: Queue) -> None:
    await queue.enqueue("f", key="done", ttl=0)
    [job], _ = await queue.take(1, "w")
    await queue.finish(job, Status.FAILED, error="bad")
    await job.retry("try again")
    stored = await queue.job("done")
    assert stored.status is Status.QUEUED and stored.error == "try again"
    assert stored.completed == 0 and stored.started == 0
    [again], _ = await queue.take(1, "w")
    assert again.key == "done" and again.attempts == 2
    assert await queue.redis.pttl(queue.job_id("done")) == -1  # pending jobs never expire
