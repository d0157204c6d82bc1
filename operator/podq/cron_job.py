"""CronJob: a job repeated on a cron expression (SAQ's); re-exported by podq.job.

Which Job fields it may set is declared with the Job fields (podq.job.CRON_FIELDS).
"""

from __future__ import annotations

import dataclasses
import typing as t


@dataclasses.dataclass
class CronJob:
    """Repeated job with a cron expression (croniter).

    A 6-field expression has seconds as its **last** field. unique=True keeps at most
    one pending job for this cron job; unique=False enqueues exactly one job per slot.
    The remaining fields are passed to the Job (None = the Job default).
    """

    function: t.Any
    cron: str
    unique: bool = True
    timeout: int | None = None
    heartbeat: int | None = None
    retries: int | None = None
    ttl: int | None = None
    kwargs: dict[str, t.Any] | None = None
    retry_delay: float | None = None
    retry_backoff: bool | float | None = None
    priority: int | None = None
    meta: dict[str, t.Any] | None = None

    @property
    def function_name(self) -> str:
        if isinstance(self.function, str):
            return self.function
        if isinstance(self.function, tuple):
            return self.function[0]
        return self.function.__qualname__
