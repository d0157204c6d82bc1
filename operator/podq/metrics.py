"""Prometheus metrics of a worker, served over HTTP (`podq worker --metrics-port N`).

The worker calls two hooks (`job_done` after each write-back, `refresh` from an upkeep
loop); running jobs are read at scrape time from the `running` callable the worker
hands over (WorkerMetrics knows nothing of the Worker). Queue depth is
read from Redis by the worker every `timers["metrics"]` seconds, never on a scrape, so
scrapes cost Redis nothing. Each WorkerMetrics has a registry of its own: several
workers in one process do not collide.

Labels carry the queue, function and outcome, never job keys or worker ids (one series
per job would grow without bound). A job naming a function the worker does not have is
counted under function UNREGISTERED: whoever may enqueue on the queue chooses that name,
and thousands of made-up names would each add series for good.
"""

from __future__ import annotations

import typing as t
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

from podq.drain import is_paused
from podq.job import Status
from podq.utils import now as now_ms
from podq.utils import now_seconds

# the function label of jobs naming no function of this worker (not a valid function name)
UNREGISTERED = "(unregistered)"

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from wsgiref.simple_server import WSGIServer

    from podq.job import Job
    from podq.queue import Queue

# seconds: from sub-10 ms jobs to an hour
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
                    300, 600, 1800, 3600)
# seconds a job waited for a worker: from instant pickup to a backlog of a day
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200,
                21600, 86400)
OUTCOMES = ("complete", "failed", "aborted")
STATES = ("queued", "scheduled", "active")


def _version() -> str:
    try:
        return version("podq")
    except PackageNotFoundError:
        return "unknown"


class MetricsPortError(OSError):
    """The metrics port cannot be bound (in use, or not allowed)."""


class WorkerMetrics:
    """The metrics of one worker, in a registry of their own.

    Args:
        queue: the worker's queue (depth and pause are read from it)
        functions: names of the worker's functions (their series start at 0)
        concurrency: the worker's concurrency (in podq_worker_info)
        running: returns how many jobs the worker runs now, read at scrape time
    """

    def __init__(
        self,
        queue: Queue,
        functions: Iterable[str],
        concurrency: int,
        running: Callable[[], int],
    ) -> None:
        self._queue = queue
        self.queue = queue.name
        functions = sorted(functions)
        self.functions = frozenset(functions)
        self.registry = CollectorRegistry()
        self._server: WSGIServer | None = None
        self.finished = Counter(
            "podq_jobs_finished", "Jobs this worker finished, by outcome "
            "(complete, failed, aborted).", ["queue", "function", "outcome"],
            registry=self.registry)
        self.retries = Counter(
            "podq_job_retries", "Failed attempts this worker put back for a retry.",
            ["queue", "function"], registry=self.registry)
        self.duration = Histogram(
            "podq_job_duration_seconds", "Run time of job attempts on this worker, by "
            "outcome (complete, failed, aborted, retried).", ["queue", "function", "outcome"],
            buckets=DURATION_BUCKETS, registry=self.registry)
        self.wait = Histogram(
            "podq_job_queue_wait_seconds", "Time from when a job last became ready to run "
            "(enqueued, came due, retried or put back) to an attempt's start on this worker.",
            ["queue", "function"], buckets=WAIT_BUCKETS, registry=self.registry)
        self.waiting = Gauge(
            "podq_queue_waiting_seconds", "How long the longest-waiting due job of the "
            "queue (the oldest head of its priorities, or due scheduled job) has waited "
            "since it last became ready to run: enqueued, came due (scheduled or a "
            "delayed retry), retried or put back (0 when none is due); read from Redis "
            "every few seconds.", ["queue"], registry=self.registry)
        self.running = Gauge(
            "podq_jobs_running", "Jobs this worker is running now.", ["queue"],
            registry=self.registry)
        self.running.labels(self.queue).set_function(running)
        self.depth = Gauge(
            "podq_queue_jobs", "Jobs of the queue by state: queued (ready and due), "
            "scheduled (due later), active (running or aborting on any worker); read from "
            "Redis every few seconds.", ["queue", "state"], registry=self.registry)
        self.paused = Gauge(
            "podq_queue_paused", "1 while the queue is paused (podq drain).", ["queue"],
            registry=self.registry)
        self.depth_age = Gauge(
            "podq_queue_jobs_refreshed_timestamp_seconds",
            "When podq_queue_jobs was last read from Redis (epoch seconds).", ["queue"],
            registry=self.registry)
        info = Info("podq_worker", "This worker.", ["queue"], registry=self.registry)
        info.labels(self.queue).info({
            "version": _version(),
            "concurrency": str(concurrency),
            "functions": ",".join(functions),
        })
        for function in functions:  # known series exist from the start, at 0
            for outcome in OUTCOMES:
                self.finished.labels(self.queue, function, outcome)
            self.retries.labels(self.queue, function)

    # -- hooks -----------------------------------------------------------------------

    def job_started(self, job: Job) -> None:
        """When the worker starts an attempt of a job it took from the queue."""
        started = (job.started or now_ms()) / 1000
        # this attempt's wait: since the job last became ready (a retry's wait does not
        # count the attempts before it); a job made ready by an older podq has no
        # ready_since: its enqueue, or its schedule when later
        since = (job.ready_since / 1000 if job.ready_since
                 else max(job.queued / 1000, float(job.scheduled or 0)))
        if since <= 0:  # enqueued by a client that records no time
            return
        self.wait.labels(self.queue, self._function(job)).observe(max(0.0, started - since))

    def _function(self, job: Job) -> str:
        return job.function if job.function in self.functions else UNREGISTERED

    def job_done(self, job: Job, kind: str, seconds: float) -> None:
        """After a job's write-back: kind is the worker's outcome kind ("complete",
        "error", "aborted" or "back"); the job's status says what was written."""
        if kind == "back":  # cancelled by shutdown and put back: not an outcome of the job
            return
        function = self._function(job)
        if job.status is Status.QUEUED:
            self.retries.labels(self.queue, function).inc()
            outcome = "retried"
        else:
            outcome = Status(job.status).value
            if outcome not in OUTCOMES:
                return
            self.finished.labels(self.queue, function, outcome).inc()
        self.duration.labels(self.queue, function, outcome).observe(seconds)

    async def refresh(self) -> None:
        """Read the queue's depth (one round trip) and pause from Redis."""
        counts = await self._queue.counts()
        for state, value in zip(STATES, (counts.queued, counts.later, counts.active),
                                strict=True):
            self.depth.labels(self.queue, state).set(value)
        self.waiting.labels(self.queue).set(await self._queue.waited_s())
        self.paused.labels(self.queue).set(1 if await is_paused(self._queue) else 0)
        self.depth_age.labels(self.queue).set(now_seconds())

    # -- serving ---------------------------------------------------------------------

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve /metrics on a thread; returns the port (useful with port 0)."""
        try:
            server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as e:
            raise MetricsPortError(f"cannot serve metrics on {addr}:{port}: {e}") from None
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
