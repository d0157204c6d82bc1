"""What a Job resource's status should say, computed from the job in Redis.

Pure functions: the status writer (mirror.py) feeds them the engine's job and the
resource's current status and patches only the difference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from podq.job import TERMINAL_STATUSES, UNSUCCESSFUL_TERMINAL_STATUSES, Status
from podq.queue.base import WORKER_LOST
from podq.redact import redact

MAX_RESULT_BYTES = 16 * 1024
MAX_RESULT_DEPTH = 32  # deeper results are shown as (the start of) their JSON text
_LATEST_S = 253402300799  # 9999-12-31T23:59:59Z: the last time RFC 3339 can write
MAX_ERROR_BYTES = 8 * 1024
MAX_CONDITION_MESSAGE = 1024

# How workers word a job for a function they do not have (lower-cased substrings).
_UNREGISTERED_MARKERS = (
    "not registered", "unregistered", "unknown function", "no function",
)


@dataclass(frozen=True)
class JobView:
    """The fields of an engine job that the resource status shows."""

    status: Status  # a status text is taken as its Status
    attempts: int = 0
    retries: int = 1
    progress: float = 0.0
    queued: int = 0  # epoch ms, as the engine stores them
    started: int = 0
    completed: int = 0
    scheduled: int = 0  # epoch s
    worker: str | None = None
    result: Any = None
    error: str | None = None
    function: str = ""
    disruptions: int = 0  # runs its worker's loss cut short (not attempts)
    last_disruption: str | None = None
    blocked: str | None = None  # why a queued job waits: dependencies, concurrency, rate

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))


def _number(value: Any, default: float = 0) -> float:
    """A finite number from whatever the job record holds (0 for garbage)."""
    try:
        number = float(value or default)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def view_of(job: Any) -> JobView:
    """A JobView from a podq.Job (or anything with the same attribute names); values
    that are not what they should be (a corrupted record) read as their defaults."""
    status = getattr(job, "status", "new")
    return JobView(
        status=getattr(status, "value", status) or Status.NEW,
        attempts=int(_number(getattr(job, "attempts", 0))),
        retries=int(_number(getattr(job, "retries", 1), 1)) or 1,
        progress=_number(getattr(job, "progress", 0.0)),
        queued=int(_number(getattr(job, "queued", 0))),
        started=int(_number(getattr(job, "started", 0))),
        completed=int(_number(getattr(job, "completed", 0))),
        scheduled=int(_number(getattr(job, "scheduled", 0))),
        worker=_text(getattr(job, "worker_id", None) or getattr(job, "worker", None)),
        result=getattr(job, "result", None),
        error=_text(getattr(job, "error", None)),
        function=str(getattr(job, "function", "") or ""),
        disruptions=int(_number(getattr(job, "disruptions", 0))),
        last_disruption=_text(getattr(job, "last_disruption", None)),
        blocked=_text(getattr(job, "blocked", None)),
    )


def rfc3339(epoch_s: float, *, millis: bool = False) -> str:
    """RFC 3339 in UTC; times past 9999 (a huge retry delay, say) print as its end."""
    if not math.isfinite(epoch_s):
        epoch_s = _LATEST_S if epoch_s > 0 else 0
    moment = datetime.fromtimestamp(min(max(epoch_s, 0), _LATEST_S), UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms_time(epoch_ms: int) -> str | None:
    return rfc3339(epoch_ms / 1000, millis=True) if epoch_ms else None


def percent(progress: float) -> str:
    """Progress as kubectl shows it: "42%", rounded down (99.9% is not yet 100%)."""
    return f"{int(max(0.0, min(progress, 1.0)) * 100 + 1e-9)}%"


def human_duration(seconds: float) -> str:
    """A duration as kubectl prints one (its HumanDuration): 45s, 3m20s, 17m, 5h3m, 3d4h."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    h = s // 3600
    if h < 3:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 730:
        return f"{d}d"
    return f"{d // 365}y{d % 365}d" if d < 8 * 365 else f"{d // 365}y"


def retried_attempts(status: str | None, attempts: int) -> int:
    """How many attempts of a job in this state failed and were retried: every attempt
    but the one running or final, and the last one too while the job waits to retry. The
    status writer posts one Retrying Event per increase, so a retry is reported even when
    several changes of the job were coalesced into one status write. A disrupted run
    gives its attempt back (the count falls by one as the job is queued again), so it
    never counts as a retry."""
    if attempts <= 0 or status in (None, Status.NEW):
        return 0
    return attempts if status == Status.QUEUED else attempts - 1


def json_safe(value: Any, max_depth: int = MAX_RESULT_DEPTH) -> tuple[Any, bool]:
    """value as the API server takes it, and whether it changed: NaN and infinities
    (not JSON) become the strings "NaN", "Infinity", "-Infinity"; anything else that
    is not JSON becomes its repr; values nested deeper than max_depth become None."""
    changed = False

    def walk(item: Any, depth: int) -> Any:
        nonlocal changed
        if isinstance(item, float) and not math.isfinite(item):
            changed = True
            return "NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity")
        if item is None or isinstance(item, str | int | float | bool):
            return item
        if depth >= max_depth:
            changed = True
            return None
        if isinstance(item, dict):
            return {str(k): walk(v, depth + 1) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v, depth + 1) for v in item]
        changed = True
        return repr(item)

    return walk(value, 0), changed


