"""Enqueue on a real Redis, driven without a worker: job fields and kwargs, jobs
by name or instance, unique keys, enqueue_many, JSON checks, the queue's default
timeout."""

from __future__ import annotations

import time

import pytest

from podq import Job, Queue, Status


async def test_enqueue_by_name_splits_job_fields_from_kwargs(queue: Queue) -> None:
    job = await queue.enqueue("add", a=1, b=2, retries=3, key="k1", timeout=5)
    assert job is not None
    assert job.kwargs == {"a": 1, "b": 2} and job.retries == 3 and job.timeout == 5
    assert job.status is Status.QUEUED and job.queue is queue
    assert abs(job.queued - time.time() * 1000) < 5000  # epoch milliseconds
    stored = await queue.job("k1")
    assert stored is not None and stored.to_dict() == job.to_dict()


async def test_enqueue_job_object_and_job_enqueue_method(queue: Queue) -> None:
    job = Job("f", key="obj", kwargs={"x": 1})
    assert await queue.enqueue(job) is job
    again = Job("f", key="obj", queue=queue, kwargs={"x": 2})
    await again.enqueue()  # duplicate: refreshed from the store
    assert again.kwargs == {"x": 1} and again.status is Status.QUEUED
    other = Queue(queue.redis, name="other")
    with pytest.raises(ValueError):
        await other.enqueue(job)


async def test_uniqueness_for_pending_keys_and_replacement_when_finished(queue: Queue) -> None:
    assert await queue.enqueue("f", key="u")
    assert await queue.enqueue("f", key="u") is None  # queued
    [job], _ = await queue.take(1, "w")
    assert await queue.enqueue("f", key="u") is None  # active
    await queue.abort(job, "stop", ttl=0)
    assert await queue.enqueue("f", key="u") is None  # aborting
    await queue.finish(job, Status.ABORTED, error="stop")
    replaced = await queue.enqueue("f", key="u", x=1)  # finished: replaced
    assert replaced is not None and (await queue.job("u")).kwargs == {"x": 1}
    assert await queue.enqueue("f", key="s", scheduled=time.time() + 60)
    assert await queue.enqueue("f", key="s") is None  # scheduled


async def test_non_json_kwargs_fail_at_enqueue_naming_the_problem(queue: Queue) -> None:
    with pytest.raises(TypeError, match=r"kwargs\['when'\].*set"):
        await queue.enqueue("f", when={1, 2})
    with pytest.raises(TypeError, match="kwargs"):
        await queue.enqueue_many([Job("f", kwargs={"x": object()})])
    assert await queue.count("incomplete") == 0


async def test_enqueue_many_is_one_round_trip_and_skips_duplicates(queue: Queue) -> None:
    await queue.enqueue("f", key="dup")
    jobs = [Job("f", key="dup"), Job("f", key="n1"), "g", {"function": "h", "key": "n2", "a": 1}]
    enqueued = await queue.enqueue_many(jobs)
    assert [j.function for j in enqueued] == ["f", "g", "h"]
    assert (await queue.job("n2")).kwargs == {"a": 1}
    assert await queue.count("queued") == 4
    many = await queue.enqueue_many([Job("f") for _ in range(450)])
    assert len(many) == 450 and await queue.count("queued") == 454


async def test_fix7_default_timeout_per_queue(redis_url: str) -> None:
    q = Queue.from_url(redis_url, name="slow", default_timeout=300)
    try:
        assert (await q.enqueue("f")).timeout == 300
        assert (await q.enqueue("f", timeout=5)).timeout == 5
        assert (await q.enqueue(Job("f", timeout=7))).timeout == 7
        assert (await q.enqueue(Job("f"))).timeout == 300
    finally:
        await q.disconnect()
