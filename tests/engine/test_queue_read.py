"""Reading a queue on a real Redis, driven without a worker: job, jobs, iter_jobs,
counts, depth, info and stats."""

from __future__ import annotations

import time

import pytest

from podq import Job, Queue, Status


async def test_job_jobs_and_iter_jobs(queue: Queue) -> None:
    a = await queue.enqueue("f", key="a")
    await queue.enqueue("f", key="b")
    assert (await queue.job("a")) == a
    assert await queue.job("missing") is None
    found = await queue.jobs(["a", "missing", "b"])
    assert [j.key if j else None for j in found] == ["a", None, "b"]
    [taken], _ = await queue.take(1, "w")
    assert taken.key == "a"
    found = {j.key: j.status async for j in queue.iter_jobs()}
    assert found == {"a": Status.ACTIVE, "b": Status.QUEUED}
    assert [j.key async for j in queue.iter_jobs([Status.ACTIVE])] == ["a"]


async def test_count_kinds_depth_and_info(queue: Queue) -> None:
    await queue.enqueue_many([Job("f") for _ in range(3)])
    await queue.enqueue("f", scheduled=time.time() + 60)
    await queue.enqueue("f", scheduled=time.time() - 1)  # due: counts as queued
    await queue.take(1, "w")
    assert await queue.count("queued") == 3
    assert await queue.count("scheduled") == 1
    assert await queue.count("active") == 1
    assert await queue.count("incomplete") == 5
    assert await queue.depth() == 4  # jobs scheduled later do not count
    with pytest.raises(ValueError):
        await queue.count("bogus")
    info = await queue.info(jobs=True)
    assert info["name"] == "test" and info["queued"] == 3 and info["scheduled"] == 1
    assert len(info["jobs"]) == 5
    stats = await queue.stats()
    assert stats["enqueued"] == 5 and stats["active"] == 1
