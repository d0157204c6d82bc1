"""Retrying jobs on a real Redis, driven without a worker: delay and backoff, a
scheduled job readied once, any job put back to queued."""

from __future__ import annotations

import time

import pytest
from engine_helpers import command_calls, spent, wait_for
from redis import Redis

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


async def test_a_delayed_retry_is_one_round_trip_like_an_immediate_one(
    queue: Queue, redis_url: str
) -> None:
    """write.lua reads Redis's clock itself: a retry with a delay sends one EVALSHA and
    no TIME of its own (before: a TIME round trip first, for the due time), and the due
    time it stores, scores and returns is retry_delay after Redis's TIME."""
    sync = Redis.from_url(redis_url)
    try:
        await queue.enqueue_many([Job("f", key=key, retries=3, retry_delay=delay)
                                  for key, delay in (("warm", 0), ("now", 0), ("later", 30))])
        jobs = {j.key: j for j in (await queue.take(3, "w"))[0]}
        assert await queue.retry(jobs["warm"], "loads the script", expect=True)
        calls = {}
        for key in ("now", "later"):
            clock_before = sync.time()
            before = command_calls(sync)
            assert await queue.retry(jobs[key], "oops", expect=True)
            calls[key] = spent(before, command_calls(sync))
            clock_after = sync.time()
        # TIME: write.lua's own (commandstats counts a script's commands too)
        sent = {key: {c: n for c, n in spent_.items() if c in ("evalsha", "eval", "time")}
                for key, spent_ in calls.items()}
        assert sent == {"now": {"evalsha": 1, "time": 1}, "later": {"evalsha": 1, "time": 1}}
        later = jobs["later"]
        stored = await queue.job("later")
        score = await queue.redis.zscore(queue.keys.scheduled, "later")
        assert stored.scheduled == later.scheduled == score
        low = clock_before[0] + clock_before[1] / 1e6 + 30
        assert low <= later.scheduled <= clock_after[0] + clock_after[1] / 1e6 + 30
        assert stored.touched / 1000 == pytest.approx(later.scheduled - 30, abs=0.002)
        now = await queue.job("now")
        assert now.scheduled == jobs["now"].scheduled == 0 and await queue.count("queued") == 2
    finally:
        sync.close()
