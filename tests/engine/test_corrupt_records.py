"""Corrupted or foreign data under a queue's job keys, on a real redis-server: readers
get that record's error in its place, the other records as usual."""

from __future__ import annotations

from podq import Queue


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
