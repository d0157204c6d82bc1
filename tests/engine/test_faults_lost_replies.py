"""Engine faults on a real redis-server: replies lost on the way back (a proxy drops
them), so the client sends a script again: takes and enqueues resent, a late copy of an
older take, jobs taken for a worker that never received them. Each test asserts nothing
was lost, nothing ran twice and nothing was left for nobody.

docs/reliability.md lists the guarantee each test proves.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from engine_helpers import ReplyDroppingProxy, Workers, wait_for

from podq import Job, Queue, Status

# -- scripts safe under client retries -------------------------------------------------


@pytest.fixture
async def proxy(redis_server: object) -> AsyncIterator[ReplyDroppingProxy]:
    async with ReplyDroppingProxy(redis_server.port) as p:  # type: ignore[attr-defined]
        yield p


async def test_a_take_resent_after_a_lost_reply_hands_out_the_same_jobs(
    redis_url: str, proxy: ReplyDroppingProxy
) -> None:
    queue = Queue.from_url(proxy.url, name="lossy")  # redis-py resends on a dropped link
    try:
        await queue.enqueue_many([Job("f", key=f"j{i}") for i in range(6)])
        proxy.marker = queue._scripts.take.sha.encode()
        jobs, _ = await queue.take(2, "w")
        assert proxy.dropped == 1  # the first reply was lost, the client sent it again
        assert len(jobs) == 2 and await queue.count("active") == 2  # none taken for nobody
        # a worker whose resends all failed sends the same request again later: same jobs
        again, _ = await queue.take(2, "w", request="r")
        assert await queue.take(2, "w", request="r") == (again, None)
        assert await queue.count("active") == 4
        # an enqueue resent after a lost reply reports the job enqueued (once)
        proxy.marker = queue._scripts.enqueue.sha.encode()
        assert await queue.enqueue("f", key="resent") is not None
        assert proxy.dropped == 2 and (await queue.stats())["enqueued"] == 7
    finally:
        await queue.disconnect()


async def test_a_late_copy_of_an_older_take_takes_nothing(queue: Queue) -> None:
    """Redis frozen (SIGSTOP) or unreachable: the client sends a take again on another
    connection; once Redis runs again the copies may run in either order. A copy of a
    request the worker has had its reply to, run after the worker's next take, must
    take nothing: its jobs would be active for a worker that never sees them."""
    await queue.enqueue_many([Job("f", key=f"j{i}", timeout=0) for i in range(6)])
    first, _ = await queue.take(2, "w", request="r1", previous="r0")
    second, _ = await queue.take(2, "w", request="r2", previous="r1")
    assert len(first) == len(second) == 2
    # the late copy of r1 (its record was dropped by r2), jobs still queued: none taken
    assert await queue.take(2, "w", request="r1", previous="r0") == ([], None)
    assert await queue.count("active") == 4 and await queue.count("queued") == 2
    # a late copy of a request that took no job, after the next one took some
    assert await queue.take(0, "v", request="e1", previous="e0") == ([], None)
    assert len((await queue.take(2, "v", request="e2", previous="e1"))[0]) == 2
    await queue.enqueue_many([Job("f", key=f"k{i}", timeout=0) for i in range(2)])
    assert await queue.take(2, "v", request="e1", previous="e0") == ([], None)
    # the same request sent again while it is still the last: its jobs, once
    again, _ = await queue.take(2, "w", request="r3", previous="r2")
    assert await queue.take(2, "w", request="r3", previous="r2") == (again, None)
    assert len(again) == 2 and await queue.count("active") == 8


async def test_an_aborted_job_taken_for_a_worker_that_never_received_it_is_written_back(
    queue: Queue, workers: Workers
) -> None:
    """A take that ran in Redis for a live worker whose reply never reached it: no run
    writes its jobs back, so an abort (a user's, or a sweep's of a stuck job) left them
    aborting for good. The worker writes back a job it never received: aborted, or put
    back as a disruption when a sweep found it stuck (its function never ran)."""
    release = asyncio.Event()
    ran: Counter[str] = Counter()

    async def hold(ctx: dict) -> str:
        ran[ctx["job"].key] += 1
        await release.wait()
        return "ran"

    worker = await workers.start(queue, [("hold", hold)], concurrency=1)
    await queue.enqueue("hold", key="busy", timeout=0)
    await wait_for(lambda: ran["busy"] == 1, 30)  # its one slot is taken
    await queue.enqueue_many([Job("hold", key="user", timeout=0),
                              Job("hold", key="stuck", timeout=1, retries=1)])
    lost, _ = await queue.take(2, worker.id)  # as the late take did: for it, unseen
    assert {job.key for job in lost} == {"user", "stuck"}
    await (await queue.job("user")).abort("user abort")

    async def status(key: str, wanted: Status) -> bool:
        return (await queue.job(key)).status is wanted

    await wait_for(lambda: status("user", Status.ABORTED), 30)
    # "stuck" passes its timeout: the sweep asks its worker to abort it, which writes it
    # back unused (a disruption), and runs it once its slot is free
    await wait_for(lambda: status("stuck", Status.QUEUED), 30)
    stuck = await queue.job("stuck")
    assert stuck.disruptions == 1 and stuck.attempts == 0
    assert "never received" in stuck.last_disruption
    release.set()
    await wait_for(lambda: status("stuck", Status.COMPLETE), 30)
    assert ran == Counter({"busy": 1, "stuck": 1})  # "user" never ran
