"""Taking jobs on a real Redis, driven without a worker: atomically active,
by priority, scheduled jobs when due."""

from __future__ import annotations

import asyncio
import time

import pytest

from podq import Job, Queue, Status


async def test_fix1_take_marks_active_in_the_same_atomic_step(queue: Queue) -> None:
    await queue.enqueue_many([Job("f", key=f"j{i}") for i in range(200)])

    async def taker(worker_id: str) -> list[Job]:
        got: list[Job] = []
        while True:
            jobs, _ = await queue.take(3, worker_id)
            if not jobs:
                return got
            got += jobs

    results = await asyncio.gather(*(taker(f"w{i}") for i in range(5)))
    keys = [j.key for r in results for j in r]
    assert sorted(keys) == sorted(f"j{i}" for i in range(200))  # each taken exactly once
    for i, taken in enumerate(results):
        for job in taken:
            assert job.status is Status.ACTIVE and job.worker_id == f"w{i}"
            assert job.attempts == 1 and job.started > 0
    # nothing is ever out of both queued and active: the stored state agrees
    assert await queue.count("queued") == 0 and await queue.count("active") == 200
    stored = await queue.jobs(keys)
    assert all(j.status is Status.ACTIVE and j.worker_id for j in stored)


async def test_fix8_priorities_lower_first_fifo_within_a_priority(queue: Queue) -> None:
    order = [("p5", 5), ("p1a", 1), ("p3", 3), ("p1b", 1), ("pm2", -2), ("p1c", 1), ("p0", 0)]
    for key, priority in order[:3]:
        await queue.enqueue("f", key=key, priority=priority)
    await queue.enqueue_many([Job("f", key=k, priority=p) for k, p in order[3:]])
    taken = []
    while True:
        jobs, _ = await queue.take(1, "w")
        if not jobs:
            break
        taken.append(jobs[0].key)
    assert taken == ["pm2", "p0", "p1a", "p1b", "p1c", "p3", "p5"]
    with pytest.raises(ValueError):
        await queue.enqueue("f", priority=10**6)


async def test_scheduled_job_becomes_ready_on_time(queue: Queue) -> None:
    # 3 s ahead: the checks before it must all run before it is due (0.6 s was a
    # window a loaded machine could outlast between the enqueue and the counts)
    at = time.time() + 3
    await queue.enqueue("f", key="later", scheduled=at)
    jobs, next_at = await queue.take(1, "w")
    assert jobs == [] and next_at == pytest.approx(at, abs=0.01)
    assert await queue.count("queued") == 0 and await queue.count("scheduled") == 1
    assert await queue.count("queued") == 0  # not before it is due
    await asyncio.sleep(max(0.0, at - time.time()) + 0.01)  # the clock reaching `at`
    assert await queue.count("queued") == 1
    jobs, next_at = await queue.take(1, "w")
    assert [j.key for j in jobs] == ["later"] and next_at is None
