"""Job changes on a real Redis, driven without a worker: changes(), refresh,
listen (also after a resubscription)."""

from __future__ import annotations

import asyncio
import time

import pytest
from engine_helpers import wait_for

from podq import Job, Queue, Status


async def test_changes_yield_key_and_status_for_every_change(queue: Queue) -> None:
    seen: list[tuple[str, Status]] = []

    async def listen() -> None:
        async for change in queue.changes():
            seen.append((change.key, change.status))
            if change.status is Status.COMPLETE:
                return

    async with queue.subscribe() as sub:  # subscribe first, so nothing is missed
        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.05)
        job = await queue.enqueue("f", key="c")
        [job], _ = await queue.take(1, "w")
        await job.update(progress=0.5)
        await queue.finish(job, Status.COMPLETE)
        await asyncio.wait_for(listener, 30)
        got = [await asyncio.wait_for(sub.__anext__(), 30) for _ in range(4)]
    expected = [("c", Status.QUEUED), ("c", Status.ACTIVE), ("c", Status.ACTIVE),
                ("c", Status.COMPLETE)]
    assert seen == expected
    assert [(c.key, c.status) for c in got] == expected


async def test_refresh_reloads_and_waits_for_terminal_status(queue: Queue) -> None:
    job = await queue.enqueue("f", key="w")
    [taken], _ = await queue.take(1, "w")
    await job.refresh()
    assert job.status is Status.ACTIVE and job.attempts == 1
    with pytest.raises(TimeoutError):
        await job.refresh(until_complete=0.2)

    async def finish_later() -> None:
        await asyncio.sleep(0.2)
        await queue.finish(taken, Status.COMPLETE, result=42)

    task = asyncio.create_task(finish_later())
    started = time.monotonic()
    await job.refresh(until_complete=30)
    assert job.status is Status.COMPLETE and job.result == 42
    # woken by the notification: without one, the wait re-reads the job every 5 s
    assert time.monotonic() - started < 4.0
    await task
    gone = Job("f", key="nope", queue=queue)
    with pytest.raises(RuntimeError):
        await gone.refresh()


async def test_listen_calls_back_until_truthy(queue: Queue) -> None:
    statuses: list[Status] = []

    def callback(key: str, status: Status) -> bool:
        statuses.append(status)
        return status is Status.COMPLETE

    await queue.enqueue("f", key="l")
    task = asyncio.create_task(queue.listen(["l"], callback, timeout=30))
    # its channel subscribed before the job changes (a fixed 0.1 s could be too short
    # on a loaded machine, and the ACTIVE change was then missed)
    await wait_for(lambda: queue._notifier.ready.is_set() and queue._notifier.callbacks, 30)
    [job], _ = await queue.take(1, "w")
    await queue.finish(job, Status.COMPLETE)
    await task
    assert statuses == [Status.ACTIVE, Status.COMPLETE]


async def test_listen_reads_the_jobs_again_after_a_resubscription(queue: Queue) -> None:
    """A change published while the subscription was down is not replayed by Redis:
    once subscribed again, listen gives each job's current status."""
    statuses: list[Status] = []

    def callback(key: str, status: Status) -> bool:
        statuses.append(status)
        return status is Status.ABORTED

    job = await queue.enqueue("f", key="missed")
    task = asyncio.create_task(queue.listen(["missed"], callback, timeout=15))

    async def subscribed() -> bool:
        [(_, count)] = await queue.redis.pubsub_shardnumsub(queue.keys.changes)
        return count == 1

    await wait_for(subscribed, 10)
    # Redis drops the subscription; the abort's message finds no subscriber (the
    # reader subscribes again 0.1 s later at the earliest)
    assert await queue.redis.client_kill_filter(_type="pubsub") == 1
    await queue.abort(job, "gone")
    await task
    assert statuses == [Status.ABORTED]
