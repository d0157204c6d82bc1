"""The conditions of a Job resource's status: Complete/Failed as batch/v1 Job has them,
Ready/Reconciling/Stalled for kstatus, with the reason a job failed or waits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from podq.job import UNSUCCESSFUL_TERMINAL_STATUSES, Status
from podq.operator.jobview import JobView
from podq.operator.status_values import rfc3339
from podq.queue.base import WORKER_LOST
from podq.queue.store import QUEUE_CONCURRENCY_HELD, QUEUE_RATE_HELD
from podq.redact import redact

MAX_CONDITION_MESSAGE = 1024

# How workers word a job for a function they do not have (lower-cased substrings).
_UNREGISTERED_MARKERS = (
    "not registered", "unregistered", "unknown function", "no function",
)


def error_summary(error: str | None) -> str:
    """One line for a condition message: the last non-empty line of a traceback."""
    if not error:
        return ""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    return lines[-1][:MAX_CONDITION_MESSAGE] if lines else ""


def failure_reason(view: JobView) -> str:
    """CamelCase reason for a failed or aborted job, from what the engine recorded."""
    if view.status == Status.ABORTED:
        if view.error and "swept" in view.error:
            return "Swept"  # stuck: worker lost, timeout or heartbeat missed
        return "Aborted"
    if (view.error or "").startswith(DEPENDENCY_FAILED):
        return DEPENDENCY_FAILED  # a job it depends on failed (engine: enqueue/write.lua)
    if (view.error or "").startswith(WORKER_LOST):
        return WORKER_LOST  # its worker was lost too many times: disruptions, not attempts
    text = (view.error or "").lower()
    if any(marker in text for marker in _UNREGISTERED_MARKERS):
        return "FunctionNotRegistered"
    if "timeout" in text or "timed out" in text:
        return "Timeout"
    if "heartbeat" in text:
        return "HeartbeatMissed"
    return "JobFailed"


DEPENDENCY_FAILED = "DependencyFailed"
# why a queued job waits, as the engine records it (Job.blocked): reason, message
_BLOCKED = {
    "dependencies": ("WaitingForDependencies", "waiting for the jobs it depends on"),
    "concurrency": ("ConcurrencyLimited", "waiting for its function's concurrency limit"),
    "rate": ("RateLimited", "waiting for its function's rate limit"),
    QUEUE_RATE_HELD: ("RateLimited", "waiting for the queue's rate limit"),
    QUEUE_CONCURRENCY_HELD: ("ConcurrencyLimited", "waiting for the queue's concurrency limit"),
}


Fact = tuple[str, str, str, str]  # a condition's type, status, reason, message


def failed_facts(reason: str, message: str) -> list[Fact]:
    """A job that failed, or that the operator refused: Failed as batch/v1 Job has it,
    and Failed for kstatus (Stalled)."""
    return [
        ("Failed", "True", reason, message),
        ("Ready", "False", reason, message),
        ("Reconciling", "False", reason, message),
        ("Stalled", "True", reason, message),
    ]


def in_progress_facts(reason: str, message: str) -> list[Fact]:
    """A job queued, running or waiting: in progress for kstatus (Reconciling)."""
    return [
        ("Ready", "False", reason, message),
        ("Reconciling", "True", reason, message),
        ("Stalled", "False", reason, message),
    ]


def stalled_facts(reason: str, message: str) -> list[Fact]:
    """An object the operator cannot handle (it retries with backoff) or whose spec it
    refuses: Stalled for kstatus, and not Ready."""
    return [("Ready", "False", reason, message), ("Stalled", "True", reason, message)]


def phase_conditions(view: JobView, now_s: float) -> list[Fact]:
    """The conditions a job in this state has, without timestamps.

    Complete/Failed as batch/v1 Job has them (for `kubectl wait`); Ready, Reconciling and
    Stalled for kstatus: in progress while queued or running, Current when complete,
    Failed (Stalled) when failed or aborted.
    """
    attempt = f"attempt {view.attempts} of {view.retries}"
    status = view.status
    if status == Status.COMPLETE:
        return [
            ("Complete", "True", "Completed", f"{view.function} completed after {attempt}"),
            ("Ready", "True", "Completed", "the job completed"),
            ("Reconciling", "False", "Completed", "the job completed"),
            ("Stalled", "False", "Completed", "the job completed"),
        ]
    if status in UNSUCCESSFUL_TERMINAL_STATUSES:
        reason = failure_reason(view)
        summary = error_summary(view.error) or status.value
        message = f"{view.function} {status.value} after {attempt}: {summary}"
        return failed_facts(reason, message[:MAX_CONDITION_MESSAGE])
    if status == Status.ACTIVE:
        reason, message = "Running", f"{attempt} running on {view.worker or 'a worker'}"
    elif status == Status.ABORTING:
        reason, message = "Aborting", "the job is being aborted"
    elif status == Status.QUEUED and view.scheduled > now_s and view.attempts > 0:
        reason = "RetryScheduled"
        message = f"{attempt} failed; next attempt at {rfc3339(view.scheduled)}"
    elif status == Status.QUEUED and view.scheduled > now_s:
        reason, message = "Scheduled", f"waiting until {rfc3339(view.scheduled)}"
    elif status == Status.QUEUED and view.blocked in _BLOCKED:
        reason, message = _BLOCKED[view.blocked]
    elif status == Status.QUEUED and view.attempts > 0:
        reason, message = "Retrying", f"{attempt} failed; waiting for a worker"
    elif status == Status.QUEUED:
        reason, message = "Queued", "waiting for a worker"
    else:
        reason, message = "Pending", "not yet enqueued"
    return in_progress_facts(reason, message)


def build_conditions(
    facts: Sequence[Fact],
    previous: Sequence[Mapping[str, Any]] | None,
    generation: int,
    now_s: float,
) -> list[dict[str, Any]]:
    """metav1.Condition dicts; lastTransitionTime moves only when status changes."""
    before = {c.get("type"): c for c in previous or ()}
    conditions = []
    for type_, status, reason, message in facts:
        old = before.get(type_)
        changed = old is None or old.get("status") != status
        conditions.append(
            {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": redact(message)[:MAX_CONDITION_MESSAGE],
                "lastTransitionTime": rfc3339(now_s) if changed else old["lastTransitionTime"],
                "observedGeneration": generation,
            }
        )
    return conditions
