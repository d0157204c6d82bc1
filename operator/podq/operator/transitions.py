"""The Events a Job resource gets as its job moves on: one per transition between two
status writes of the status writer (mirror.py), and one for what its enqueue did when
that is news (re-enqueued after Redis lost it, refused)."""

from __future__ import annotations

import logging
from typing import Any

from podq.job import TERMINAL_STATUSES, Status
from podq.operator.conditions import error_summary
from podq.operator.jobs import Outcome
from podq.operator.kube import EventRecorder
from podq.operator.registry import JobResource
from podq.operator.status import retried_attempts

log = logging.getLogger("podq.operator")

# what a status write changed from: status, attempts, disruptions
Before = tuple[str | None, int, int | None]


def before_of(status: dict[str, Any]) -> Before:
    """The parts of a resource's status its transition Events are counted from."""
    return status.get("status"), status.get("attempts") or 0, status.get("disruptions")


async def post_transition(
    events: EventRecorder, resource: JobResource, before: Before,
    desired: dict[str, Any], function: str | None,
) -> None:
    """One Event per transition between the status written before and this one. The
    writes are coalesced, so several transitions may lie between two: each retry in
    between still gets its Retrying Event (counted from the attempts), and the end
    its Completed or Failed one."""
    status_before, attempts_before, previous_disruptions = before
    disruptions = desired.get("disruptions") or 0
    if disruptions > (previous_disruptions or 0):
        # not the job's failure: the attempt is not used up (see docs/reliability.md)
        cause = desired.get("lastDisruption") or "worker lost"
        await events.post(
            resource.ref, "Normal", "Disrupted",
            f"run cut short without the function's doing ({cause}); not counted as an"
            f" attempt (disruption {disruptions})")
    after = desired.get("status")
    attempts = desired.get("attempts") or 0
    retried_before = retried_attempts(status_before, attempts_before)
    retried_now = retried_attempts(after, attempts)
    for attempt in range(retried_before + 1, retried_now + 1):
        # the error of an earlier attempt is gone by now: Redis keeps the latest
        latest = attempt == retried_now and after == Status.QUEUED
        summary = error_summary(desired.get("error")) if latest else ""
        await events.post(
            resource.ref, "Normal", "Retrying",
            f"attempt {attempt} failed" + (f": {summary}" if summary else "")
            + "; retrying")
    if after == status_before:
        return
    failed = next((c for c in desired["conditions"] if c["type"] == "Failed"), None)
    if after == Status.COMPLETE:
        await events.post(resource.ref, "Normal", "Completed",
                          f"{function} completed after {attempts} attempt(s)")
    elif after in TERMINAL_STATUSES and failed is not None:
        await events.post(resource.ref, "Warning", failed["reason"], failed["message"])


async def refuse(events: EventRecorder, resource: JobResource,
                 refusal: tuple[str, str]) -> None:
    """Refuse the resource's job: the refusal (reason, message) is kept on the resource,
    whose status then says Failed, and a Warning Event says it."""
    resource.refusal = refusal
    await events.post(resource.ref, "Warning", *refusal)


async def post_enqueue_outcome(
    events: EventRecorder, resource: JobResource, outcome: Outcome,
) -> str:
    """The Event of one enqueue's outcome, if it is news; returns what to count it as
    (refused, recovered, or the outcome's action). A refusal is kept on the resource."""
    log.debug("%s/%s: %s %s %s", resource.namespace, resource.name, outcome.action,
              outcome.reason, outcome.message)
    if outcome.action == "refused":
        await refuse(events, resource, (outcome.reason, outcome.message))
        return "refused"
    if outcome.action == "enqueued" and resource.status.get("jobKey"):
        # it had a status, so Redis lost it: restarted empty, flushed, failed
        # over (the claim went too), or the finished job's record expired before
        # its outcome was read (the claim stayed: it is at least once then)
        attempts = resource.status.get("attempts") or 0
        why = ("job was missing from Redis under an old claim (its record expired"
               " before its outcome was read, or an enqueue was cut short); it may"
               " run again" if outcome.reason else "job was missing from Redis")
        log.info("re-enqueued lost job %s (attempts so far: %s; %s)", resource.key,
                 attempts, why)
        await events.post(resource.ref, "Normal", "Recovered",
                          f"{why}; enqueued again after {attempts} attempt(s)")
        return "recovered"
    return outcome.action
