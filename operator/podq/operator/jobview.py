"""The fields of an engine job that a Job resource's status shows (JobView), read from
a podq.Job; a corrupted record's values read as their defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from podq.job import Status


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
