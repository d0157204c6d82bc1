"""Taking jobs from a Redis queue (take.lua): what workers, dequeue() and schedule()
use; a job taken atomically becomes active with a fresh attempt id.
"""

from __future__ import annotations

import logging
import typing as t

from podq.job import Job, Status
from podq.queue.redis_core import RedisQueueCore
from podq.queue.store import TAKE_FIELDS, text
from podq.utils import new_request_id, now_seconds

logger = logging.getLogger("podq")


class TakeMixin(RedisQueueCore):
    """RedisQueue's take side."""

    # -- take (used by workers) --------------------------------------------------------

    async def take(
        self,
        n: int,
        worker_id: str,
        default_timeout: int | None = None,
        *,
        request: str | None = None,
        previous: str | None = None,
        lease: float = 0.0,
    ) -> tuple[list[Job], float | None]:
        """Atomically take up to n ready jobs and mark them active for worker_id.

        Also promotes due scheduled jobs. Returns (jobs, next scheduled time in epoch
        seconds or None). Each job gets an attempt id (`job.attempt_id`) that guarded
        write-backs present. `request` names this take: sent again (after a lost reply)
        it returns the same jobs instead of taking more; `previous` is the taker's last
        request whose reply arrived (its record is dropped). `lease` (s): how long after
        the take a missing liveness record of worker_id is not yet taken for its death.
        """
        jobs, nxt, _ = await self._take(n, worker_id, default_timeout, request, previous, lease)
        return jobs, nxt

    async def _take(
        self,
        n: int,
        worker_id: str,
        default_timeout: int | None = None,
        request: str | None = None,
        previous: str | None = None,
        lease: float = 0.0,
    ) -> tuple[list[Job], float | None, list[str]]:
        """take(), and the keys of the scheduled jobs it promoted to the ready queue."""
        request = request or new_request_id()
        raw = await self._scripts.take(
            # the pause flag of `podq drain` (podq/drain.py), then the requests' records
            keys=[self.keys.queued, self.keys.scheduled, self.keys.active, self.keys.seq,
                  self.keys.paused, self.keys.take_record(request),
                  self.keys.take_record(previous or request),
                  self.keys.limits, self.keys.limited],
            args=[
                n,
                request,
                worker_id,
                self.keys.job_prefix,
                self.keys.changes,
                "" if default_timeout is None else default_timeout,
                int(lease * 1000),
                self.keys.slot_prefix,
                self.keys.parked_prefix,
                self.keys.rate_prefix,
                *TAKE_FIELDS,
            ],
            client=self.redis,
        )
        nxt = float(text(raw[0])) if raw[0] else None
        promoted = [text(key) for key in raw[1]]
        jobs = []
        for i in range(2, len(raw), 2):
            try:
                job = self._from_hash(raw[i + 1], positional=True)
            except Exception as error:  # corrupted or foreign data: that job fails, not us
                await self._fail_unreadable(text(raw[i]), raw[i + 1], error)
                continue
            if job:
                jobs.append(job)
        return jobs, nxt, promoted

    async def _fail_unreadable(self, key: str, raw: t.Any, error: Exception) -> None:
        """A job just taken whose record cannot be read as a job: write it back as a
        readable Failed job saying why (guarded by the attempt take.lua gave it)."""
        fields = dict(zip(TAKE_FIELDS, raw or (), strict=False))  # take.lua's reply
        message = f"job record {self.job_id(key)} cannot be read: {type(error).__name__}: {error}"
        logger.warning("%s; marked failed", message)
        job = Job(function=text(fields.get("function", b"")) or "?", key=key, queue=self)
        job.attempt_id = text(fields.get("attempt_id", b""))
        job.attempts = 1
        await self.finish(job, Status.FAILED, error=message[:2000], expect=True)

    async def take_one(
        self,
        timeout: float | None,
        worker_id: str = "",
        default_timeout: int | None = None,
        lease: float = 0.0,
    ) -> Job | None:
        """Take one job, marked active for worker_id, waiting up to timeout seconds for
        one (None: until one arrives); None if none came. lease: as take()'s."""
        deadline = None if timeout is None else now_seconds() + timeout
        request = new_request_id()  # one take, however often it is sent
        async with self.subscribe() as sub:
            while True:
                sub.changed.clear()
                jobs, next_at = await self.take(
                    1, worker_id, default_timeout, request=request, lease=lease
                )
                if jobs:
                    return jobs[0]
                wait = 1.0  # a fallback only: a new job wakes the subscription
                if next_at is not None:
                    wait = max(0.0, min(wait, next_at - now_seconds()))
                if deadline is not None:
                    remaining = deadline - now_seconds()
                    if remaining <= 0:
                        return None
                    wait = min(wait, remaining)
                await sub.wait(wait)

    async def dequeue(
        self, timeout: float = 0.0, poll_interval: float = 0.0, worker_id: str = ""
    ) -> Job | None:
        """SAQ's dequeue: take one job, waiting up to timeout seconds (0: until one
        arrives; poll_interval is accepted and unused, podq is woken by pub/sub).

        The take is atomic (fix 1): in Redis the job is active, its attempt counted, at
        once. The returned Job shows it as SAQ's dequeue does, before its attempt:
        status queued, `attempts` not yet counted, `started` 0, no `worker_id`, so code
        that counts the attempt itself (as SAQ's Worker.process() does) counts it once.
        """
        job = await self.take_one(timeout or None, worker_id)
        if job is not None:
            job.attempts -= 1
            job.status = Status.QUEUED
            job.started = 0
            job.worker_id = None
        return job

    async def schedule(self, lock: int = 1) -> list[str]:
        """Promote due scheduled jobs to the ready queue and return their ids (workers
        promote them as they take; `lock` is accepted for SAQ and unused: the promotion
        is atomic)."""
        _, _, promoted = await self._take(0, "")
        return [self.job_id(key) for key in promoted]
