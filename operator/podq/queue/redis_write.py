"""Writing a job's attempt back to a Redis queue (write.lua, abort.lua): finish,
retry, disrupt, update, abort, and the sweep that recovers jobs of dead workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing as t

from podq.job import STORED_FIELDS, Job, Status
from podq.queue.base import WORKER_LOST
from podq.queue.redis_core import STORED_NAMES, RedisQueueCore
from podq.queue.store import encode, json_pairs, number, text
from podq.utils import now

logger = logging.getLogger("podq")

_OWNED = "active,aborting"  # the statuses in which a run may write its attempt back
_CALLER_STORED = tuple(f.name for f in STORED_FIELDS if f.use.caller)


class WriteMixin(RedisQueueCore):
    """RedisQueue's write-backs, aborts and sweep."""

    # -- write back ------------------------------------------------------------------

    def _write(
        self,
        job: Job,
        mode: str,
        fields: list[t.Any],
        *,
        delay: float = 0,
        expect: str = "",
        partial: bool = False,
    ) -> t.Any:
        """Run write.lua (batched: podq.queue.batch); expect: the statuses
        (comma-separated) the job must be in, as this attempt (job.attempt_id), for the
        write to land ('' = unguarded); partial: fields are only those changed."""
        key = job.key
        return self._batcher.call(
            self._scripts.write,
            [
                self.keys.job(key),
                self.keys.queued,
                self.keys.scheduled,
                self.keys.active,
                self.keys.seq,
                self.keys.stats,
                self.keys.limited,
                self.keys.dependents(key),
                self.keys.waiting,
            ],
            [
                key,
                self.keys.changes,
                self.keys.wake,
                mode,
                Status(job.status).value,
                job.ttl,
                delay,
                job.scheduled or 0,
                job.attempt_id or "",
                expect,
                job.priority,
                "1" if partial else "0",
                self.keys.job_prefix,
                self.keys.pending_prefix,
                self.keys.dependents_prefix,
                self.keys.parked_prefix,
                *fields,
            ],
        )

    async def finish(
        self,
        job: Job,
        status: Status,
        *,
        result: t.Any = None,
        error: str | None = None,
        expect: bool = False,
    ) -> bool:
        """Finish a job (complete, failed or aborted), applying its ttl.

        With expect=True (used by workers and sweeps) it only writes while the job is
        still this attempt (job.attempt_id), active or aborting, or gone from Redis;
        returns whether it wrote.
        """
        job.status = Status(status)
        job.result = result
        job.error = error
        job.completed = now()
        if job.status == Status.COMPLETE:
            job.progress = 1.0
        read_as = getattr(job, "_read_as", None)
        if expect and read_as is not None:
            # still this attempt: the stored fields not changed since the job was read
            # are as it read them, in Redis too (an update() there is sent again), but
            # for status and error, which an abort sets meanwhile: always sent
            dump = self._dumper(job)
            changed = [*json_pairs(self._json(job)), "status", encode("status", job.status),
                       "error", encode("error", job.error)]
            for name, was in read_as.items():
                value = getattr(job, name)
                if value != was and name not in ("status", "error"):
                    changed += [name, encode(name, value, dump)]
            wrote = await self._write(job, "finish", changed, expect=_OWNED, partial=True)
            if wrote == -1:  # Redis lost the job: write it back whole
                wrote = await self._write(job, "finish", self._hash(job), expect=_OWNED)
        else:
            wrote = await self._write(job, "finish", self._hash(job),
                                      expect=_OWNED if expect else "")
        wrote = bool(wrote)
        if wrote:
            if job.status == Status.COMPLETE:
                self.complete += 1
            elif job.status == Status.FAILED:
                self.failed += 1
            elif job.status == Status.ABORTED:
                self.aborted += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("Finished %s", job.info(False))
        return wrote

    async def retry(self, job: Job, error: str | None, *, expect: bool | str = False) -> bool:
        """Put a job back to queued, ready after next_retry_delay() (fix 3: once).

        expect=True: only while still this attempt, active or aborting (or gone from
        Redis); a string: the statuses to expect instead.
        """
        delay = job.next_retry_delay()
        job.status = Status.QUEUED
        job.error = error
        job.completed = 0
        job.started = 0
        job.progress = 0.0
        job.touched = now()
        guard = _OWNED if expect is True else (expect or "")
        state = self._hash(job)
        reply = await self._write(job, "retry", state, delay=delay, expect=guard)
        wrote = bool(reply)
        if wrote and not isinstance(reply, int):
            # a delayed retry's next attempt time, on Redis's clock as take.lua judges
            # it due (a worker whose clock is off would hold the retry back that much,
            # or run it at once): write.lua reads the clock as it writes, stores the
            # time and returns it
            job.scheduled = number(reply)  # type: ignore[assignment]  # int when whole
        if wrote:
            self.retried += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("Retrying %s", job.info(False))
        return wrote

    async def disrupt(
        self, job: Job, reason: str, error: str, max_disruptions: int | None = None
    ) -> Status | None:
        """The run of this attempt ended without the function's doing (its worker was
        killed or shut down): put the job back at once without using up the attempt,
        counting a disruption, or, at max_disruptions (default: the queue's), finish
        it Failed with error "WorkerLost: ...". Guarded like finish(expect=True).

        Returns the status written (queued or failed), None if the job moved on.
        """
        limit = max_disruptions or self.max_disruptions
        job.disruptions += 1
        job.last_disruption = reason
        if job.disruptions >= limit:
            logger.warning("Job %s lost its worker %d times; failing it", job.key, job.disruptions)
            lost = (f"{WORKER_LOST}: the job's worker was lost {job.disruptions} times "
                    f"(the limit); last: {reason}")
            wrote = await self.finish(job, Status.FAILED, error=lost, expect=True)
            return Status.FAILED if wrote else None
        job.attempts = max(job.attempts - 1, 0)
        job.status = Status.QUEUED
        job.error = error
        job.completed = job.started = 0
        job.progress = 0.0
        if await self._write(job, "requeue", self._hash(job), expect=_OWNED):
            logger.info("Job %s put back after a disruption (%s)", job.key, reason)
            return Status.QUEUED
        return None

    async def update(self, job: Job, **kwargs: t.Any) -> None:
        """Set fields on the job, refresh `touched` and store + notify (status only if given;
        a stored field a caller sets, also when set on the job since it was read).

        On a job being run (it has an attempt id and is active or aborting) the update
        lands only while that attempt is current: a stale run cannot change a newer one.
        `worker_id` is the take's alone (the worker whose liveness record vouches for the
        run): one set here is not stored, or a custom loop's own id, which has no
        liveness record, would have its job swept for a dead worker's.
        """
        self._whole(job, "update")
        job.touched = now()
        for k, v in kwargs.items():
            if hasattr(job, k):
                setattr(job, k, v)
        copy = self.copy(job)
        fields: list[t.Any] = json_pairs(self._json(copy))
        dump = self._dumper(copy)
        # what the caller changed: the fields given, and those a caller sets that differ
        # from how the job was read (job.progress = 0.5, then update())
        read_as = getattr(job, "_read_as", {})
        changed = [*kwargs, *(name for name in _CALLER_STORED if name not in kwargs
                              and name in read_as and getattr(copy, name) != read_as[name])]
        for k in changed:
            if k not in ("touched", "worker_id") and k in STORED_NAMES:
                fields += [k, encode(k, getattr(copy, k), dump)]
        running = job.attempt_id and job.status in (Status.ACTIVE, Status.ABORTING)
        await self._write(job, "update", fields, expect=_OWNED if running else "")

    async def abort(self, job: Job, error: str, ttl: float = 5) -> None:
        """Abort a queued, scheduled (finished as aborted at once) or active job (the
        worker cancels it within about a second). While the abort marker lives (ttl s)
        the key cannot be enqueued again in this queue."""
        result = await self._scripts.abort(
            keys=[
                self.keys.job(job.key),
                self.keys.queued,
                self.keys.scheduled,
                self.keys.abort(job.key),
                self.keys.stats,
                self.keys.seq,
                self.keys.dependents(job.key),
                self.keys.waiting,
                self.keys.limited,
            ],
            args=[job.key, self.keys.changes, self.keys.wake, error, int(ttl * 1000),
                  self.keys.job_prefix, self.keys.pending_prefix, self.keys.dependents_prefix,
                  self.keys.parked_prefix],
            client=self.redis,
        )
        state = text(result) if result else None
        if state == Status.ABORTED:
            job.status = Status.ABORTED
            job.error = error
            job.completed = now()
            self.aborted += 1
        elif state == Status.ABORTING:
            job.status = Status.ABORTING
            job.error = error

    async def finish_abort(self, job: Job) -> None:
        await self.finish(job, Status.ABORTED, error=job.error)

    # -- sweep -----------------------------------------------------------------------

    async def sweep(
        self,
        lock: float = 60,
        abort: float = 5.0,
        stuck_grace: float = 1.0,
        max_disruptions: int | None = None,
        run_by: int | None = None,
    ) -> list[str]:
        """Recover active jobs whose worker died (fix 6), that are stuck, or whose
        record is inconsistent; returns their ids. `lock` (s) keeps other sweepers out
        meanwhile. `run_by` (epoch ms on Redis's clock): run later than that (Redis was
        frozen or unreachable while the sweep waited), it takes no worker for dead.

        A job whose worker died is put back without using up its attempt (a disruption;
        see disrupt()). A stuck job (timeout, heartbeat) of a live worker is aborted with
        the swept error: its worker ends the run and retries it if retryable, else
        finishes it aborted. One taken without a worker (plain dequeue) is aborted,
        given `abort` seconds, then retried or finished aborted "swept" here.
        """
        raw = await self._scripts.sweep(
            keys=[self.keys.active, self.keys.sweep_lock],
            args=[
                self.keys.job_prefix,
                self.keys.worker_prefix,
                int(lock * 1000),
                int(stuck_grace * 1000),
                "" if run_by is None else int(run_by),
            ],
            client=self.redis,
        )
        pairs = [(text(raw[i]), text(raw[i + 1])) for i in range(0, len(raw), 2)]
        if not pairs:
            return []
        await asyncio.gather(
            *(self._recover(k, r, abort, max_disruptions) for k, r in pairs)
        )
        return [self.job_id(k) for k, _ in pairs]

    async def _recover(
        self, key: str, reason: str, abort_wait: float, max_disruptions: int | None
    ) -> None:
        job = await self.job(key)
        if job is None or job.status not in (Status.ACTIVE, Status.ABORTING):
            await self.redis.zrem(self.keys.active, key)
            logger.info("Sweeping %s job %s", "missing" if job is None else "inconsistent", key)
            return
        logger.info("Sweeping job %s (%s)", key, reason)
        error = self.swept_error_message
        if reason == "dead":
            # nobody else will write this attempt
            if job.status == Status.ABORTING:  # it was asked to stop: it stopped
                await self.finish(job, Status.ABORTED, error=job.error or error, expect=True)
            else:
                await self.disrupt(
                    job, f"worker {job.worker_id} lost (its liveness record expired)",
                    error, max_disruptions,
                )
            return
        await self.abort(job, error=error)
        if job.worker_id:
            return  # a live worker owns the run: it cancels it and writes it back
        with contextlib.suppress(TimeoutError, RuntimeError):
            await job.refresh(abort_wait)
        if job.status == Status.ABORTED and job.retryable:
            await self.retry(job, error=error, expect="aborted")
        elif job.status in (Status.ACTIVE, Status.ABORTING):
            if job.retryable:
                await self.retry(job, error=error, expect=True)
            else:
                await self.finish(job, Status.ABORTED, error=error, expect=True)
