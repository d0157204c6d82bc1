"""A Worker's upkeep: the background loops for its liveness record, aborts, sweeps of
dead workers' jobs, metrics and cron jobs, and SAQ's schedule() and worker_info()
steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing as t
from datetime import datetime

from croniter import croniter

from podq.job import CRON_FIELDS, CronJob, Job
from podq.utils import cancel_requested, now, now_seconds
from podq.worker_core import REDIS_ERRORS, WorkerCore

if t.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

logger = logging.getLogger("podq")


class UpkeepMixin(WorkerCore):
    """Worker's background loops."""

    # -- upkeep ----------------------------------------------------------------------

    async def upkeep(self) -> list[asyncio.Task[None]]:
        """Start the background loops: liveness, aborts, sweep, metrics, cron."""
        tasks = [
            # liveness and aborts go on while draining: running jobs are still ours
            asyncio.create_task(self._loop(self.write_liveness, "worker_info", True)),
            asyncio.create_task(self._loop(self._check_aborts, "abort", True)),
            asyncio.create_task(self._loop(self._sweep, "sweep")),
        ]
        if self.metrics is not None and self.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.metrics_port, self.metrics_host)
            tasks.append(asyncio.create_task(self._loop(self.metrics.refresh, "metrics", True)))
        if self.cron_jobs:
            tasks.append(asyncio.create_task(self._loop(self._schedule_cron, "schedule")))
        return tasks

    async def _loop(
        self, fn: Callable[[], Awaitable[t.Any]], timer: str, while_draining: bool = False
    ) -> None:
        while while_draining or not self._stop_event.is_set():
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as e:
                self._redis_error_at = time.monotonic()
                logger.warning("podq: %s: Redis unreachable (%s)", timer, e)
            except Exception:
                logger.exception("podq: upkeep %s failed", timer)
            if cancel_requested():  # cancelled, even if a Redis call in fn swallowed it
                raise asyncio.CancelledError()
            if while_draining:
                await asyncio.sleep(self.timers[timer])
            else:
                await self._sleep(self.timers[timer])

    def info(self) -> dict[str, t.Any]:
        return {
            "id": self.id,
            "hostname": self.hostname,
            "pid": self.pid,
            "queue_key": self.queue.name,
            "concurrency": self.concurrency,
            "functions": sorted(self.functions),
            "active": sorted(run.job.key for run in self._runs.values()),
            "ts": now(),
            "stats": {
                "complete": self.complete,
                "failed": self.failed,
                "retried": self.retried,
                "aborted": self.aborted,
                "uptime": now() - self._created,
            },
            "metadata": self.metadata,
            "draining": self._draining,
        }

    async def write_liveness(self) -> int | None:
        """Write this worker's liveness record; returns when Redis wrote it (epoch ms,
        Redis's clock; None from a queue that does not say). A write answered late
        (Redis frozen, paused or unreachable meanwhile: other workers' records may have
        expired) holds this worker's sweeps back as an outage does."""
        began = time.monotonic()
        written = await self.queue.write_worker_info(self.id, self.info(),
                                                     ttl=self.liveness_ttl)
        if time.monotonic() - began > self._late_s:
            self._redis_error_at = time.monotonic()
        return None if written is None else int(written)

    @property
    def _late_s(self) -> float:
        """How late a Redis reply may come before Redis counts as having stalled."""
        return max(self.timers["worker_info"], 0.5)

    async def _sweep(self) -> None:
        # after an outage, or commands held back by a cluster (a failover, a slot being
        # migrated: every client of the queue waited, liveness records may have expired
        # meanwhile), give every worker time to write its liveness record again, so
        # live workers are not taken for dead ones
        since = max(self._redis_error_at, self.queue.held_back_at())
        if time.monotonic() - since < self.liveness_ttl + self.timers["worker_info"]:
            return
        # this worker is alive: its own record first, so that a stall (CPU starvation, a
        # long pause) that outlasted the record's ttl does not get the sweep to take this
        # worker's own running jobs for a dead worker's and put them back (run twice)
        written = await self.write_liveness()
        if time.monotonic() - self._redis_error_at < self.liveness_ttl:
            return  # that write came late
        # run late (Redis frozen meanwhile), the sweep takes no worker for dead
        swept = await self.queue.sweep(
            lock=max(self.timers["sweep"] - 0.1, 0.1), max_disruptions=self.max_disruptions,
            run_by=None if written is None else written + int(self._late_s * 1000),
        )
        if swept:
            logger.info("Swept %d jobs", len(swept))

    async def _schedule_cron(self) -> None:
        for cron_job in self.cron_jobs:
            await self._enqueue_cron(cron_job)

    async def _enqueue_cron(self, cron_job: CronJob) -> Job | None:
        name = cron_job.function_name
        slot = croniter(cron_job.cron, datetime.now(self.cron_tz)).get_next(float)
        fields = {
            k: getattr(cron_job, k)
            for k in CRON_FIELDS
            if k != "kwargs" and getattr(cron_job, k) is not None
        }
        if "timeout" not in fields and self.timeout is not None:
            fields["timeout"] = self.timeout
        scheduled = int(slot) if float(slot).is_integer() else slot
        if cron_job.unique:
            key = f"cron:{name}"
        else:
            # exactly one job per slot (fix 5): claim the slot once, across workers/ticks
            key = f"cron:{name}:{int(slot)}"
            if self._cron_last.get(id(cron_job)) == slot:
                return None
            claim = self.queue.keys.cron_slot(name, int(slot))
            keep_ms = int(max(slot - now_seconds(), 0) * 1000) + 86_400_000
            if not await self.queue.redis.set(claim, "1", nx=True, px=keep_ms):
                self._cron_last[id(cron_job)] = slot
                return None
            self._cron_last[id(cron_job)] = slot
        return await self.queue.enqueue(
            name, key=key, scheduled=scheduled, kwargs=cron_job.kwargs, **fields
        )

    async def schedule(self, lock: int = 1) -> None:
        """SAQ's schedule step: enqueue due cron jobs and move due scheduled jobs to the
        ready queue (a running worker does both by itself)."""
        await self._schedule_cron()
        moved = await self.queue.schedule(lock)
        if moved:
            logger.info("Scheduled %s", moved)

    async def worker_info(self, ttl: int = 60) -> dict[str, t.Any]:
        """Write this worker's record (queue.info()["workers"]), alive for ttl seconds,
        and return it."""
        info = self.info()
        await self.queue.write_worker_info(self.id, info, ttl=ttl)
        return info
