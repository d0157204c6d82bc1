"""Jobs: the unit of work, with SAQ's fields, defaults and methods.

Timestamps `queued`, `ready_since`, `started`, `touched` and `completed` are epoch
**milliseconds**; `scheduled` is epoch **seconds**.
"""

from __future__ import annotations

import dataclasses
import functools
import typing as t

# SAQ's saq.job defines these; podq.job exports them from their homes (`as`: re-exported)
from podq.cron_job import CronJob as CronJob
from podq.job_status import ACTIVE_STATUSES as ACTIVE_STATUSES
from podq.job_status import RUNNING_STATUSES as RUNNING_STATUSES
from podq.job_status import TERMINAL_STATUSES as TERMINAL_STATUSES
from podq.job_status import UNSUCCESSFUL_TERMINAL_STATUSES as UNSUCCESSFUL_TERMINAL_STATUSES
from podq.job_status import Status
from podq.utils import exponential_backoff, now, seconds, uuid1

if t.TYPE_CHECKING:
    from podq.queue import Queue

def get_default_job_key() -> str:
    return uuid1()


DurationKind = t.Literal["process", "start", "total", "running"]


@dataclasses.dataclass(frozen=True)
class FieldUse:
    """Where a Job field goes besides the Job object: the one declaration that the
    Redis encoding, the Lua calls, `podq enqueue`'s options, CronJob and the operator's
    mapping of a Job resource read (see `JOB_FIELDS`)."""

    caller: bool = True  # set by whoever enqueues; False: the framework sets it
    # its own field of the Redis job hash: a scalar the Lua scripts use without parsing
    # the job's JSON (wins over it), or "json": its own JSON, not in the job's
    stored: t.Literal["", "int", "number", "text", "json"] = ""
    # read by a brief read (the operator's status reads: podq.queue.redis_read): a stored
    # field that a Job resource's status shows or the operator decides on
    brief: bool = False
    resource: str = ""  # its name in a Job resource's spec; "" = not there
    cli: bool = False  # an option of `podq enqueue`
    cron: bool = False  # settable on a CronJob
    help: str = ""


def _field(
    default: t.Any = dataclasses.MISSING,
    *,
    factory: t.Any = dataclasses.MISSING,
    **use: t.Any,
) -> t.Any:
    return dataclasses.field(
        default=default, default_factory=factory, metadata={"podq": FieldUse(**use)}
    )


