"""Finishing and updating jobs on a real Redis, driven without a worker: ttl
rules, update of fields, of a vanished job."""

from __future__ import annotations

import asyncio

from podq import Queue, Status


async def test_finish_applies_ttl_rules(queue: Queue) -> None:
    for key, ttl in (("keep", 0), ("expire", 30), ("delete", -1)):
        await queue.enqueue("f", key=key, ttl=ttl)
    jobs, _ = await queue.take(3, "w")
    for job in jobs:
        await queue.finish(job, Status.COMPLETE, result={"ok": job.key})
    assert await queue.redis.pttl(queue.job_id("keep")) == -1
    assert 0 < await queue.redis.pttl(queue.job_id("expire")) <= 30_000
    assert await queue.job("delete") is None
    kept = await queue.job("keep")
    assert kept.status is Status.COMPLETE and kept.result == {"ok": "keep"}
    assert kept.progress == 1.0 and kept.completed >= kept.started > 0
    assert await queue.count("incomplete") == 0


async def test_update_sets_fields_touches_and_keeps_status(queue: Queue) -> None:
    await queue.enqueue("f", key="u")
    [job], _ = await queue.take(1, "w")
    before = job.touched
    await asyncio.sleep(0.01)
    await job.update(progress=0.25, meta={"step": 1})
    stored = await queue.job("u")
    assert stored.progress == 0.25 and stored.meta == {"step": 1}
    assert stored.touched > before and stored.status is Status.ACTIVE
    await job.update(status=Status.ABORTING)
    assert (await queue.job("u")).status is Status.ABORTING


async def test_update_of_a_vanished_job_stores_nothing(queue: Queue) -> None:
    await queue.enqueue("f", key="gone", ttl=-1)
    [job], _ = await queue.take(1, "w")
    await queue.finish(job, Status.COMPLETE)
    await job.update(progress=0.5)
    assert await queue.job("gone") is None
