"""The Job API without a worker: fields, defaults, properties and methods."""

from __future__ import annotations

import dataclasses
import json

import pytest

from podq import CronJob, Job, Queue, Status
from podq.utils import now


def test_fields_and_defaults_match_the_spec() -> None:
    job = Job("f")
    assert job.function == "f"
    assert job.kwargs is None
    assert job.queue is None
    assert isinstance(job.key, str) and len(job.key) == 36
    assert (job.timeout, job.heartbeat, job.retries, job.ttl) == (10, 0, 1, 600)
    assert (job.retry_delay, job.retry_backoff, job.scheduled) == (0.0, False, 0)
    assert (job.progress, job.meta, job.priority) == (0.0, {}, 0)
    assert (job.attempts, job.queued, job.started, job.touched, job.completed) == (0, 0, 0, 0, 0)
    assert job.result is None and job.error is None and job.worker_id is None
    assert job.status is Status.NEW
    names = [f.name for f in dataclasses.fields(Job)]
    for name in ("function", "kwargs", "queue", "key", "timeout", "heartbeat", "retries", "ttl",
                 "retry_delay", "retry_backoff", "scheduled", "progress", "attempts", "completed",
                 "queued", "started", "touched", "result", "error", "status", "priority", "meta",
                 "worker_id"):
        assert name in names


def test_status_values_and_string_status() -> None:
    assert [s.value for s in Status] == [
        "new", "queued", "active", "aborting", "aborted", "failed", "complete",
    ]
    assert Job("f", status="complete").status is Status.COMPLETE
    assert Status.QUEUED == "queued"


def test_to_dict_holds_only_non_default_fields_and_is_json(redis_url: str) -> None:
    queue = Queue.from_url(redis_url, name="q1")
    job = Job("f", kwargs={"a": []}, queue=queue, key="k", retries=3, meta={"m": 1})
    d = job.to_dict()
    assert d == {"function": "f", "kwargs": {"a": []}, "queue": "q1", "key": "k",
                 "retries": 3, "meta": {"m": 1}}
    assert json.loads(json.dumps(d)) == d
    copy = queue.deserialize(queue.serialize(job))
    assert copy is not None and copy.to_dict() == d


def test_info_repr_hash_and_eq() -> None:
    job = Job("f", key="k", kwargs={"x": 1}, status=Status.QUEUED)
    assert job.info() == "Job<function: f, key: k>"
    assert "kwargs: {'x': 1}" in job.info(full=True) and "status: queued" in repr(job)
    assert hash(job) == hash("k")
    assert job == Job("g", key="k") and job != Job("f")
    assert len({job, Job("f", key="k")}) == 1


def test_id_and_key_from_id_round_trip_also_with_separators(redis_url: str) -> None:
    queue = Queue.from_url(redis_url, name="emails")
    for key in ("plain", "a:b:c", "x}:job:y", "with space", "{tagged}"):
        job = Job("f", key=key, queue=queue)
        assert job.id == "podq:{emails}:job:" + key
        assert Job.key_from_id(job.id) == key
        assert queue.job_key_from_id(job.id.encode()) == key
    with pytest.raises(ValueError):
        Job.key_from_id("saq:job:default:x")
    with pytest.raises(TypeError):
        _ = Job("f").id


def test_duration_kinds() -> None:
    job = Job("f", queued=1000, started=1500, completed=4000)
    assert job.duration("process") == 2500
    assert job.duration("start") == 500
    assert job.duration("total") == 3000
    assert Job("f", started=now() - 100).duration("running") >= 100
    assert Job("f").duration("process") is None
    assert Job("f", started=5).duration("total") is None
    with pytest.raises(ValueError):
        job.duration("bogus")  # type: ignore[arg-type]


def test_stuck_by_timeout_and_by_heartbeat() -> None:
    old = now() - 5000
    assert Job("f", status=Status.ACTIVE, timeout=2, started=old).stuck
    assert Job("f", status=Status.ABORTING, timeout=2, started=old).stuck
    assert not Job("f", status=Status.ACTIVE, timeout=10, started=old).stuck
    assert not Job("f", status=Status.QUEUED, timeout=2, started=old).stuck
    assert Job("f", status=Status.ACTIVE, timeout=0, heartbeat=1, touched=old, started=now()).stuck
    assert not Job("f", status=Status.ACTIVE, timeout=0, heartbeat=0, started=old).stuck


def test_retryable_counts_total_attempts() -> None:
    assert not Job("f", attempts=1).retryable  # default retries=1: never retried
    assert Job("f", retries=3, attempts=2).retryable
    assert not Job("f", retries=3, attempts=3).retryable


def test_next_retry_delay_fixed_exponential_and_capped() -> None:
    assert Job("f", retry_delay=2.5).next_retry_delay() == 2.5
    for attempts in range(1, 6):
        job = Job("f", retry_delay=1.0, retry_backoff=True, attempts=attempts)
        delays = [job.next_retry_delay() for _ in range(200)]
        assert all(0 <= d <= 2 ** (attempts - 1) for d in delays)
        assert max(delays) > 0.5 * 2 ** (attempts - 1)  # full jitter spans the range
    capped = Job("f", retry_delay=1.0, retry_backoff=3, attempts=10)
    assert all(0 <= capped.next_retry_delay() <= 3 for _ in range(200))


def test_replace_copies_every_field() -> None:
    a, b = Job("f"), Job("g", key="other", attempts=3, result={"r": 1}, status=Status.COMPLETE)
    a.replace(b)
    assert a.to_dict() == b.to_dict()


def test_cronjob_fields() -> None:
    async def tick(ctx: dict) -> None: ...

    cron = CronJob(tick, cron="* * * * * */5")
    assert cron.unique is True and cron.timeout is None and cron.kwargs is None
    assert cron.function_name == "test_cronjob_fields.<locals>.tick"
    assert CronJob("named", cron="* * * * *", unique=False, retries=2).function_name == "named"


def test_retry_backoff_is_exponential_with_full_jitter_capped() -> None:
    """retry_backoff=True: a delay drawn from [0, retry_delay * 2**(attempts-1)] (full
    jitter, as SAQ's); a number caps it; False keeps retry_delay."""
    job = Job("f", retry_delay=2, retry_backoff=True)
    for attempts, top in ((1, 2), (2, 4), (3, 8), (6, 64)):
        job.attempts = attempts
        delays = [job.next_retry_delay() for _ in range(200)]
        assert all(0 <= d <= top for d in delays), (attempts, max(delays))
        assert max(delays) > top / 2 and len(set(delays)) > 100  # drawn, not fixed
    capped = Job("f", retry_delay=2, retry_backoff=5.0, attempts=10)
    assert all(0 <= capped.next_retry_delay() <= 5 for _ in range(200))
    assert Job("f", retry_delay=2, attempts=3).next_retry_delay() == 2
