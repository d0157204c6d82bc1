"""Type names of podq's API, for annotations (the module `saq.types` of SAQ)."""

from __future__ import annotations

import typing as t
from collections.abc import Awaitable, Callable, Collection, Mapping

if t.TYPE_CHECKING:
    from asyncio import Task

    from podq.job import CronJob, Job, Status
    from podq.queue import Queue
    from podq.worker import Worker


class Context(t.TypedDict, total=False):
    """What a job function, and every hook, gets as its first argument (more keys may
    be added by startup hooks)."""

    worker: t.Required[Worker]
    job: Job
    queue: Queue
    exception: Exception | None


class JobTaskContext(t.TypedDict):
    """A running job's task, and the reason when it is being aborted."""

    task: Task[t.Any]
    aborted: str | None


class WorkerStats(t.TypedDict):
    complete: int
    failed: int
    retried: int
    aborted: int
    uptime: int  # ms


class WorkerInfo(t.TypedDict, total=False):
    """A worker's liveness record, as in `Queue.info()["workers"]`."""

    id: str
    queue_key: str | None
    stats: WorkerStats | None
    metadata: dict[str, t.Any] | None


class LimitedInfo(t.TypedDict):
    """Jobs waiting on one limit (docs/limits.md), and why: concurrency or rate."""

    jobs: int
    why: str


class QueueInfo(t.TypedDict):
    """What `Queue.info()` returns. `queued` counts every job not yet started nor
    scheduled for later: `ready` to start now, those waiting on a limit (`limited`, by
    limit name; "*": the queue's own rate) and those `waiting` for their dependencies."""

    workers: dict[str, WorkerInfo]
    name: str
    queued: int
    active: int
    scheduled: int
    ready: int
    limited: dict[str, LimitedInfo]
    waiting: int
    jobs: list[dict[str, t.Any]]


class TimersDict(t.TypedDict):
    """Seconds between a worker's periodic tasks."""

    schedule: float
    worker_info: float
    sweep: float
    abort: float


class PartialTimersDict(TimersDict, total=False):
    """Worker(timers=...): any subset of TimersDict."""


CtxType = t.TypeVar("CtxType", bound=Context)
P = t.ParamSpec("P")
VersionTuple = tuple[int, ...]
CountKind = t.Literal["queued", "scheduled", "active", "incomplete"]
DurationKind = t.Literal["process", "start", "total", "running"]
DumpType = Callable[[Mapping[t.Any, t.Any]], bytes | str]
LoadType = Callable[[bytes | str], t.Any]
BeforeEnqueueType = Callable[["Job"], Awaitable[t.Any]]
ListenCallback = Callable[[str, "Status"], t.Any]
Function = Callable[..., t.Any]
ReceivesContext = Callable[["Context"], t.Any]
FunctionsType = Collection[Function | tuple[str, Function]]
LifecycleFunctionsType = ReceivesContext | Collection[ReceivesContext]


class SettingsDict(t.TypedDict, total=False):
    """A settings dict for `podq worker` (and SAQ's settings)."""

    queue: Queue
    functions: t.Required[FunctionsType]
    concurrency: int
    cron_jobs: Collection[CronJob]
    startup: ReceivesContext
    shutdown: ReceivesContext
    before_process: ReceivesContext
    after_process: ReceivesContext
    timers: PartialTimersDict
    dequeue_timeout: float
