"""What the operator does to the queue for a Job resource: enqueue, recover, abort."""

from __future__ import annotations

from dataclasses import dataclass

from podq import Job, Queue
from podq.operator.jobspec import InvalidJobSpec, engine_fields
from podq.operator.registry import JobResource
from podq.operator.status import TERMINAL

ABORTED_BY_DELETE = "aborted: the Job resource was deleted"


@dataclass(frozen=True)
class Outcome:
    """What a domain function did, for logs, Events and tests."""

    action: str  # enqueued | exists | refused | aborted | finished | missing
    reason: str = ""
    message: str = ""


def _state(job: Job) -> str:
    return getattr(job.status, "value", job.status)


async def enqueue_job(queue: Queue, resource: JobResource, attempts: int = 0) -> Outcome:
    """Enqueue the job of a Job resource unless it is already in Redis.

    Idempotent: the key is derived from the resource, so a repeated call (restart,
    re-delivered event, second operator) finds the job, or the queue's uniqueness
    refuses it. `attempts` carries the count over when a lost job is re-created.
    """
    try:
        fields = engine_fields(resource.spec, resource.key)
    except InvalidJobSpec as invalid:
        return Outcome("refused", invalid.reason, invalid.message)
    existing = await queue.job(resource.key)
    # A finished job under a user-chosen key is an earlier run: SAQ replaces those.
    replaceable = (
        existing is not None and _state(existing) in TERMINAL
        and bool(resource.spec.get("key")) and not resource.status
    )
    if existing is not None and not replaceable:
        return Outcome("exists", message=f"job {resource.key} is {_state(existing)}")
    job = Job(**fields, attempts=attempts)
    if await queue.enqueue(job) is None:
        return Outcome("exists", message=f"job {resource.key} is already queued or running")
    return Outcome("enqueued", message=f"enqueued {job.function} as {resource.key} on {queue.name}")


async def abort_job(queue: Queue, key: str, error: str = ABORTED_BY_DELETE) -> Outcome:
    """Abort the job if it has not finished; the worker cancels a running one."""
    job = await queue.job(key)
    if job is None:
        return Outcome("missing")
    if _state(job) in TERMINAL:
        return Outcome("finished", message=f"job {key} already {_state(job)}")
    state = _state(job)
    await queue.abort(job, error)
    return Outcome("aborted", message=f"aborted job {key}, which was {state}")
