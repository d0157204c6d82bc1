"""Workers: take jobs from a Queue and run registered functions.

A worker takes jobs atomically (one Lua call for as many free slots as it has), wakes
on the queue's pub/sub channel instead of polling, keeps a liveness record in Redis
that expires when it dies, sweeps jobs of dead workers, runs cron jobs, and drains
gracefully on SIGTERM.

Worker is made of parts by concern: its construction and lifecycle here, the dispatch
and run of jobs in podq.worker_run, aborts of running jobs in podq.worker_abort, the
upkeep loops in podq.worker_upkeep, on what they share in podq.worker_core.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import signal
import socket
import threading
import typing as t
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, tzinfo

from croniter import croniter

from podq.deadlines import Deadlines
from podq.job import CronJob
from podq.metrics import WorkerMetrics
from podq.queue import Queue
from podq.utils import cancel_and_wait, new_request_id, now
from podq.worker_abort import AbortMixin
from podq.worker_core import REDIS_ERRORS, Context, _Run
from podq.worker_run import RunMixin
from podq.worker_upkeep import UpkeepMixin

if t.TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from podq.queue import Limit, WakeSubscription

logger = logging.getLogger("podq")


_HEAP_FROZEN = False


def freeze_startup_heap() -> None:
    """Put what the process holds once a worker has started (modules, functions, the
    settings and their clients) out of the cycle collector's reach, once per process:
    otherwise every full collection walks all of it again, a pause of 5 to 50 ms on a
    loaded machine that every job arriving meanwhile waits out (docs/performance.md,
    "Latency"). Garbage is still freed as before; only objects held since startup are
    no longer scanned."""
    global _HEAP_FROZEN
    if not _HEAP_FROZEN:
        _HEAP_FROZEN = True
        gc.collect()  # the startup's own garbage first: it would never be freed once frozen
        gc.freeze()


def _as_list(funcs: t.Any) -> list[Callable[..., t.Any]]:
    if funcs is None:
        return []
    if callable(funcs):
        return [funcs]
    return list(funcs)


class Worker(RunMixin, AbortMixin, UpkeepMixin):
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
        if burst and max_burst_jobs:
            concurrency = min(concurrency, max_burst_jobs)  # as SAQ: no idle slots
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
        # every take names the previous one (the first, a request never sent), so a
        # late copy of an older take, run after a newer one, takes nothing (take.lua)
        self._last_take: str | None = new_request_id()
        # an idle worker's take waits in Redis for work (Queue.take_when_ready);
        # _wake_up ends it early, once
        self._waiting_take = False
        self._take_woken = False
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
            freeze_startup_heap()
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

    def _on_signal(self, signum: int) -> None:
        logger.info("Worker %s got %s: draining", self.id, signal.Signals(signum).name)
        self._request_stop()

    def _request_stop(self) -> None:
        self._stop_event.set()
        self._wake_up()
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

    @property
    def event(self) -> asyncio.Event:
        """Set when the worker is asked to stop (SAQ's name)."""
        return self._stop_event

    @property
    def burst_jobs_processed(self) -> int:
        """Jobs this worker has taken (SAQ counts them in burst mode)."""
        return self._processed


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

