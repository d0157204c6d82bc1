"""The sweep on a real Redis, driven without a worker: jobs of lost workers put
back (or failed WorkerLost), stuck jobs aborted."""

from __future__ import annotations

import pytest
from engine_helpers import wait_for

from podq import Queue, Status


async def test_sweep_recovers_jobs_of_a_worker_without_liveness(queue: Queue) -> None:
    await queue.write_worker_info("alive", {"id": "alive"}, ttl=30)
    await queue.enqueue("f", key="mine", retries=2, timeout=0, heartbeat=0)
    await queue.enqueue("f", key="last", retries=1, timeout=0, heartbeat=0)
    await queue.enqueue("f", key="kept", timeout=0)
    await queue.take(2, "dead-worker")
    await queue.take(1, "alive")
    # (a job counts as orphaned once its lease, 0 ms here, has passed: in the same
    # millisecond as the take it has not; each sweep holds the lock for 10 ms)
    swept = await wait_for(lambda: queue.sweep(lock=0.01), 30)
    assert sorted(swept) == sorted([queue.job_id("mine"), queue.job_id("last")])
    mine, last, kept = await queue.jobs(["mine", "last", "kept"])
    # a lost worker is a disruption, not a failure: put back, the attempt not used up
    for job in (mine, last):
        assert job.status is Status.QUEUED and job.error == "swept" and job.attempts == 0
        assert job.disruptions == 1 and "dead-worker" in job.last_disruption
    assert kept.status is Status.ACTIVE


async def test_a_job_losing_its_worker_every_time_ends_failed_worker_lost(redis_url: str) -> None:
    queue = Queue.from_url(redis_url, name="lossy", max_disruptions=3)
    try:
        await queue.enqueue("f", key="doomed", timeout=0)
        for run in range(1, 4):
            [job], _ = await queue.take(1, f"dies-{run}")
            assert job.attempts == 1  # every run is attempt 1: none was used up
            # (each sweep holds the sweep lock for 10 ms)
            assert await wait_for(lambda: queue.sweep(lock=0.01), 30) == [queue.job_id("doomed")]
        job = await queue.job("doomed")
        assert job.status is Status.FAILED and job.disruptions == 3
        assert job.error.startswith("WorkerLost:") and "dies-3" in job.error
        assert await queue.count("incomplete") == 0
        with pytest.raises(ValueError, match="max_disruptions"):
            Queue(queue.redis, name="x", max_disruptions=0)
    finally:
        await queue.disconnect()


async def test_sweep_asks_a_live_worker_to_abort_its_stuck_job(queue: Queue) -> None:
    await queue.write_worker_info("w", {"id": "w"}, ttl=30)
    # heartbeat 3 s: the first sweep runs within it (1 s was a window a loaded machine
    # could outlast); then sweeps until the heartbeat has passed
    await queue.enqueue("f", key="hb", heartbeat=3, timeout=0, retries=1)
    await queue.take(1, "w")
    assert await queue.sweep(lock=0.01, abort=0.1) == []
    assert await wait_for(lambda: queue.sweep(lock=0.01, abort=0.1), 30) == [queue.job_id("hb")]
    stored = await queue.job("hb")
    # its worker is alive: it cancels the run and writes it back, not the sweep
    assert stored.status is Status.ABORTING and stored.error == "swept"
    assert await queue.sweep(lock=0.01, abort=0.1) == []  # asked once


async def test_sweep_takes_over_a_stuck_job_taken_without_a_worker(queue: Queue) -> None:
    # heartbeat 3 s: the first sweep runs within it (1 s was a window a loaded machine
    # could outlast); then sweeps until the heartbeat has passed
    await queue.enqueue("f", key="hb", heartbeat=3, timeout=0, retries=1)
    job = await queue.dequeue()
    assert job.key == "hb" and not job.worker_id
    # no liveness record, but no worker either: not taken for a dead worker's job
    assert await queue.sweep(lock=0.01, abort=0.1) == []
    assert await wait_for(lambda: queue.sweep(lock=0.01, abort=0.1), 30) == [queue.job_id("hb")]
    stored = await queue.job("hb")
    assert stored.status is Status.ABORTED and stored.error == "swept"
    assert await queue.count("active") == 0
