"""batch, map and apply on a real Redis, driven without a worker."""

from __future__ import annotations

import asyncio

import pytest

from podq import Queue, Status
from podq.queue import JobError


async def test_batch_aborts_its_jobs_when_an_exception_escapes(queue: Queue) -> None:
    with pytest.raises(RuntimeError):
        async with queue.batch():
            await queue.enqueue("f", key="b1")
            await queue.enqueue("f", key="b2")
            raise RuntimeError("boom")
    assert [j.status for j in await queue.jobs(["b1", "b2"])] == [Status.ABORTED] * 2
    async with queue.batch():
        await queue.enqueue("f", key="b3")
    assert (await queue.job("b3")).status is Status.QUEUED


async def test_map_and_apply_wait_on_notifications(queue: Queue) -> None:
    async def fake_worker() -> None:
        while True:
            jobs, _ = await queue.take(10, "w")
            for job in jobs:
                if job.function == "fail":
                    await queue.finish(job, Status.FAILED, error="bad")
                else:
                    await queue.finish(job, Status.COMPLETE, result=job.kwargs["a"] * 2)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(fake_worker())
    try:
        assert await queue.map("double", [{"a": 1}, {"a": 2}, {"a": 3}], timeout=30) == [2, 4, 6]
        assert await queue.apply("double", a=21, timeout=30) == 42
        with pytest.raises(JobError):
            await queue.apply("fail", timeout=30)
        results = await queue.map("fail", [{}], return_exceptions=True, timeout=30)
        assert isinstance(results[0], JobError)
    finally:
        task.cancel()