@dataclasses.dataclass
class Job:
    """One run of a registered function.

    User fields: function, kwargs, queue, key, timeout (s, 0 = none), heartbeat
    (s, 0 = none), retries (max total attempts), ttl (s a finished job is kept; 0 =
    forever, negative = delete at finish), retry_delay, retry_backoff, scheduled
    (epoch seconds, 0 = now), progress, meta, priority (lower runs first).

    Framework fields: attempts, completed/queued/started/touched (epoch ms),
    ready_since (epoch ms, Redis's clock: when the job last became ready to run), result,
    error, status, worker_id; attempt_id (the current attempt's token, given when a
    worker takes the job: every write-back of that attempt presents it); disruptions
    (how many times the job's worker was lost or shut down under it: those runs do not
    count as attempts) and last_disruption (what happened the last time).

    Which fields the caller chose is kept (`chose(name)`): a timeout not chosen
    is the worker's default timeout when it has one, even though it reads 10.
    """

    function: str = _field(
        stored="text", brief=True, resource="function", help="name of a registered function"
    )  # stored: take.lua finds its limits (podq.queue.limits)
    kwargs: dict[str, t.Any] | None = _field(None, resource="kwargs", cron=True)
    queue: Queue | None = _field(None, resource="queue")
    key: str = _field(factory=get_default_job_key, resource="key", cli=True,
                      help="unique key (default: a uuid1)")
    timeout: int = _field(10, stored="int", resource="timeout", cli=True, cron=True,
                          help="max seconds an attempt may run; 0 disables (default: the "
                          "worker's --timeout, else 10)")
    heartbeat: int = _field(0, stored="int", resource="heartbeat", cli=True, cron=True,
                            help="max seconds between heartbeats; 0 disables")
    retries: int = _field(1, stored="int", brief=True, resource="retries", cli=True, cron=True,
                          help="max total attempts")
    ttl: int = _field(600, stored="int", resource="ttl", cli=True, cron=True,
                      help="seconds a finished job is kept; 0 = forever")
    retry_delay: float = _field(0.0, resource="retryDelay", cli=True, cron=True,
                                help="base delay in seconds before a retry")
    retry_backoff: bool | float = _field(False, resource="retryBackoff", cron=True)
    # stored: a delayed retry's write (write.lua) sets it on Redis's clock
    scheduled: int = _field(0, stored="int", brief=True, resource="scheduled", cli=True,
                            help="an ISO 8601 time with its zone (2030-01-01T09:00:00Z, as "
                            "podq prints times), epoch seconds, or +N for N seconds from "
                            "now (default: now)")
    progress: float = _field(0.0, stored="number", brief=True)
    attempts: int = _field(0, caller=False, stored="int", brief=True)
    completed: int = _field(0, caller=False, stored="int", brief=True)
    queued: int = _field(0, caller=False, stored="int", brief=True)
    started: int = _field(0, caller=False, stored="int", brief=True)
    touched: int = _field(0, caller=False, stored="int")
    result: t.Any = _field(None, caller=False, stored="json", brief=True)
    error: str | None = _field(None, caller=False, stored="text", brief=True)
    status: Status = _field(Status.NEW, caller=False, stored="text", brief=True)
    priority: int = _field(0, stored="int", resource="priority", cli=True, cron=True,
                           help="lower runs first (default 0)")
    meta: dict[t.Any, t.Any] = _field(factory=dict, resource="meta", cron=True)
    worker_id: str | None = _field(None, caller=False, stored="text", brief=True)
    attempt_id: str | None = _field(None, caller=False, stored="text")
    disruptions: int = _field(0, caller=False, stored="int", brief=True)
    last_disruption: str | None = _field(None, caller=False, stored="text",
                                          brief=True)
    # keys of jobs of this queue that must complete first (docs/dependencies.md)
    depends_on: list[str] | None = _field(None)
    # why a queued job waits besides workers: dependencies, concurrency or rate (a limit
    # of its function: parked), or "queue rate" / "queue concurrency" (the queue's own
    # limit, set as it is read, not stored: podq.queue.redis_read.mark_queue_held)
    blocked: str | None = _field(None, caller=False, stored="text", brief=True)
    # (declared last: the fields before it keep their positions, SAQ's Job's)
    # when the job last became ready to run, on Redis's clock (not SAQ's): set by the
    # scripts that make it ready (enqueue: its enqueue or scheduled time, whichever is
    # later; a retry: when it is due; a requeue: when it was put back; dependencies
    # done: then); what Queue.waiting_since (podq_queue_waiting_seconds) counts from
    ready_since: int = _field(0, caller=False, stored="int")

    _EXCLUDE_NON_FULL: t.ClassVar[set[str]] = {
        "blocked",
        "depends_on",
        "kwargs",
        "timeout",
        "heartbeat",
        "retries",
        "ttl",
        "retry_delay",
        "retry_backoff",
        "scheduled",
        "progress",
        "result",
        "error",
        "status",
        "priority",
        "meta",
        "attempt_id",
        "last_disruption",
        "ready_since",
    }

    def __post_init__(self) -> None:
        if isinstance(self.status, str) and not isinstance(self.status, Status):
            self.status = Status(self.status.lower())
        self._chosen: set[str] = set()

    def chose(self, name: str) -> bool:
        """Whether the caller chose this field: passed it to Job() or enqueue(), or set
        it to something other than its default since."""
        if name in self._chosen:
            return True
        default = _DEFAULT_OF[name]
        return default is not _NO_DEFAULT and getattr(self, name) != default

    def choose(self, name: str, chosen: bool = True) -> None:
        """Record that the field was (or was not) chosen by the caller."""
        if chosen:
            self._chosen.add(name)
        else:
            self._chosen.discard(name)

    def info(self, full: bool = False) -> str:
        """`Job<...>` with the non-default fields; abridged unless full."""
        kwargs: dict[str, t.Any] = {}
        for field in dataclasses.fields(self):
            name = field.name
            value = getattr(self, name)
            if (full or name not in self._EXCLUDE_NON_FULL) and not _is_default(field, value):
                kwargs[name] = value
        if "queue" in kwargs:
            kwargs["queue"] = kwargs["queue"].name
        if "status" in kwargs:
            kwargs["status"] = kwargs["status"].value
        if not kwargs.get("meta"):
            kwargs.pop("meta", None)
        return "Job<" + ", ".join(f"{k}: {v}" for k, v in kwargs.items()) + ">"

    def __repr__(self) -> str:
        return self.info(True)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and self.key == other.key

    @property
    def id(self) -> str:
        """The job's full id (its Redis key): `podq:{queue}:job:<key>`."""
        return self.get_queue().job_id(self.key)

    @staticmethod
    def key_from_id(job_id: str) -> str:
        """Inverse of `id`: the key, also for keys that contain ':' or '}:job:'."""
        # imported here: podq.queue imports this module
        from podq.queue.keys import key_from_id

        return key_from_id(job_id)

    async def dependency_results(self) -> dict[str, t.Any]:
        """The results of the jobs this one depends on (depends_on), by key; None for
        one no longer stored (its ttl passed)."""
        jobs = await self.get_queue().jobs(self.depends_on or ())
        return {key: job.result if job else None
                for key, job in zip(self.depends_on or (), jobs, strict=True)}

    def to_dict(self) -> dict[str, t.Any]:
        """The non-default fields as a JSON-ready dict (queue as its name, status as text)."""
        result: dict[str, t.Any] = {}
        values = self.__dict__
        for name, default in _DEFAULTS:
            value = values[name]
            if value is default or (
                default is not _NO_DEFAULT and type(value) is type(default) and value == default
            ):
                continue
            if name == "queue":
                if value is None:
                    continue
                value = value.name
            elif name == "status":
                value = value.value if isinstance(value, Status) else Status(value).value
            elif name == "meta" and not value:
                continue
            result[name] = value
        return result

    def duration(self, kind: DurationKind) -> int | None:
        """Milliseconds: process, start, total or running; None when an operand is 0."""
        if kind == "process":
            return self._duration(self.completed, self.started)
        if kind == "start":
            return self._duration(self.started, self.queued)
        if kind == "total":
            return self._duration(self.completed, self.queued)
        if kind == "running":
            return self._duration(now(), self.started)
        raise ValueError(f"Unknown duration type: {kind}")

    @staticmethod
    def _duration(a: int, b: int) -> int | None:
        return a - b if a and b else None

    @property
    def stuck(self) -> bool:
        """Active or aborting, past its timeout or its heartbeat."""
        current = now()
        return self.status in (Status.ACTIVE, Status.ABORTING) and bool(
            (self.timeout and seconds(current - self.started) > self.timeout)
            or (self.heartbeat and seconds(current - self.touched) > self.heartbeat)
        )

    @property
    def retryable(self) -> bool:
        return self.retries > self.attempts

    def next_retry_delay(self) -> float:
        """Seconds before the next attempt (retry_delay, or exponential with full jitter)."""
        if self.retry_backoff is not False:
            max_delay = None if self.retry_backoff is True else float(self.retry_backoff)
            return exponential_backoff(self.attempts, self.retry_delay, max_delay, jitter=True)
        return self.retry_delay

    async def enqueue(self, queue: Queue | None = None) -> None:
        """Enqueue to its queue (or the given one); a duplicate refreshes from the store."""
        queue = queue or self.get_queue()
        if not await queue.enqueue(self):
            await self.refresh()

    async def abort(self, error: str, ttl: int = 5) -> None:
        await self.get_queue().abort(self, error, ttl=ttl)

    async def finish(
        self, status: Status, *, result: t.Any = None, error: str | None = None
    ) -> None:
        await self.get_queue().finish(self, status, result=result, error=error)

    async def retry(self, error: str | None) -> None:
        await self.get_queue().retry(self, error)

    async def update(self, **kwargs: t.Any) -> None:
        """Set fields, refresh `touched` (a heartbeat) and notify listeners."""
        await self.get_queue().update(self, **kwargs)

    async def refresh(self, until_complete: float | None = None) -> None:
        """Reload from the store; with a number, wait that long (0 = forever) for a
        terminal status, driven by notifications, raising TimeoutError past it."""
        queue = self.get_queue()
        if until_complete is None:
            job = await queue.job(self.key)
            if not job:
                raise RuntimeError(f"{self} doesn't exist")
            self.replace(job)
            return
        job = await queue.wait_for_terminal(self.key, until_complete or None)
        if not job:
            raise RuntimeError(f"{self} doesn't exist")
        self.replace(job)

    def replace(self, job: Job) -> None:
        """Replace current attributes with those of job."""
        for field in dataclasses.fields(job):
            setattr(self, field.name, getattr(job, field.name))
        self._chosen = set(job._chosen)

    def get_queue(self) -> Queue:
        if self.queue is None:
            raise TypeError("`Job` must be associated with a `Queue` before this operation")
        return self.queue


