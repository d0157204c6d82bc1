"""The Worker in-process: job timeouts, each at its own deadline, the worker's
default and the queue's."""

from __future__ import annotations

import time

from engine_helpers import FUNCTIONS, Workers

from podq import Queue, Status


async def test_timeout_fails_with_a_clear_message(queue: Queue, workers: Workers) -> None:
    await workers.start(queue, FUNCTIONS)
    job = await queue.enqueue("sleeps", timeout=1)
    started = time.monotonic()
    await job.refresh(until_complete=30)
    assert job.status is Status.FAILED and "exceeded its timeout of 1s" in job.error
    # well before the job's own end (10 s): the timeout ended it, with margin for a
    # loaded machine (2.5 s, from the enqueue, was too tight a bound)
    assert time.monotonic() - started < 8


async def test_each_running_job_times_out_at_its_own_deadline(
    queue: Queue, workers: Workers
) -> None:
    """The worker keeps every running job's timeout on one timer (podq.deadlines): a
    later deadline still fires after earlier ones, and a job that ended is not hit."""
    await workers.start(queue, FUNCTIONS, concurrency=20)
    late = await queue.enqueue("sleeps", seconds=30, timeout=2)
    early = [await queue.enqueue("sleeps", seconds=30, timeout=1) for _ in range(5)]
    quick = [await queue.enqueue("sleeps", seconds=0.2, timeout=1) for _ in range(5)]
    within = await queue.enqueue("sleeps", seconds=1.5, timeout=3)
    started = time.monotonic()
    for job in [*early, *quick, late, within]:
        await job.refresh(until_complete=30)
    assert time.monotonic() - started < 20  # the 30 s sleeps were all cut short
    assert [j.status for j in early] == [Status.FAILED] * 5
    assert all("exceeded its timeout of 1s" in j.error for j in early)
    assert [j.status for j in quick] == [Status.COMPLETE] * 5
    assert late.status is Status.FAILED and "exceeded its timeout of 2s" in late.error
    assert late.duration("process") >= 1900  # not before its own deadline
    assert within.status is Status.COMPLETE


async def test_fix7_default_timeout_per_worker(queue: Queue, workers: Workers) -> None:
    await workers.start(queue, FUNCTIONS, timeout=1)
    job = await queue.enqueue("sleeps")  # no timeout chosen: the worker's default applies
    await job.refresh(until_complete=30)
    assert job.status is Status.FAILED and job.timeout == 1
    chosen = await queue.enqueue("sleeps", seconds=1.2, timeout=5)
    await chosen.refresh(until_complete=30)
    assert chosen.status is Status.COMPLETE
    configured = Queue(queue.redis, name="test", default_timeout=5)  # the queue's choice wins
    try:
        by_queue = await configured.enqueue("sleeps", seconds=1.2)
        await by_queue.refresh(until_complete=30)
        assert by_queue.status is Status.COMPLETE and by_queue.timeout == 5
    finally:
        await configured._notifier.close()
