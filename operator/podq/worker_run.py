"""Running jobs on a Worker: the dispatch loop that takes jobs for free slots, the run
of one job (hooks, timeout, outcome written back guarded by its attempt), and SAQ's
process() step. Aborts of running jobs are podq.worker_abort's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import traceback
import typing as t

from podq.job import Job, Status
from podq.logs import CURRENT_JOB
from podq.utils import Backoff, new_request_id, now_seconds
from podq.worker_core import REDIS_ERRORS, Context, WorkerCore, _Run

logger = logging.getLogger("podq")


class RunMixin(WorkerCore):
    """Worker's dispatch and job runs."""

    # -- dispatch --------------------------------------------------------------------

    async def _dispatch(self) -> None:
        backoff = Backoff(0.1, 5.0)
        burst_idle_since: float | None = None
        next_at: float | None = None
        idle = False  # the last take got fewer jobs than it asked for
        while not self._stop_event.is_set():
            free = self.concurrency - self._executing
            if self.burst and self.max_burst_jobs is not None:
                if self._processed >= self.max_burst_jobs:
                    if self._runs:
                        await asyncio.wait(self._run_tasks())
                    return
                free = min(free, self.max_burst_jobs - self._processed)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            # idle, and nothing woke us since: the take waits in Redis for work
            wait = self._idle_wait(next_at) if idle and not self._wake.is_set() else 0.0
            self._wake.clear()
            self._take_request = self._take_request or new_request_id()
            try:
                jobs, next_at = await self._take(free, wait)
                self._last_take, self._take_request = self._take_request, None
                backoff.reset()
            except REDIS_ERRORS as e:
                self._redis_error_at = time.monotonic()
                delay = backoff.next()
                logger.warning(
                    "Worker %s cannot reach Redis (%s); retrying in %.1fs", self.id, e, delay
                )
                await self._sleep(delay)
                continue
            for job in jobs:
                self._start_job(job)
            idle = len(jobs) < free  # the next take waits for work (take_when_ready)
            if jobs:
                burst_idle_since = None
            elif self.burst and not self._runs:
                burst_idle_since = burst_idle_since or now_seconds()
                if now_seconds() - burst_idle_since >= self.dequeue_timeout:
                    return

    def _idle_wait(self, next_at: float | None) -> float:
        """How long an idle worker's take may wait for work: until the next scheduled
        job is due, timers["schedule"] at most (50 ms for a burst worker with nothing
        running: it looks again whether the queue stayed empty)."""
        wait = self.timers["schedule"]
        if self.burst and self._executing == 0:
            wait = 0.05
        if next_at is not None:
            wait = max(0.0, min(wait, next_at - now_seconds()))
        return wait

    async def _take(self, free: int, wait: float) -> tuple[list[Job], float | None]:
        """Take up to free jobs; with wait > 0, a take Redis runs as soon as work is
        ready (or wait s have passed, or _wake_up ends it)."""
        if wait <= 0:
            return await self.queue.take(
                free, self.id, self.timeout, request=self._take_request,
                previous=self._last_take, lease=self.liveness_ttl,
            )
        self._waiting_take, self._take_woken = True, False
        try:
            return await self.queue.take_when_ready(
                free, self.id, self.timeout, wait, request=self._take_request,
                previous=self._last_take, lease=self.liveness_ttl,
            )
        finally:
            self._waiting_take = False

    def _wake_up(self) -> None:
        """Let the dispatcher look for work now, ending a take that waits for it."""
        self._wake.set()
        if self._waiting_take and not self._take_woken:
            self._take_woken = True
            task = asyncio.get_running_loop().create_task(self._end_waiting_take())
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)

    async def _end_waiting_take(self) -> None:
        with contextlib.suppress(*REDIS_ERRORS):  # Redis gone: the waiting take fails too
            await self.queue.wake_taker(self.id)

    def _on_change(self, key: str | None, status: str) -> None:
        if key is None or status == Status.QUEUED:
            self._wake_up()
        if status == Status.ABORTING and key is not None:
            running = any(r.job.key == key for r in self._runs.values())
            task = asyncio.get_running_loop().create_task(
                self._abort_key(key) if running else self._abort_unreceived(key))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)

    def _start_job(self, job: Job) -> asyncio.Task[None] | None:
        """Run the job in a task of its own; None if this attempt runs already."""
        attempt = job.attempt_id or f"{job.key}:{job.attempts}"
        if attempt in self._runs:  # handed out again by a resent take
            return None
        run = _Run(job)
        self._runs[attempt] = run
        self._executing += 1
        self._processed += 1
        run.task = asyncio.create_task(self._execute(run), name=f"podq-job-{job.key}")
        run.task.add_done_callback(functools.partial(self._run_done, attempt, run))
        return run.task

    def _time_out(self, run: _Run) -> None:
        """Its job's timeout passed: cancel the run (its function), unless it was
        aborted or ended meanwhile."""
        if run.executing and run.abort_error is None and run.task is not None:
            run.timed_out = True
            run.task.cancel()

    def _release(self, run: _Run) -> None:
        if run.executing:
            run.executing = False
            self._executing -= 1
            self._slot.set()
            if self.burst:
                self._wake_up()  # the queue may be done: let the dispatcher check

    def _run_done(self, attempt: str, run: _Run, task: asyncio.Task[None]) -> None:
        self._release(run)
        if self._runs.get(attempt) is run:
            del self._runs[attempt]
        if not task.cancelled() and task.exception():
            logger.error("job task %s crashed", run.job.key, exc_info=task.exception())

    # -- running a job ---------------------------------------------------------------

    async def _execute(self, run: _Run) -> None:
        job = run.job
        CURRENT_JOB.set((job.key, job.function))  # this task's own: its log lines name it
        context: Context = {**self.context, "job": job}
        outcome: tuple[str, t.Any]
        if self.metrics is not None:
            self.metrics.job_started(job)
        began = time.monotonic()
        try:
            function = self.functions.get(job.function)
            if job.depends_on and function:  # their results, read as it starts (complete)
                context["dependencies"] = await job.dependency_results()
            for hook in self.before_process:  # as SAQ: also before an unregistered function
                await self._call(hook, context)
            if function is None:
                known = ", ".join(sorted(self.functions)) or "(none)"
                context["exception"] = KeyError(job.function)  # SAQ's hooks see this
                outcome = (
                    "fail",
                    f"function {job.function!r} is not registered on worker {self.id}; "
                    f"registered functions: {known}",
                )
            else:
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("Processing %s", job.info(False))
                # one timer for every running job's timeout, not one per job
                deadline = (self._deadlines.add(job.timeout, functools.partial(
                    self._time_out, run)) if job.timeout else None)
                timed_out = (
                    "error",
                    f"TimeoutError: job {job.key} ({job.function}) exceeded its timeout "
                    f"of {job.timeout}s",
                )
                # the after_process hooks see the timeout as SAQ's do: ctx["exception"]
                timeout_error = TimeoutError(timed_out[1].removeprefix("TimeoutError: "))
                try:
                    result = await self._call(function, context, **(job.kwargs or {}))
                    outcome = ("complete", result)
                    if run.timed_out:  # it swallowed its timeout's cancel: timed out all
                        # the same, as in SAQ (its result came after its time)
                        t.cast(asyncio.Task[None], asyncio.current_task()).uncancel()
                        outcome = timed_out
                        context["exception"] = timeout_error
                except asyncio.CancelledError:
                    if not run.timed_out or run.abort_error is not None:
                        raise
                    t.cast(asyncio.Task[None], asyncio.current_task()).uncancel()
                    outcome = timed_out
                    context["exception"] = timeout_error
                except Exception as e:
                    context["exception"] = e
                    outcome = ("error", traceback.format_exc())
                finally:
                    if deadline is not None:
                        self._deadlines.cancel(deadline)
        except asyncio.CancelledError:
            if run.abort_error is not None:
                outcome = ("aborted", run.abort_error)
            else:
                outcome = ("back", "cancelled")  # SAQ's error text for a job put back
        except Exception as e:  # a before_process hook failed
            context["exception"] = e
            outcome = ("error", traceback.format_exc())
        self._release(run)
        unstorable = await self._write_back(job, *outcome)
        if unstorable is not None:  # the hooks see why its result was not stored, as SAQ's
            context["exception"] = unstorable
        if self.metrics is not None:
            self.metrics.job_done(job, outcome[0], time.monotonic() - began)
        for hook in self.after_process:
            try:
                await self._call(hook, context)
            except Exception:
                logger.exception("after_process hook failed")

    async def _write_back(self, job: Job, kind: str, value: t.Any) -> TypeError | None:
        """Write the run's outcome, guarded by its attempt id: if the job moved on (a
        newer attempt, aborted and finished, swept) nothing is written. Returns the
        error that kept a result from being stored (the job failed instead), if any."""
        unstorable: list[TypeError] = []

        async def write() -> bool:
            queue = self.queue
            if kind == "complete":
                try:
                    if await queue.finish(job, Status.COMPLETE, result=value, expect=True):
                        self.complete += 1
                        return True
                    return False
                except TypeError as e:  # the result is not JSON-serialisable
                    unstorable[:] = [e]
                    logger.warning("Job %s (%s) failed: %s", job.key, job.function, e)
                    value_error = str(e)
                    if await queue.finish(job, Status.FAILED, error=value_error, expect=True):
                        self.failed += 1
                        return True
                    return False
            if kind == "back":  # not the function's doing: the attempt is not used up
                reason = f"worker {self.id} shut down before the job ended"
                return await queue.disrupt(job, reason, value, self.max_disruptions) is not None
            if kind == "aborted" and not (value == queue.swept_error_message and job.retryable):
                if await queue.finish(job, Status.ABORTED, error=value, expect=True):
                    self.aborted += 1
                    return True
                return False
            # an error, a timeout, or stuck (aborted by a sweep: timeout or heartbeat)
            if kind != "fail" and job.retryable:
                logger.info("Job %s failed (attempt %d of %d): %s; retrying", job.key,
                            job.attempts, job.retries, _last_line(value))
                if await queue.retry(job, value, expect=True):
                    self.retried += 1
                    return True
                return False
            logger.warning("Job %s (%s) failed: %s", job.key, job.function, _last_line(value))
            if await queue.finish(job, Status.FAILED, error=value, expect=True):
                self.failed += 1
                return True
            return False

        # keep trying through a Redis outage so a taken job is never lost
        if not await self._retrying(f"write back job {job.key}", write, forever=True):
            logger.info("Job %s moved on (attempt %s superseded): outcome %s not written",
                        job.key, job.attempt_id, kind)
        return unstorable[0] if unstorable else None

    async def process(self) -> bool:
        """SAQ's step, the usual way to test functions: take one job (waiting
        `dequeue_timeout` s for it, 0 = until one arrives), run it and write its outcome.
        False if no job came. Its abort is seen by abort() (a started worker also sees
        it by itself); stop(), or cancelling this call, puts the job back."""
        # a worker that was not started keeps no liveness record: its jobs are taken
        # with no worker id, so no sweep takes them for a dead worker's (only timeout
        # and heartbeat apply), as SAQ's
        owner = self.id if self._started else ""
        job = await self.queue.take_one(
            self.dequeue_timeout or None, owner, self.timeout, lease=self.liveness_ttl
        )
        if job is None:
            return False
        task = self._start_job(job)
        if task is None:
            return True
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():  # the job's own task puts it back; wait for that
                task.cancel()
                await asyncio.wait([task])
            raise
        return True


def _last_line(error: t.Any) -> str:
    """The line of an error (a traceback's last) that a log line quotes."""
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else ""
