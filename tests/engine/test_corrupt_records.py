"""Corrupted or foreign data under a queue's job keys, on a real redis-server: readers
get that record's error in its place, the other records as usual."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from podq import Queue
from podq.job import Status


async def test_jobs_or_errors_isolates_each_unreadable_record(redis_url: str) -> None:
    queue = Queue.from_url(redis_url, name="corrupt")
    try:
        for key in ("good", "json", "type", "field"):
            await queue.enqueue("noop", key=key)
        await queue.redis.hset(queue.job_id("json"), "job", "{not json")
        await queue.redis.delete(queue.job_id("type"))
        await queue.redis.set(queue.job_id("type"), "a string, not a hash")
        await queue.redis.hset(queue.job_id("field"), "attempts", "many")
        good, bad_json, bad_type, bad_field, missing = await queue.jobs_or_errors(
            ["good", "json", "type", "field", "nothing"])
        assert good is not None and good.key == "good"
        assert isinstance(bad_json, ValueError)
        assert "WRONGTYPE" in str(bad_type)
        assert isinstance(bad_field, ValueError)
        assert missing is None
    finally:
        await queue.disconnect()


async def test_write_lua_refuses_a_bad_ttl_before_writing_anything(redis_url: str) -> None:
    """A ttl EXPIRE cannot take (set by a client that skipped enqueue's checks) used to
    fail after the HSET: a half-applied finish. Now nothing is written."""
    queue = Queue.from_url(redis_url, name="corrupt")
    try:
        job = await queue.enqueue("noop", key="ttl")
        assert job is not None
        before = await queue.redis.hgetall(queue.job_id("ttl"))
        job.ttl = 10**16
        with pytest.raises(ResponseError, match="ttl out of range"):
            await queue.finish(job, Status.COMPLETE, result=1)
        assert await queue.redis.hgetall(queue.job_id("ttl")) == before
    finally:
        await queue.disconnect()
