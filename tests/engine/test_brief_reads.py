"""Brief reads (jobs_or_errors(brief=True): the operator's status reads) on a real
redis-server: the fields a status shows, exactly as a whole read gives them, and none of
the job's JSON (kwargs, meta), so what such a read costs does not grow with the jobs'
arguments. Unreadable records are the error in their place, as in a whole read."""

from __future__ import annotations

import json

import pytest

from podq import Queue
from podq.job import BRIEF_FIELDS, Status
from podq.queue.store import APART, BRIEF_READ, JSON_SIZE

BIG = {"v": [[i % 10] for i in range(10_000)]}  # small values: large once parsed
META = {"team": "a"}


async def _jobs(queue: Queue) -> list[str]:
    """A queued job, a running one with progress, and a complete one with a result."""
    for key in ("running", "done"):
        await queue.enqueue("f", key=key, kwargs=BIG, meta=META, retries=2)
    running = await queue.take_one(1, "w1")
    done = await queue.take_one(1, "w1")
    assert running is not None and done is not None
    assert (running.key, done.key) == ("running", "done")
    await queue.enqueue("f", key="queued", kwargs=BIG, meta=META, retries=3)
    await queue.update(running, progress=0.25)
    assert await queue.finish(done, Status.COMPLETE, result={"out": [1, 2]}, expect=True)
    return ["queued", running.key, done.key]


async def test_a_brief_read_gives_the_status_fields_and_no_kwargs_or_meta(queue: Queue) -> None:
    keys = await _jobs(queue)
    brief = await queue.jobs_or_errors([*keys, "nothing"], brief=True)
    whole = await queue.jobs(keys)
    assert brief[-1] is None  # gone: None, as a whole read says
    for short, full in zip(brief, whole, strict=False):
        assert short is not None and full is not None
        assert full.kwargs == BIG and full.meta == META
        assert short.kwargs is None and short.meta == {}
        assert short.key == full.key
        for field in BRIEF_FIELDS:
            assert getattr(short, field.name) == getattr(full, field.name), field.name
    queued, running, done, _ = brief
    assert (queued.status, queued.retries, running.status, running.progress) == (
        Status.QUEUED, 3, Status.ACTIVE, 0.25)
    assert (done.status, done.result, done.progress) == (Status.COMPLETE, {"out": [1, 2]}, 1.0)
    assert queued.queued > 0 and running.started > 0 and done.completed > 0
    # the whole job is never written back from a brief read (its kwargs would be lost)
    with pytest.raises(TypeError, match="read briefly"):
        await queue.finish(queued, Status.ABORTED)
    with pytest.raises(TypeError, match="read briefly"):
        await queue.update(queued, progress=0.5)
    assert (await queue.job("queued")).kwargs == BIG  # type: ignore[union-attr]


async def test_the_json_fields_are_kept_out_of_the_job_s_json(queue: Queue) -> None:
    """The result is its own field, which a brief read gets; the job's JSON does not
    hold it a second time."""
    keys = await _jobs(queue)
    stored = await queue.redis.hgetall(queue.job_id(keys[2]))
    assert APART == ("result",)
    assert json.loads(stored[b"result"]) == {"out": [1, 2]}
    assert "result" not in json.loads(stored[b"job"])
    assert int(stored[JSON_SIZE.encode()]) == len(stored[b"job"])
    assert "job" not in BRIEF_READ and "kwargs" not in BRIEF_READ and "meta" not in BRIEF_READ


async def test_a_brief_read_gives_each_unreadable_record_as_its_error(queue: Queue) -> None:
    for key in ("good", "json", "type", "field", "status", "foreign"):
        await queue.enqueue("noop", key=key, kwargs=BIG)
    await queue.redis.hset(queue.job_id("json"), "job", "{not json")
    await queue.redis.delete(queue.job_id("type"))
    await queue.redis.set(queue.job_id("type"), "a string, not a hash")
    await queue.redis.hset(queue.job_id("field"), "attempts", "many")
    await queue.redis.hset(queue.job_id("status"), "status", "sideways")
    job = json.loads(await queue.redis.hget(queue.job_id("foreign"), "job"))
    await queue.redis.hset(queue.job_id("foreign"), "job", json.dumps({**job, "rogue": True}))
    good, bad_json, bad_type, bad_field, bad_status, foreign, missing = \
        await queue.jobs_or_errors(
            ["good", "json", "type", "field", "status", "foreign", "nothing"], brief=True)
    assert good is not None and good.key == "good" and good.kwargs is None
    assert isinstance(bad_json, ValueError) and "not the one podq wrote" in str(bad_json)
    assert "WRONGTYPE" in str(bad_type)
    assert isinstance(bad_field, ValueError)
    assert isinstance(bad_status, ValueError)
    assert isinstance(foreign, ValueError) and "not the one podq wrote" in str(foreign)
    assert missing is None


async def test_a_record_an_older_podq_wrote_is_read_whole(queue: Queue) -> None:
    """Written before retries, queued, progress and result had fields of their own (and
    JSON_SIZE): only its JSON has them."""
    await queue.enqueue("f", key="old", kwargs={"a": 1}, retries=4)
    await queue.redis.hdel(queue.job_id("old"), JSON_SIZE, "retries", "queued", "progress")
    (old,) = await queue.jobs_or_errors(["old"], brief=True)
    assert old is not None and not isinstance(old, Exception)
    assert old.retries == 4 and old.queued > 0 and old.kwargs == {"a": 1}


async def test_progress_set_on_a_read_job_is_stored_by_update(queue: Queue) -> None:
    await queue.enqueue("f", key="p")
    job = await queue.take_one(1, "w1")
    assert job is not None
    job.progress = 0.5
    await job.update()
    (brief,) = await queue.jobs(["p"], brief=True)
    assert brief is not None and brief.progress == 0.5
