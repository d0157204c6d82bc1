"""Queue.waiting_since (the podq_queue_waiting_seconds gauge) on a real redis-server,
through the real paths only: each ready job's wait counts from when it last became
ready to run, on Redis's clock (its `ready_since`, set by the script that made it
ready), not from its first enqueue. Nothing is written into a job's record by hand.

Each action is bracketed by two readings of Redis's clock (ms): the time it stamps lies
between them (less a millisecond: the scripts floor their time to a ms as redis_ms()
does, from a float). Between steps the test waits for Redis's clock to move on, so a
stamp of one step cannot pass for another's.
"""

from __future__ import annotations

import typing as t

from engine_helpers import redis_clock_past, wait_for

from podq import Job, Queue, Status

STEP_MS = 20  # how far Redis's clock moves on between two steps, at least


async def bracket(queue: Queue, action: t.Callable[[], t.Awaitable[t.Any]]) -> tuple[int, int]:
    """Redis's clock (ms) just before and just after action() ran."""
    before = await queue.redis_ms()
    await action()
    return before - 1, await queue.redis_ms()


async def move_on(queue: Queue, past_ms: float) -> None:
    """Wait until Redis's clock is STEP_MS past past_ms."""
    await redis_clock_past(queue, past_ms + STEP_MS)


async def since_ms(queue: Queue) -> int:
    since = await queue.waiting_since()
    assert since is not None, "no job counted as waiting"
    return round(since * 1000)


async def test_a_plain_enqueued_job_waits_from_its_enqueue(queue: Queue) -> None:
    assert await queue.waiting_since() is None
    low, high = await bracket(queue, lambda: queue.enqueue("f", key="plain"))
    assert low <= await since_ms(queue) <= high
    assert (await queue.job("plain")).ready_since == await since_ms(queue)
    # a second job, later, hides nothing: the head has waited longest
    await move_on(queue, high)
    await queue.enqueue("f", key="second")
    assert low <= await since_ms(queue) <= high
    # enqueue_many stamps its jobs the same way
    await queue.redis.zrem(queue.keys.queued, "plain", "second")  # as if taken
    await move_on(queue, high)
    low, high = await bracket(queue, lambda: queue.enqueue_many([Job("f", key="m")]))
    assert low <= await since_ms(queue) <= high


async def test_a_retried_job_waits_from_its_retry_not_its_first_enqueue(queue: Queue) -> None:
    _, first = await bracket(queue, lambda: queue.enqueue("f", key="r", retries=3))
    [job], _ = await queue.take(1, "w")
    assert await queue.waiting_since() is None  # taken: nothing waits
    await move_on(queue, first)
    low, high = await bracket(queue, lambda: queue.retry(job, "boom", expect=True))
    assert low <= await since_ms(queue) <= high
    assert await since_ms(queue) > first + STEP_MS


async def test_a_delayed_retry_waits_from_its_due_time(queue: Queue) -> None:
    await queue.enqueue("f", key="d", retries=3, retry_delay=0.3)
    [job], _ = await queue.take(1, "w")
    assert await queue.retry(job, "later", expect=True)
    due_ms = int(job.scheduled * 1000)  # the due time write.lua set, on Redis's clock
    assert (await queue.job("d")).ready_since == due_ms
    assert await queue.waiting_since() is None  # not due yet
    await move_on(queue, due_ms)
    assert abs(await since_ms(queue) - due_ms) <= 1  # due, in the scheduled zset
    # a take promotes it to the ready queue (and takes the job of a higher priority):
    # still waiting since it was due, not since it was promoted
    await queue.enqueue("f", key="first", priority=-1)
    [taken], _ = await queue.take(1, "w")
    assert taken.key == "first"
    assert await queue.redis.zscore(queue.keys.queued, "d") is not None
    assert await since_ms(queue) == due_ms


async def test_a_job_scheduled_for_later_waits_from_its_schedule(queue: Queue) -> None:
    now_ms = await queue.redis_ms()
    job = await queue.enqueue("f", key="later", scheduled=(now_ms + 60_000) / 1000)
    assert (await queue.job("later")).ready_since == int(job.scheduled * 1000)
    assert await queue.waiting_since() is None


async def test_a_job_put_back_by_a_sweep_waits_from_the_put_back(queue: Queue) -> None:
    _, first = await bracket(queue, lambda: queue.enqueue("f", key="s", timeout=0))
    await queue.take(1, "dead-worker")  # a worker with no liveness record
    await move_on(queue, first)
    low = await queue.redis_ms() - 1
    # (the job counts as orphaned once its lease, 0 ms, has passed; each sweep holds
    # the lock for 10 ms)
    assert await wait_for(lambda: queue.sweep(lock=0.01), 30) == [queue.job_id("s")]
    high = await queue.redis_ms()
    stored = await queue.job("s")
    assert stored.status is Status.QUEUED and stored.disruptions == 1
    assert low <= await since_ms(queue) <= high
    assert await since_ms(queue) == stored.ready_since > first + STEP_MS


async def test_a_dependent_job_waits_from_when_its_dependency_completed(queue: Queue) -> None:
    await queue.enqueue("f", key="parent")
    await queue.enqueue("f", key="child", depends_on=["parent"])
    [parent], _ = await queue.take(1, "w")
    assert await queue.waiting_since() is None  # the child waits on its dependency
    await move_on(queue, await queue.redis_ms())
    low, high = await bracket(
        queue, lambda: queue.finish(parent, Status.COMPLETE, expect=True))
    assert low <= await since_ms(queue) <= high
