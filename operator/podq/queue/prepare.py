"""Preparing a job for enqueue: enqueue's arguments made into a Job of its queue, its
fields checked against what Redis can hold, its dependencies as keys of its queue.

Queue.enqueue and enqueue_many (podq.queue.base, podq.queue.redis_enqueue) prepare
every job here before it is stored.
"""

from __future__ import annotations

import typing as t

from podq.job import JOB_FIELDS, Job, Status
from podq.queue import keys as redis_keys
from podq.utils import now

if t.TYPE_CHECKING:
    from podq.queue.base import Queue

PRIORITY_LIMIT = 8000
# What Redis (EXPIRE, sorted-set scores) and the clock can hold: a job outside these is
# refused at enqueue, naming the field, instead of failing half-way in a script later.
LIMITS = {
    "timeout": (0, 10 * 365 * 24 * 3600),
    "heartbeat": (0, 10 * 365 * 24 * 3600),
    "ttl": (-10 * 365 * 24 * 3600, 10 * 365 * 24 * 3600),
    "retries": (0, 1_000_000),
    "retry_delay": (0, 30 * 24 * 3600),
    "scheduled": (0, 32503680000 - 1),  # epoch seconds, up to the end of 2999
}


def check_limits(job: Job) -> None:
    """ValueError naming the first field of job out of its LIMITS (or not a number)."""
    for name, (low, high) in LIMITS.items():
        value = getattr(job, name)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not low <= value <= high:  # NaN compares False: refused too
            raise ValueError(f"{name} must be a number from {low} to {high}, not {value!r}")
    backoff = job.retry_backoff
    if not isinstance(backoff, bool) and (
            not isinstance(backoff, int | float) or not 0 <= backoff <= LIMITS["retry_delay"][1]):
        raise ValueError(f"retry_backoff must be true, false or seconds from 0 to"
                         f" {LIMITS['retry_delay'][1]}, not {backoff!r}")


def prepare(queue: Queue, job_or_func: str | Job, kwargs: dict[str, t.Any]) -> Job:
    """The job to enqueue on queue: a new Job of the function named job_or_func, or the
    Job given; job fields by name from kwargs, the rest into its kwargs. Checked, its
    dependencies as keys, queued now (not stored yet)."""
    job_kwargs: dict[str, t.Any] = {}
    extra: dict[str, t.Any] = {}
    for k, v in kwargs.items():
        if k in JOB_FIELDS:
            job_kwargs[k] = v
        elif k == "group_key":  # a field of SAQ's Job, never the function's argument
            raise TypeError("group_key is not supported: SAQ enforces it on Postgres "
                            "only, and podq is Redis-only (docs/saq-compatibility.md)")
        else:
            extra[k] = v
    if extra:
        job_kwargs["kwargs"] = {**(job_kwargs.get("kwargs") or {}), **extra}
    if isinstance(job_or_func, str):
        job = Job(function=job_or_func, **job_kwargs)
    else:
        job = job_or_func
        for k, v in job_kwargs.items():
            setattr(job, k, v)
            job.choose(k)
    if job.queue and job.queue.name != queue.name:
        raise ValueError(f"Job {job} registered to a different queue")
    if not job.chose("timeout") and queue.default_timeout is not None:
        # the queue's default is a choice: a worker's default does not override it
        job.timeout = queue.default_timeout
        job.choose("timeout")
    if not isinstance(job.priority, int) or abs(job.priority) > PRIORITY_LIMIT:
        raise ValueError(
            f"priority must be an integer between -{PRIORITY_LIMIT} and {PRIORITY_LIMIT}"
        )
    check_limits(job)
    if job.depends_on:
        job.depends_on = _dependency_keys(job.depends_on, queue.name)
    job.queue = queue
    job.queued = now()
    job.status = Status.QUEUED
    return job


def _dependency_keys(depends_on: t.Any, queue: str) -> list[str]:
    """depends_on as job keys (Jobs, keys or job ids of this queue), each once, in order.

    A job of another queue is refused: each queue's keys live in one Redis Cluster slot,
    and the scripts that settle a dependent read and write both jobs in one atomic step,
    which Redis allows only within a slot (docs/dependencies.md)."""
    if isinstance(depends_on, str | Job):
        depends_on = [depends_on]
    keys: list[str] = []
    for item in depends_on:
        key, other = item, None
        if isinstance(item, Job):
            key, other = item.key, item.queue.name if item.queue else None
        if not isinstance(key, str) or not key or "\n" in key:
            raise ValueError(f"depends_on takes job keys or Jobs, got {item!r}")
        if redis_keys.is_job_id(key):  # a job id, podq:{QUEUE}:job:KEY
            key, other = redis_keys.key_from_id(key), redis_keys.queue_from_id(key)
        if other and other != queue:
            raise ValueError(
                f"depends_on: job {key!r} is of queue {other!r}, not {queue!r}: a job may "
                "depend only on jobs of its own queue")
        if key not in keys:
            keys.append(key)
    return keys
