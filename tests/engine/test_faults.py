"""Engine faults on a real redis-server: workers killed, Redis flushed, stale runs. Each
test breaks something and asserts nothing was lost, nothing ran twice and nothing failed
that should not have.

The other faults by topic: test_faults_lost_replies.py (replies lost, takes resent or run
late), test_faults_sync_functions.py (sync functions cancelled), test_faults_clock.py
(clocks skewed, Redis frozen or down). docs/reliability.md lists the guarantee each test
proves.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from engine_helpers import Workers, output, start_worker_process, wait_for
from fault_settings import FAULTS, runs

from podq import Job, Queue, Status

# -- disruption is not failure ---------------------------------------------------------


async def test_a_job_that_kills_its_worker_every_time_ends_failed_worker_lost(
    redis_url: str, spawn: list
) -> None:
    queue = Queue.from_url(redis_url)
    try:
        job = await queue.enqueue("kills_its_worker", retries=1, timeout=0)
        # each worker dies running it; the next one's sweep finds the job orphaned and
        # puts it back without using up its attempt, until max_disruptions (3) is reached
        deadline = time.monotonic() + 60
        while (await queue.job(job.key)).status not in (Status.FAILED, Status.COMPLETE):
            assert len(spawn) <= 5 and time.monotonic() < deadline, [output(p) for p in spawn]
            if not spawn or spawn[-1].poll() is not None:
                start_worker_process(spawn, redis_url, "--max-disruptions", "3",
                                     settings=FAULTS)
            await asyncio.sleep(0.05)
        await job.refresh()
        assert job.status is Status.FAILED and job.error.startswith("WorkerLost:")
        assert job.disruptions == 3 and job.attempts == 1  # each run was attempt 1
        assert "lost (its liveness record expired)" in job.last_disruption
        assert (await runs(queue))[job.key] == 3  # it ran once per disruption, no more
        assert spawn[-1].poll() is None  # the worker that failed it is alive and well
    finally:
        await queue.disconnect()


# -- Redis lost its data ---------------------------------------------------------------


async def test_flushall_while_workers_run_sweeps_nothing_and_runs_nothing_twice(
    queue: Queue, workers: Workers
) -> None:
    ran: Counter[str] = Counter()

    async def work(ctx: dict, seconds: float) -> str:
        ran[ctx["job"].key] += 1
        await asyncio.sleep(seconds)
        return "done"

    # liveness is written every 2 s: after the flush, live workers have no record for
    # up to 2 s while their sweeps (every 0.3 s) look at the jobs they take meanwhile
    timers = {"schedule": 0.5, "worker_info": 2, "sweep": 0.3, "abort": 0.2}
    for _ in range(2):
        await workers.start(queue, [("work", work)], concurrency=4, timers=timers)
    before = await queue.enqueue_many(
        [Job("work", key=f"before-{i}", kwargs={"seconds": 0.8}, retries=1) for i in range(12)]
    )
    await wait_for(lambda: queue.count("active"), 30)
    await queue.redis.flushall()
    started_before_flush = set(ran)
    after = await queue.enqueue_many(
        [Job("work", key=f"after-{i}", kwargs={"seconds": 0.5}, retries=1) for i in range(16)]
    )
    for job in after:
        await job.refresh(until_complete=30)
        assert job.status is Status.COMPLETE and job.attempts == 1 and job.disruptions == 0
    assert all(ran[job.key] == 1 for job in after)  # taken after the flush: never swept
    for job in before:
        stored = await queue.job(job.key)
        if job.key in started_before_flush:
            # running when Redis lost it: its run wrote it back, complete, once
            await wait_for(lambda key=job.key: queue.job(key), 30)
            stored = await queue.job(job.key)
            assert stored.status is Status.COMPLETE and ran[job.key] == 1
        elif stored is None:
            assert ran[job.key] == 0  # queued when Redis lost it: gone, never run
    assert max(ran.values()) == 1  # nothing ran twice
    assert (await queue.stats())["disrupted"] == 0  # nothing was taken for lost


# -- per-attempt tokens ----------------------------------------------------------------


async def test_a_stale_run_cannot_write_a_newer_attempt_of_the_same_worker(
    queue: Queue,
) -> None:
    await queue.enqueue("f", key="k", timeout=0)
    [stale], _ = await queue.take(1, "w")  # lease 0 and no liveness record: orphaned
    assert await wait_for(lambda: queue.sweep(lock=0.01), 30) == [queue.job_id("k")]
    [current], _ = await queue.take(1, "w")
    # same worker id, same attempt count (the disruption did not use one up): only the
    # attempt id tells the runs apart
    assert (stale.worker_id, stale.attempts) == (current.worker_id, current.attempts)
    assert stale.attempt_id != current.attempt_id
    await stale.update(progress=0.9)
    assert not await queue.finish(stale, Status.COMPLETE, result="stale", expect=True)
    assert not await queue.retry(stale, "stale", expect=True)
    stored = await queue.job("k")
    assert stored.status is Status.ACTIVE and stored.progress == 0.0
    assert stored.attempt_id == current.attempt_id
    assert await queue.finish(current, Status.COMPLETE, result="current", expect=True)
    assert (await queue.job("k")).result == "current"


async def test_the_same_key_taken_again_while_a_stale_run_ends_loses_no_slot(
    queue: Queue, workers: Workers
) -> None:
    release = asyncio.Event()
    seen: list[str] = []

    async def hold(ctx: dict) -> str:
        seen.append(ctx["job"].attempt_id)
        await release.wait()
        return ctx["job"].attempt_id

    worker = await workers.start(queue, [("hold", hold)], concurrency=2)
    job = await queue.enqueue("hold", key="k", timeout=0)
    await wait_for(lambda: len(seen) == 1, 30)
    first = await queue.job("k")
    # its run is taken for lost (as a sweep would after a partition): put back, and the
    # same worker takes it again while the first run still holds a slot
    assert await queue.disrupt(first, "test: taken for lost", "swept") is Status.QUEUED
    await wait_for(lambda: len(seen) == 2, 30)
    assert seen[0] != seen[1]
    await wait_for(lambda: worker.executing == 1, 30)  # the stale run was cancelled
    release.set()
    await job.refresh(until_complete=30)
    assert job.status is Status.COMPLETE and job.result == seen[1]
    await wait_for(lambda: worker.executing == 0 and not worker._runs, 30)
    # both slots are free again: two jobs run at once
    release.clear()
    seen.clear()
    await queue.enqueue_many([Job("hold", key=k, timeout=0) for k in ("a", "b")])
    await wait_for(lambda: len(seen) == 2, 30)
    release.set()
