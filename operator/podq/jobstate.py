"""What `podq status` shows of a job: its fields as a dict (ISO times), and as text."""

from __future__ import annotations

import json
import typing as t
from datetime import UTC, datetime

from podq.job import Job, Status


def iso_utc(epoch_ms: float) -> str | None:
    """The one time format of the CLI's output: ISO 8601 in UTC with milliseconds and a
    Z, e.g. 2026-01-02T03:04:05.678Z (None for 0, the engine's "never")."""
    if not epoch_ms:
        return None
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso_from_text(value: str | None) -> str | None:
    """An RFC 3339 time (a resource's status, with or without fractions) in iso_utc's
    format."""
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return iso_utc(moment.timestamp() * 1000)


def percent(progress: float) -> str:
    """Progress as kubectl shows it: "42%", rounded down (99.9% is not yet 100%)."""
    return f"{int(max(0.0, min(progress, 1.0)) * 100 + 1e-9)}%"


# Job's epoch milliseconds
TIME_FIELDS_MS = ("queued", "ready_since", "started", "completed", "touched")


def job_json(job: Job) -> dict[str, t.Any]:
    """The job as `podq enqueue/abort/retry --json` print it: its id and non-default
    fields, the times in iso_utc's format like every other output of the CLI."""
    fields: dict[str, t.Any] = {"id": job.id, **job.to_dict()}
    for name in TIME_FIELDS_MS:
        if name in fields:
            fields[name] = iso_utc(fields[name])
    if "scheduled" in fields:  # epoch seconds
        fields["scheduled"] = iso_utc(fields["scheduled"] * 1000)
    return fields


def job_state(job: Job) -> dict[str, t.Any]:
    """The fields `podq status` shows, from a job in Redis."""
    return {
        "source": "redis",
        "id": job.id,
        "queue": job.get_queue().name,
        "key": job.key,
        "function": job.function,
        "status": Status(job.status).value,
        "attempts": job.attempts,
        "retries": job.retries,
        "progress": job.progress,
        "queued": iso_utc(job.queued),
        "started": iso_utc(job.started),
        "completed": iso_utc(job.completed),
        "scheduled": iso_utc(int(job.scheduled * 1000)),
        "worker": job.worker_id,
        "result": job.result,
        "error": job.error,
    }


def format_state(state: dict[str, t.Any]) -> str:
    """The state as text: a title line, then one `field: value` line each."""
    title = state.get("resource") or state.get("id")
    where = f" (namespace {state['namespace']})" if state.get("namespace") else ""
    out = [f"{title}{where}"]
    width = 10
    for field in ("status", "function", "queue", "key", "attempts", "progress", "queued",
                  "scheduled", "started", "completed", "worker"):
        value = state.get(field)
        if field == "attempts" and state.get("retries"):
            value = f"{value} of {state['retries']}"
        if field == "progress" and value is not None:  # as kubectl's PROGRESS column
            value = percent(float(value))
        if value is not None:
            out.append(f"  {field + ':':{width}} {value}")
    if state.get("result") is not None:
        out.append(f"  {'result:':{width}} {json.dumps(state['result'], default=str)}")
    if state.get("error"):
        lines = str(state["error"]).rstrip().splitlines()
        out.append(f"  {'error:':{width}} {lines[0] if lines else ''}")
        for line in lines[1:]:
            out.append(f"  {'':{width}} {line}")
    return "\n".join(out)
