"""The Worker in-process draining at stop: running jobs finish within the grace
period, unfinished ones are put back, a draining worker stays alive."""

from __future__ import annotations

from engine_helpers import FUNCTIONS, Workers, wait_for

from podq import Queue, Status


async def test_drain_lets_running_jobs_finish_within_grace(
    queue: Queue, workers: Workers
) -> None:
    worker = await workers.start(queue, FUNCTIONS, shutdown_grace_period_s=3)
    job = await queue.enqueue("sleeps", seconds=0.5)
    await wait_for(lambda: queue.count("active"), 30)
    await queue.enqueue("add", a=1, b=1, key="after-stop")
    await worker.stop()
    await job.refresh()
    assert job.status is Status.COMPLETE and job.result == "slept"
    assert (await queue.job("after-stop")).status in (Status.QUEUED, Status.COMPLETE)


async def test_drain_puts_unfinished_jobs_back(queue: Queue, workers: Workers) -> None:
    worker = await workers.start(queue, FUNCTIONS, shutdown_grace_period_s=0.2)
    job = await queue.enqueue("sleeps", seconds=30, timeout=60)
    await wait_for(lambda: queue.count("active"), 30)
    await worker.stop()
    await job.refresh()
    assert job.status is Status.QUEUED and job.error == "cancelled"  # SAQ's text
    # a disruption, not an attempt: the next run is attempt 1 again
    assert job.attempts == 0 and job.disruptions == 1 and "shut down" in job.last_disruption
    assert await queue.count("queued") == 1
    # another worker picks it up: nothing was lost
    await workers.start(queue, [("sleeps", lambda ctx, seconds: "second run")])
    await job.refresh(until_complete=30)
    assert job.status is Status.COMPLETE and job.result == "second run"


async def test_draining_worker_stays_alive_so_its_jobs_are_not_swept(
    queue: Queue, workers: Workers
) -> None:
    # a liveness ttl of 2 s (written every 0.2 s): a loop stall on a loaded machine
    # does not outlast it, as it could 0.6 s; the job still drains for longer than it
    draining = await workers.start(queue, FUNCTIONS, shutdown_grace_period_s=10, liveness_ttl=2)
    job = await queue.enqueue("sleeps", seconds=3.5, retries=3)
    await wait_for(lambda: queue.count("active"), 30)
    await workers.start(queue, FUNCTIONS)  # sweeps every 0.3 s
    await draining.stop()  # drains for longer than its liveness ttl
    await job.refresh()
    assert job.status is Status.COMPLETE and job.attempts == 1 and job.worker_id == draining.id
