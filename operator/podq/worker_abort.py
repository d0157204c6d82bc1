"""Aborts of the jobs running on a Worker: a running job cancelled when its job is
aborted (seen by notification or the timers["abort"] poll) or its attempt superseded,
a job taken for this worker but never received written back, and SAQ's abort() step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from podq.job import Job, Status
from podq.worker_core import REDIS_ERRORS, WorkerCore, _Run

logger = logging.getLogger("podq")

# how long after seeing its abort a job taken for this worker but not running here is
# left to a take in flight (whose reply is on its way) before it counts as never received
UNRECEIVED_GRACE_S = 2.0


class AbortMixin(WorkerCore):
    """Worker's aborts of running jobs."""

    def _abort_run(self, run: _Run, error: str) -> None:
        if not run.executing or run.abort_error is not None or run.task is None:
            return
        logger.info("Aborting job %s (%s)", run.job.key, error)
        run.abort_error = error
        run.task.cancel()

    async def _abort_key(self, key: str) -> None:
        if not any(r.job.key == key and r.executing for r in self._runs.values()):
            return
        current = await self.queue.job(key)
        if current is not None:
            self._abort_stale_or_aborted([run for run in self._runs.values()
                                          if run.job.key == key], current)

    async def _abort_unreceived(self, key: str) -> None:
        """An aborted (or swept) job taken for this worker that it never received (the
        take ran in Redis, its reply never reached the worker): no run would write it
        back, so it would stay aborting. Once a take in flight has had time to hand it
        over, it is written back here: aborted, or put back as a disruption when a sweep
        found it stuck (the function never ran)."""
        async def write_back() -> None:
            # one field first: every worker sees every abort, most of other workers' jobs
            owner = await self.queue.redis.hget(self.queue.job_id(key), "worker_id")
            if owner not in (self.id, self.id.encode()):
                return
            for grace in (UNRECEIVED_GRACE_S, 0.0):
                job = await self.queue.job(key)
                if (job is None or job.worker_id != self.id or job.status != Status.ABORTING
                        or any(r.job.attempt_id == job.attempt_id
                               for r in self._runs.values())):
                    return
                await asyncio.sleep(grace)
            logger.warning("Job %s was taken for worker %s, which never received it; %s",
                           key, self.id, "writing it back")
            if job.error == self.queue.swept_error_message:
                reason = f"worker {self.id} never received the job (its take's reply was lost)"
                await self.queue.disrupt(job, reason, job.error, self.max_disruptions)
            else:
                await self.queue.finish(job, Status.ABORTED, error=job.error, expect=True)

        with contextlib.suppress(*REDIS_ERRORS):  # raised only once the worker stops
            await self._retrying(f"write back job {key}", write_back)

    def _abort_stale_or_aborted(self, runs: list[_Run], current: Job) -> None:
        """Cancel the runs of current's key that were aborted, or whose attempt is no
        longer current (swept and taken again: their write-back would be refused)."""
        for run in runs:
            if run.job.attempt_id != current.attempt_id:
                self._abort_run(run, "superseded by a newer attempt")
            elif current.status in (Status.ABORTING, Status.ABORTED):
                self._abort_run(run, current.error or "aborted")

    async def _check_aborts(self, abort_threshold: float = 0.0) -> list[asyncio.Task[None]]:
        """Cancel running jobs (running for at least abort_threshold s) whose job was
        aborted, or whose attempt is no longer current; returns their tasks."""
        runs = [
            run for run in self._runs.values()
            if run.executing and (
                # judged on this host's clock only when asked to (SAQ's abort(threshold))
                abort_threshold <= 0
                or (run.job.duration("running") or 0) >= abort_threshold * 1000
            )
        ]
        if not runs:
            return []
        jobs = await self.queue.jobs([run.job.key for run in runs])
        for run, current in zip(runs, jobs, strict=True):
            if current is not None:  # a job Redis lost runs on: its write-back restores it
                self._abort_stale_or_aborted([run], current)
        return [run.task for run in runs if run.abort_error is not None and run.task]

    async def abort(self, abort_threshold: float) -> None:
        """SAQ's abort check: cancel the running jobs, running for at least
        abort_threshold seconds, that were aborted, and wait until each is finished
        aborted. Workers do this by themselves (on the abort notification and every
        timers["abort"] s); process()-driven tests call it."""
        tasks = await self._check_aborts(abort_threshold)
        if tasks:
            await asyncio.wait(tasks)