def cap_result(result: Any) -> tuple[Any, bool]:
    """The result as stored in status, and whether it was cut.

    A result too large (or nested too deeply) for the resource becomes a string
    holding the start of its JSON text followed by a marker; the full value stays in
    Redis for the job's ttl. NaN and infinities become strings (see json_safe).
    """
    safe, _ = json_safe(result, MAX_RESULT_DEPTH * 4)
    deep = json_safe(safe, MAX_RESULT_DEPTH)[0] != safe
    text = json.dumps(safe, separators=(",", ":"), allow_nan=False)
    if len(text.encode()) <= MAX_RESULT_BYTES and not deep:
        return safe, False
    size = len(text.encode())
    head = text.encode()[: MAX_RESULT_BYTES - 200].decode(errors="ignore")
    marker = (f"... [truncated: result is {size} bytes as JSON" +
              (f", nested more than {MAX_RESULT_DEPTH} levels" if deep else "") +
              "; the full value is in Redis]")
    return head + marker, True


def cap_error(error: str | None) -> tuple[str | None, bool]:
    """The error as stored in status, and whether it was cut (the end is kept:
    the last lines of a traceback name the exception)."""
    if error is None:
        return None, False
    error = redact(str(error))
    raw = error.encode()
    if len(raw) <= MAX_ERROR_BYTES:
        return error, False
    tail = raw[-(MAX_ERROR_BYTES - 100) :].decode(errors="ignore")
    return f"[truncated: {len(raw)} bytes in total, the full text is in Redis] ...{tail}", True


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
}


def phase_conditions(view: JobView, now_s: float) -> list[tuple[str, str, str, str]]:
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
        message = message[:MAX_CONDITION_MESSAGE]
        return [
            ("Failed", "True", reason, message),
            ("Ready", "False", reason, message),
            ("Reconciling", "False", reason, message),
            ("Stalled", "True", reason, message),
        ]
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
    return [
        ("Ready", "False", reason, message),
        ("Reconciling", "True", reason, message),
        ("Stalled", "False", reason, message),
    ]


def build_conditions(
    facts: Sequence[tuple[str, str, str, str]],
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


def job_status(
    view: JobView,
    *,
    key: str,
    queue: str,
    generation: int,
    previous: Mapping[str, Any] | None,
    now_s: float,
) -> dict[str, Any]:
    """The full status a Job resource should have for this job."""
    complete = view.status == Status.COMPLETE
    # a corrupted record or a NaN from the function: status takes only finite numbers
    progress = min(max(view.progress, 0.0), 1.0) if math.isfinite(view.progress) else 0.0
    result, result_cut = cap_result(view.result) if complete else (None, False)
    error, error_cut = cap_error(view.error)
    retry_pending = view.status == Status.QUEUED and view.attempts > 0 and view.scheduled > now_s
    status: dict[str, Any] = {
        "status": view.status.value,
        "jobKey": key,
        "queue": queue,
        "attempts": view.attempts,
        "disruptions": view.disruptions or None,
        "lastDisruption": redact(str(view.last_disruption))[:MAX_CONDITION_MESSAGE]
        if view.last_disruption else None,
        "progress": round(progress, 4),
        "progressPercent": "100%" if complete else percent(progress),
        "duration": human_duration((view.completed - view.queued) / 1000)
        if view.status in TERMINAL_STATUSES and view.completed and view.queued else None,
        "queuedTime": _ms_time(view.queued),
        "startedTime": _ms_time(view.started),
        "completedTime": _ms_time(view.completed),
        "scheduledTime": rfc3339(view.scheduled) if view.scheduled else None,
        "nextRetryTime": rfc3339(view.scheduled) if retry_pending else None,
        "worker": redact(str(view.worker))[:253] if view.worker else None,
        "result": result,
        "resultTruncated": result_cut or None,
        "error": error,
        "errorTruncated": error_cut or None,
        "observedGeneration": generation,
    }
    previous_conditions = (previous or {}).get("conditions")
    status["conditions"] = build_conditions(
        phase_conditions(view, now_s), previous_conditions, generation, now_s
    )
    return status


def refused_status(
    reason: str, message: str, *, key: str, queue: str, generation: int,
    previous: Mapping[str, Any] | None, now_s: float,
) -> dict[str, Any]:
    """Status of a Job the operator refused to enqueue (e.g. kwargs too large)."""
    facts = [
        ("Failed", "True", reason, message),
        ("Ready", "False", reason, message),
        ("Reconciling", "False", reason, message),
        ("Stalled", "True", reason, message),
    ]
    return {
        "status": Status.FAILED.value,
        "jobKey": key,
        "queue": queue,
        "attempts": 0,
        "error": redact(message),
        "observedGeneration": generation,
        "conditions": build_conditions(
            facts, (previous or {}).get("conditions"), generation, now_s
        ),
    }


def status_patch(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge-patch turning `current` into `desired` at the top level of status.

    A field now None is sent as null (merge-patch deletes it) only if it is present.
    Empty when nothing changed, so the writer can skip the API call.
    """
    current = current or {}
    patch: dict[str, Any] = {}
    for field, value in desired.items():
        if value is None:
            if current.get(field) is not None:
                patch[field] = None
        elif current.get(field) != value:
            patch[field] = value
    return patch


def is_finished(status: Mapping[str, Any] | None) -> bool:
    return bool(status) and status.get("status") in TERMINAL_STATUSES
