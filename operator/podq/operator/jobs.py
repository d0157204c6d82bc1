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


async def enqueue_jobs(
    queue: Queue, resources: list[JobResource]
) -> dict[str, Outcome]:
    """Enqueue the jobs of resources whose job is not in Redis, in one pipelined round
    trip; returns an Outcome per resource uid.

    Safe to repeat: the queue refuses a key that is queued or running, so a second
    operator or a repeated pass cannot start a job twice. A resource that already has
    a status (Redis lost the job) keeps its attempt count.
    """
    outcomes: dict[str, Outcome] = {}
    jobs: list[tuple[JobResource, Job]] = []
    for resource in resources:
        try:
            fields = engine_fields(resource.spec, resource.key)
        except InvalidJobSpec as invalid:
            outcomes[resource.uid] = Outcome("refused", invalid.reason, invalid.message)
            continue
        attempts = int(resource.status.get("attempts") or 0)
        jobs.append((resource, Job(**fields, attempts=attempts)))
    enqueued = {job.key for job in await queue.enqueue_many([job for _, job in jobs])}
    for resource, job in jobs:
        if job.key in enqueued:
            outcomes[resource.uid] = Outcome(
                "enqueued", message=f"enqueued {job.function} as {job.key} on {queue.name}")
        else:
            outcomes[resource.uid] = Outcome("exists", message=f"job {job.key} is in the queue")
    return outcomes


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
