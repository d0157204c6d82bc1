"""Worker logging: every line written while a job runs names the job, as text or as
JSON lines shaped like the operator's (`podq worker --log-format json`)."""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime

# (key, function) of the job the current asyncio task runs; the worker sets it in each
# job's own task, so concurrent jobs never see each other's
CURRENT_JOB: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "podq_current_job", default=None)

FORMATS = ("plain", "json")
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(job_prefix)s%(message)s"


def _severity(level: int) -> str:
    # the operator's JSON lines (kopf) use these words
    for limit, word in ((logging.DEBUG, "debug"), (logging.INFO, "info"),
                        (logging.WARNING, "warn"), (logging.ERROR, "error")):
        if level <= limit:
            return word
    return "fatal"


class JobFilter(logging.Filter):
    """Adds the running job to each record: `job_key`, `job_function`, `job_prefix`."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = CURRENT_JOB.get()
        record.job_key, record.job_function = job if job else (None, None)
        record.job_prefix = f"[job {job[0]}] " if job else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp, severity, logger, message, job, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "severity": _severity(record.levelno),
            "logger": record.name,
            "message": record.getMessage(),
        }
        key = getattr(record, "job_key", None)
        if key is not None:
            line["job"] = {"key": key, "function": getattr(record, "job_function", None)}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: int, log_format: str = "plain") -> None:
    """Log to stderr in `log_format` (plain or json), every line naming its job."""
    handler = logging.StreamHandler()
    handler.addFilter(JobFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(PLAIN))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
