"""The values of a Job resource's status fields as the API server takes them and kubectl
shows them: times in RFC 3339, durations as kubectl prints them (progress as a
percentage: podq.jobstate.percent, shared with podq status), the result and error
bounded (the full values stay in Redis)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from podq.redact import redact

MAX_RESULT_BYTES = 16 * 1024
MAX_RESULT_DEPTH = 32  # deeper results are shown as (the start of) their JSON text
_LATEST_S = 253402300799  # 9999-12-31T23:59:59Z: the last time RFC 3339 can write
MAX_ERROR_BYTES = 8 * 1024


def rfc3339(epoch_s: float, *, millis: bool = False) -> str:
    """RFC 3339 in UTC; times past 9999 (a huge retry delay, say) print as its end."""
    if not math.isfinite(epoch_s):
        epoch_s = _LATEST_S if epoch_s > 0 else 0
    moment = datetime.fromtimestamp(min(max(epoch_s, 0), _LATEST_S), UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


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