_NO_DEFAULT = object()
_DEFAULTS: list[tuple[str, t.Any]] = [
    (
        f.name,
        f.default
        if f.default is not dataclasses.MISSING
        else (
            f.default_factory()  # type: ignore[misc]
            if f.default_factory is not dataclasses.MISSING and f.name != "key"
            else _NO_DEFAULT
        ),
    )
    for f in dataclasses.fields(Job)
]


def _is_default(field: dataclasses.Field[t.Any], value: t.Any) -> bool:
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING and field.name != "key":
        default = field.default_factory()
    else:
        return False
    try:
        return (type(value) is type(default) and bool(value == default)) or (
            value is None and default is None
        )
    except ValueError:
        return False


_DEFAULT_OF = dict(_DEFAULTS)
_FIELD_ORDER = tuple(name for name, _ in _DEFAULTS)
_dataclass_init = Job.__init__


@functools.wraps(_dataclass_init)
def _init_recording_choices(self: Job, *args: t.Any, **kwargs: t.Any) -> None:
    _dataclass_init(self, *args, **kwargs)
    self._chosen.update(_FIELD_ORDER[: len(args)])
    self._chosen.update(kwargs)


Job.__init__ = _init_recording_choices  # type: ignore[method-assign]


@dataclasses.dataclass(frozen=True)
class JobField:
    """One field of Job: name, type, default and where it is used."""

    name: str
    type: t.Any
    default: t.Any  # _NO_DEFAULT for function and key (a fresh uuid each time)
    use: FieldUse

    @property
    def required(self) -> bool:
        return self.name == "function"


def _job_fields() -> dict[str, JobField]:
    hints = t.get_type_hints(Job, localns={"Queue": t.Any})
    return {
        f.name: JobField(f.name, hints[f.name], _DEFAULT_OF[f.name], f.metadata["podq"])
        for f in dataclasses.fields(Job)
    }


# every Job field, in declaration order: the one place their names and uses are listed
JOB_FIELDS: dict[str, JobField] = _job_fields()
STORED_FIELDS = tuple(f for f in JOB_FIELDS.values() if f.use.stored)
BRIEF_FIELDS = tuple(f for f in STORED_FIELDS if f.use.brief)
CRON_FIELDS = tuple(name for name, f in JOB_FIELDS.items() if f.use.cron)
