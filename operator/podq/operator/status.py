"""What a Job resource's status should say, computed from the job in Redis.

Pure functions: the status writer (mirror.py) feeds them the engine's job and the
resource's current status and patches only the difference. Its parts: the job as the
status reads it (jobview.py), each field's value (status_values.py), the conditions
(conditions.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from podq.job import TERMINAL_STATUSES, Status
from podq.jobstate import percent
from podq.operator.conditions import (
    MAX_CONDITION_MESSAGE,
    build_conditions,
    failed_facts,
    phase_conditions,
)
from podq.operator.jobview import JobView
from podq.operator.status_values import cap_error, cap_result, human_duration, rfc3339
from podq.redact import redact


def _ms_time(epoch_ms: int) -> str | None:
    return rfc3339(epoch_ms / 1000, millis=True) if epoch_ms else None


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
    return {
        "status": Status.FAILED.value,
        "jobKey": key,
        "queue": queue,
        "attempts": 0,
        "error": redact(message),
        "observedGeneration": generation,
        "conditions": build_conditions(
            failed_facts(reason, message), (previous or {}).get("conditions"), generation, now_s
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
