"""Workers: take jobs from a Queue and run registered functions.

A worker takes jobs atomically (one Lua call for as many free slots as it has), wakes
on the queue's pub/sub channel instead of polling, keeps a liveness record in Redis
that expires when it dies, sweeps jobs of dead workers, runs cron jobs, and drains
gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import functools
import importlib
import logging
import os
import signal
import socket
import threading
import time
import traceback
import typing as t
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, tzinfo

from croniter import croniter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from podq.deadlines import Deadlines
from podq.job import CRON_FIELDS, CronJob, Job, Status
from podq.logs import CURRENT_JOB
from podq.metrics import WorkerMetrics
from podq.queue import Queue
from podq.utils import Backoff, cancel_and_wait, cancel_requested, new_request_id, now, now_seconds

if t.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection

    from podq.queue import Limit, WakeSubscription

logger = logging.getLogger("podq")

Context = dict[str, t.Any]
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


@dataclasses.dataclass(eq=False)
class _Run:
    """One attempt of a job on this worker, from its take until it is written back.
    Runs are told apart by attempt id, not job key: the same key can be taken again
    (swept, re-enqueued after Redis lost it) while a stale run of it still ends."""

    job: Job
    task: asyncio.Task[None] | None = None
    executing: bool = True  # the function or its hooks still run: it holds a slot
    abort_error: str | None = None  # why it was cancelled, when an abort did it
    timed_out: bool = False  # cancelled by its job's timeout (podq.deadlines)


def _as_list(funcs: t.Any) -> list[Callable[..., t.Any]]:
    if funcs is None:
        return []
    if callable(funcs):
        return [funcs]
    return list(funcs)


class Worker:
    """Process jobs of one queue.

    Args:
        queue: the Queue
        functions: functions (registered by __qualname__), (name, function) tuples or a
            dict name -> function
        concurrency: jobs run at once
        cron_jobs, cron_tz: CronJob list and their time zone (UTC default)
        startup/shutdown/before_process/after_process: hooks taking the context dict
        timers: seconds for "schedule" (idle wake-up), "worker_info" (liveness refresh),
            "sweep", "abort" (fallback abort check)
        dequeue_timeout: in burst mode, how long to wait for new jobs before stopping
            (required then, as in SAQ); for process(), how long to wait for a job (0 =
            until one arrives)
        burst, max_burst_jobs: stop once the queue is empty / after that many jobs
        shutdown_grace_period_s: on stop, how long running jobs may finish before they
            are cancelled and put back in the queue
        metadata: arbitrary JSON put in the liveness record
        timeout: default timeout (s) for jobs enqueued without one (fix 7)
        liveness_ttl: seconds after which a silent worker counts as dead
        max_disruptions: how many times a job may lose its worker (killed, shut down)
            before it ends Failed "WorkerLost" when this worker notices (None: the
            queue's, default 5); such runs do not use up an attempt
        metrics_port: serve Prometheus metrics on this port (podq.metrics; None = off);
            timers["metrics"] is how often queue depth is read for them
        metrics_host: the address they are served on (all interfaces by default, as a
            pod needs; 127.0.0.1 keeps them on this machine)
        poll_interval: accepted for SAQ settings (there it affects Postgres only); podq
            workers are woken by Redis pub/sub
        limits: the queue's concurrency and rate limits (podq.queue.limits), set in
            Redis as the worker starts, for every worker: `{"charge_card":
            Limit(concurrency=3)}`; None leaves those set before
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(
        self,
        queue: Queue,
        functions: t.Any,
        *,
        id: str | None = None,
        concurrency: int = 10,
        cron_jobs: Collection[CronJob] | None = None,
        cron_tz: tzinfo = UTC,
        startup: t.Any = None,
        shutdown: t.Any = None,
        before_process: t.Any = None,
        after_process: t.Any = None,
        timers: dict[str, float] | None = None,
        dequeue_timeout: float = 0.0,
        burst: bool = False,
        max_burst_jobs: int | None = None,
        shutdown_grace_period_s: float | None = None,
        cancellation_hard_deadline_s: float = 1.0,
        metadata: dict[str, t.Any] | None = None,
        timeout: int | None = None,
        liveness_ttl: float | None = None,
        max_disruptions: int | None = None,
        handle_signals: bool = True,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
        poll_interval: float = 0.0,
        limits: dict[str, Limit] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if burst and dequeue_timeout <= 0:
            # as SAQ: without it a burst worker could not tell an empty queue from a slow one
            raise ValueError("dequeue_timeout must be a positive value greater than 0 when "
                             "the burst mode is enabled")
        self.queue = queue
        self.concurrency = concurrency
        queue.fit_pool(concurrency)  # a connection per running job's write-back
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.id = id or f"{self.hostname}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.timers: dict[str, float] = {"schedule": 1, "worker_info": 2, "sweep": 3, "abort": 1,
                                         "metrics": 5}
        self.timers.update(timers or {})
        self.liveness_ttl = liveness_ttl or max(3 * self.timers["worker_info"], 2.0)
        self.timeout = timeout
        if max_disruptions is not None and max_disruptions < 1:
            raise ValueError(f"max_disruptions must be at least 1, got {max_disruptions}")
        self.max_disruptions = max_disruptions
        self.cron_jobs = list(cron_jobs or [])
        self.cron_tz = cron_tz
        self.startup = _as_list(startup)
        self.shutdown = _as_list(shutdown)
        self.before_process = _as_list(before_process)
        self.after_process = _as_list(after_process)
        self.dequeue_timeout = dequeue_timeout
        self.burst = burst
        self.max_burst_jobs = max_burst_jobs
        self.shutdown_grace_period_s = shutdown_grace_period_s
        self.cancellation_hard_deadline_s = cancellation_hard_deadline_s
        self.metadata = metadata
        self.poll_interval = poll_interval
        self.limits = limits
        self.handle_signals = handle_signals
        self.pool = ThreadPoolExecutor(max_workers=max(concurrency, 4))
        self.functions: dict[str, Callable[..., t.Any]] = {}
        items = functions.items() if isinstance(functions, dict) else functions
        for item in items or []:
            if isinstance(item, tuple):
                name, fn = item
            else:
                name, fn = item.__qualname__, item
            self.functions[name] = fn
        for cron_job in self.cron_jobs:
            if not croniter.is_valid(cron_job.cron):
                raise ValueError(f"Cron is invalid {cron_job.cron}")
            if not isinstance(cron_job.function, str):
                fn = (
                    cron_job.function[1]
                    if isinstance(cron_job.function, tuple)
                    else cron_job.function
                )
                self.functions.setdefault(cron_job.function_name, fn)
        self.context: Context = {"worker": self, "queue": queue}
        # running state
        self._runs: dict[str, _Run] = {}  # attempt id -> run, from take until written back
        self._executing = 0  # runs of _runs holding a slot (run.executing)
        self._deadlines = Deadlines()  # the timeouts of the running jobs
        self._bg: set[asyncio.Task[None]] = set()
        # a take whose reply did not arrive is sent again under the same request id, so
        # it returns the jobs it took instead of leaving them active for nobody
        self._take_request: str | None = None
        self._last_take: str | None = None
        self._processed = 0
        self._upkeep: list[asyncio.Task[None]] = []
        # tasks stop() waits for and then cancels, as SAQ's: e.g. process() calls a test
        # added with `worker.tasks.add(asyncio.create_task(worker.process()))`
        self.tasks: set[asyncio.Task[t.Any]] = set()
        self._created = now()
        self._stop_event = asyncio.Event()
        self._wake_subscription: WakeSubscription | None = None
        self._wake = asyncio.Event()
        self._slot = asyncio.Event()
        self._draining = False
        self._done = asyncio.Event()
        self._started = False
        self._cron_last: dict[int, float] = {}
        self._redis_error_at = float("-inf")
        self.complete = self.failed = self.retried = self.aborted = 0
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.metrics = (
            WorkerMetrics(queue, self.functions, concurrency, lambda: self.executing)
            if metrics_port is not None
            else None
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Run until stop() or SIGTERM/SIGINT, then drain."""
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._done = asyncio.Event()
        self._started = True
        installed = []
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, self._on_signal, signum)
                    installed.append(signum)
        try:
            await self._retrying("connect", self.queue.connect)
            if (limits := self.limits) is not None:
                await self._retrying("set limits", lambda: self.queue.set_limits(limits))
            for hook in self.startup:
                await self._call(hook, self.context)
            self._wake_subscription = self.queue.subscribe_wake(self._on_change)
            await self._retrying("subscribe", self._wake_subscription.start)
            await self._retrying("write liveness", self.write_liveness)
            self._upkeep = await self.upkeep()
            logger.info(
                "Worker %s started on queue %s (concurrency %d, functions: %s)",
                self.id,
                self.queue.name,
                self.concurrency,
                ", ".join(sorted(self.functions)),
            )
            await self._dispatch()
        except asyncio.CancelledError:
            pass
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            await self._drain()

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

    def _on_signal(self, signum: int) -> None:
        logger.info("Worker %s got %s: draining", self.id, signal.Signals(signum).name)
        self._request_stop()

    def _request_stop(self) -> None:
        self._stop_event.set()
        self._wake.set()
        self._slot.set()

    async def stop(self) -> None:
        """Stop taking jobs, let running ones finish within the grace period, put the
        rest back, run shutdown hooks."""
        self._request_stop()
        if self._started:
            await self._done.wait()
        else:  # driven by process() calls (or not at all): end those, as SAQ's stop does
            await self._drain()

    async def _drain(self) -> None:
        if self._done.is_set():
            return
        self._draining = True
        self._request_stop()
        try:
            if self._runs:
                with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                    await asyncio.wait_for(self.write_liveness(), 2)  # tell: draining
            grace = self.shutdown_grace_period_s or 0
            tasks = [*self._run_tasks(), *self.tasks]
            if tasks and grace > 0:
                logger.info("Waiting up to %ss for %d running jobs", grace, len(tasks))
                await asyncio.wait(tasks, timeout=grace)
            unfinished = [run for run in self._runs.values() if run.executing]
            if unfinished:
                logger.warning("Putting %d unfinished jobs back in the queue", len(unfinished))
            tasks = self._run_tasks()
            while tasks:
                # cancel, and again: a cancel swallowed inside a job (see cancel_and_wait)
                # is sent again; runs writing their job back keep going (a taken job is
                # never lost); a sync function's run waits for its thread (see _call)
                for run in list(self._runs.values()):
                    if run.executing and run.task is not None:
                        run.task.cancel()
                _, still = await asyncio.wait(tasks, timeout=0.5)
                tasks = list(still)
            # tasks handed to the worker (process() calls) end now; a job one of them
            # took meanwhile is put back by its own task, awaited here
            if await cancel_and_wait(self.tasks, 5.0):
                logger.warning("Worker %s: tasks did not stop", self.id)
            self.tasks.clear()
            if self._runs:
                await asyncio.wait(self._run_tasks(), timeout=5.0)
            # bounded: the liveness and abort loops run while draining and only stop
            # on cancel, which a Redis call in them can swallow
            if await cancel_and_wait(self._upkeep, 5.0):
                logger.warning("Worker %s: upkeep tasks did not stop", self.id)
            if self._wake_subscription is not None:
                await self._wake_subscription.close()
                self._wake_subscription = None
            with contextlib.suppress(*REDIS_ERRORS):
                await asyncio.wait_for(self.queue.remove_worker_info(self.id), 2)
            for hook in self.shutdown:
                try:
                    await self._call(hook, self.context)
                except Exception:
                    logger.exception("shutdown hook failed")
            self.pool.shutdown(wait=False, cancel_futures=True)
            if self.metrics is not None:
                self.metrics.close()
        finally:
            self._done.set()
            logger.info("Worker %s stopped", self.id)

    # -- dispatch --------------------------------------------------------------------

    async def _dispatch(self) -> None:
        backoff = Backoff(0.1, 5.0)
        burst_idle_since: float | None = None
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
            self._wake.clear()
            self._take_request = self._take_request or new_request_id()
            try:
                jobs, next_at = await self.queue.take(
                    free, self.id, self.timeout, request=self._take_request,
                    previous=self._last_take, lease=self.liveness_ttl,
                )
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
            if jobs:
                burst_idle_since = None
                continue
            if self.burst:
                if not self._runs:
                    burst_idle_since = burst_idle_since or now_seconds()
                    if now_seconds() - burst_idle_since >= self.dequeue_timeout:
                        return
                wait = 0.05 if self._executing == 0 else self.timers["schedule"]
            else:
                wait = self.timers["schedule"]
            if next_at is not None:
                wait = max(0.0, min(wait, next_at - now_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    def _on_change(self, key: str | None, status: str) -> None:
        if key is None or status == Status.QUEUED:
            self._wake.set()
        if status == Status.ABORTING and any(r.job.key == key for r in self._runs.values()):
            task = asyncio.get_running_loop().create_task(self._abort_key(key))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)

    @property
    def executing(self) -> int:
        """Runs holding a slot: their function or hooks still run."""
        return self._executing

    def _run_tasks(self) -> list[asyncio.Task[None]]:
        return [run.task for run in self._runs.values() if run.task is not None]

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
                self._wake.set()  # the queue may be done: let the dispatcher check

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
            if function is None:
                known = ", ".join(sorted(self.functions)) or "(none)"
                outcome = (
                    "fail",
                    f"function {job.function!r} is not registered on worker {self.id}; "
                    f"registered functions: {known}",
                )
            else:
                if job.depends_on:  # their results, read as it starts (all complete)
                    context["dependencies"] = await job.dependency_results()
                for hook in self.before_process:
                    await self._call(hook, context)
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("Processing %s", job.info(False))
                # one timer for every running job's timeout, not one per job
                deadline = (self._deadlines.add(job.timeout, functools.partial(
                    self._time_out, run)) if job.timeout else None)
                try:
                    result = await self._call(function, context, **(job.kwargs or {}))
                    if run.timed_out:  # the function swallowed its timeout's cancel
                        t.cast(asyncio.Task[None], asyncio.current_task()).uncancel()
                    outcome = ("complete", result)
                except asyncio.CancelledError:
                    if not run.timed_out or run.abort_error is not None:
                        raise
                    t.cast(asyncio.Task[None], asyncio.current_task()).uncancel()
                    outcome = (
                        "error",
                        f"TimeoutError: job {job.key} ({job.function}) exceeded its timeout "
                        f"of {job.timeout}s",
                    )
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
        await self._write_back(job, *outcome)
        if self.metrics is not None:
            self.metrics.job_done(job, outcome[0], time.monotonic() - began)
        for hook in self.after_process:
            try:
                await self._call(hook, context)
            except Exception:
                logger.exception("after_process hook failed")

    async def _write_back(self, job: Job, kind: str, value: t.Any) -> None:
        """Write the run's outcome, guarded by its attempt id: if the job moved on (a
        newer attempt, aborted and finished, swept) nothing is written."""

        async def write() -> bool:
            queue = self.queue
            if kind == "complete":
                try:
                    if await queue.finish(job, Status.COMPLETE, result=value, expect=True):
                        self.complete += 1
                        return True
                    return False
                except TypeError as e:  # the result is not JSON-serialisable
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
                logger.info(
                    "Job %s failed (attempt %d of %d); retrying", job.key, job.attempts, job.retries
                )
                if await queue.retry(job, value, expect=True):
                    self.retried += 1
                    return True
                return False
            logger.warning(
                "Job %s (%s) failed: %s",
                job.key,
                job.function,
                str(value).strip().splitlines()[-1:],
            )
            if await queue.finish(job, Status.FAILED, error=value, expect=True):
                self.failed += 1
                return True
            return False

        # keep trying through a Redis outage so a taken job is never lost
        if not await self._retrying(f"write back job {job.key}", write, forever=True):
            logger.info("Job %s moved on (attempt %s superseded): outcome %s not written",
                        job.key, job.attempt_id, kind)

    async def _retrying(
        self, what: str, fn: Callable[[], Awaitable[t.Any]], forever: bool = False
    ) -> t.Any:
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                return await fn()
            except REDIS_ERRORS as e:
                if self._stop_event.is_set() and not forever:
                    raise
                delay = backoff.next()
                logger.warning(
                    "podq: %s failed, Redis unreachable (%s); retrying in %.1fs", what, e, delay
                )
                await asyncio.sleep(delay)

    async def _call(self, fn: Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
        if asyncio.iscoroutinefunction(fn):
            return await fn(*args, **kwargs)
        ctx = contextvars.copy_context()
        thread = self.pool.submit(ctx.run, fn, *args, **kwargs)
        ended = asyncio.wrap_future(thread)
        try:
            result = await asyncio.shield(ended)
        except asyncio.CancelledError:
            await _outlive(thread, ended)
            raise
        if asyncio.iscoroutine(result):
            result = await result
        return result

    # -- aborts ----------------------------------------------------------------------

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

    @property
    def event(self) -> asyncio.Event:
        """Set when the worker is asked to stop (SAQ's name)."""
        return self._stop_event

    @property
    def burst_jobs_processed(self) -> int:
        """Jobs this worker has taken (SAQ counts them in burst mode)."""
        return self._processed

    # -- upkeep ----------------------------------------------------------------------

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

    async def write_liveness(self) -> None:
        await self.queue.write_worker_info(self.id, self.info(), ttl=self.liveness_ttl)

    async def _sweep(self) -> None:
        # after an outage, give every worker time to write its liveness record again,
        # so live workers are not taken for dead ones
        if time.monotonic() - self._redis_error_at < self.liveness_ttl + self.timers["worker_info"]:
            return
        swept = await self.queue.sweep(
            lock=max(self.timers["sweep"] - 0.1, 0.1), max_disruptions=self.max_disruptions
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


async def _outlive(thread: concurrent.futures.Future[t.Any], ended: asyncio.Future[t.Any]) -> None:
    """Wait for a sync function's thread, which cannot be interrupted, through any
    number of cancels: its job is written back (aborted, timed out, put back) only once
    it has ended, so it never runs twice at once nor ends after "aborted"."""
    if thread.cancel():  # it had not started
        return
    while not ended.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([ended])
    if not ended.cancelled():
        ended.exception()  # what it raised is moot now: the run was cancelled


def import_settings(settings: str) -> dict[str, t.Any]:
    """Import `module.name`; the object is a dict or a callable returning one."""
    module_path, _, name = settings.strip().rpartition(".")
    if not module_path:
        raise ValueError(f"settings must be 'module.name', got {settings!r}")
    module = importlib.import_module(module_path)
    obj = getattr(module, name)
    if callable(obj):
        obj = obj()
    if not isinstance(obj, dict):
        raise TypeError(f"settings {settings} must be a dict or a callable returning one")
    return obj

