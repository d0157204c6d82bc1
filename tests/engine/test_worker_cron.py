"""The Worker in-process enqueuing cron jobs: unique or one per slot, time zones."""

from __future__ import annotations

import pytest
from engine_helpers import EVENTS, FUNCTIONS, Workers, tick, wait_for

from podq import CronJob, Queue, Status, Worker


async def test_cron_unique_keeps_one_pending_job(queue: Queue, workers: Workers) -> None:
    EVENTS.clear()
    cron = CronJob(tick, cron="* * * * * *")  # 6 fields: every second
    await workers.start(queue, FUNCTIONS, cron_jobs=[cron])
    await wait_for(lambda: len(EVENTS) >= 2, 30)
    assert await queue.count("incomplete") <= 1


async def test_fix5_cron_not_unique_enqueues_exactly_one_job_per_slot(
    queue: Queue, workers: Workers
) -> None:
    EVENTS.clear()
    cron = CronJob(tick, cron="* * * * * *", unique=False)
    # two workers, each ticking several times per slot
    timers = {"schedule": 0.1, "worker_info": 0.5, "sweep": 5, "abort": 1}
    await workers.start(queue, FUNCTIONS, cron_jobs=[cron], timers=timers)
    await workers.start(queue, FUNCTIONS, cron_jobs=[cron], timers=timers)
    # until jobs of three slots were enqueued (a fixed 2.6 s could see fewer on a
    # loaded machine)
    await wait_for(lambda: count_jobs(queue, 3), 30)
    await workers.stop_all()
    keys = [j.key async for j in queue.iter_jobs()]
    slots = [int(k.rsplit(":", 1)[1]) for k in keys]
    assert len(slots) == len(set(slots)) >= 2  # one job per slot, no duplicates
    assert EVENTS.count("tick") == len([j async for j in queue.iter_jobs([Status.COMPLETE])])


async def count_jobs(queue: Queue, at_least: int) -> bool:
    return len([j async for j in queue.iter_jobs()]) >= at_least


async def test_cron_time_zone_and_invalid_expression(queue: Queue) -> None:
    with pytest.raises(ValueError):
        Worker(queue, FUNCTIONS, cron_jobs=[CronJob(tick, cron="not a cron")])
    from zoneinfo import ZoneInfo

    worker = Worker(queue, FUNCTIONS, cron_jobs=[CronJob(tick, cron="0 3 * * *")],
                    cron_tz=ZoneInfo("Asia/Tokyo"))
    job = await worker._enqueue_cron(worker.cron_jobs[0])
    from datetime import datetime

    at = datetime.fromtimestamp(job.scheduled, ZoneInfo("Asia/Tokyo"))
    assert (at.hour, at.minute) == (3, 0)
