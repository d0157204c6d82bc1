"""The queue API that does not depend on how jobs are stored: enqueue and its
before-enqueue hooks, (de)serialising jobs, apply/map/batch. Each job is made ready
for enqueue (its fields checked) by podq.queue.prepare.

podq stores queues in Redis only (podq.queue.redis.RedisQueue); this base mirrors
SAQ's split of saq.queue.base and saq.queue.redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import typing as t
from abc import ABC, abstractmethod

from podq.job import (
    UNSUCCESSFUL_TERMINAL_STATUSES,
    Job,
    Status,
    get_default_job_key,
)
from podq.queue.prepare import prepare
from podq.utils import json_problem, now

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence

    from podq.queue.notify import Subscription
    from podq.types import CountKind, ListenCallback, QueueInfo, WorkerInfo

DEFAULT_SWEPT_JOB_ERROR = "swept"
# how many times a job's worker may be lost under it (killed, shut down) before the job
# ends Failed with WORKER_LOST: such runs are not attempts, but a job that kills every
# worker that runs it must still end
DEFAULT_MAX_DISRUPTIONS = 5
WORKER_LOST = "WorkerLost"


class JobError(Exception):
    """A job finished unsuccessfully (raised by apply/map)."""

    def __init__(self, job: Job) -> None:
        super().__init__(
            f"Job {job.id} {job.status.value}\n\n"
            f"The above job failed with the following error:\n\n{job.error}"
        )
        self.job = job


class Queue(ABC):
    """A podq queue; `Queue.from_url` or `podq.queue.redis.RedisQueue` make one."""

    def __init__(
        self,
        name: str,
        dump: Callable[[t.Any], str] | None = None,
        load: Callable[[str | bytes], t.Any] | None = None,
        swept_error_message: str | None = None,
        default_timeout: int | None = None,
    ) -> None:
        self.name = name
        self.default_timeout = default_timeout
        self._dump = dump or json.dumps
        self._load = load or json.loads
        self.swept_error_message = swept_error_message or DEFAULT_SWEPT_JOB_ERROR
        self.started = now()
        self.complete = self.failed = self.retried = self.aborted = 0
        self._before_enqueues: dict[int, Callable[[Job], t.Awaitable[None]]] = {}

    @staticmethod
    def from_url(url: str, name: str = "default", **kwargs: t.Any) -> Queue:
        """A queue on the Redis at url (redis://, rediss://, unix://); InvalidUrlError
        for another scheme."""
        from podq.queue.redis import RedisQueue

        return RedisQueue.from_url(url, name=name, **kwargs)

    # -- what a store provides -------------------------------------------------------

    @abstractmethod
    def fit_pool(self, concurrency: int) -> None:
        """Size the connections for a Worker of this concurrency."""

    def held_back_at(self) -> float:
        """time.monotonic() when a command last waited unseen (retried through a
        failover or a resharding of a cluster); -inf if never."""
        return float("-inf")

    @abstractmethod
    async def _enqueue(self, job: Job) -> bool:
        """Store the prepared job unless its key is pending; whether it was stored."""

    @abstractmethod
    async def jobs(
        self, job_keys: Iterable[str], *, queue_held: bool = False, brief: bool = False
    ) -> list[Job | None]: ...

    @abstractmethod
    async def abort(self, job: Job, error: str, ttl: float = 5) -> None: ...

    @abstractmethod
    def subscribe(self, keys: Iterable[str] | None = None) -> Subscription: ...

    # SAQ's queue interface, each implemented by RedisQueue (see there)
    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    @abstractmethod
    async def info(self, jobs: bool = False, offset: int = 0, limit: int = 10) -> QueueInfo: ...

    @abstractmethod
    async def count(self, kind: CountKind) -> int: ...

    @abstractmethod
    async def schedule(self, _lock: int = 1) -> list[str]: ...

    @abstractmethod
    async def sweep(self, lock: float = 60, abort: float = 5.0) -> list[str]: ...

    @abstractmethod
    async def notify(self, job: Job) -> None: ...

    @abstractmethod
    async def update(self, job: Job, **kwargs: t.Any) -> None: ...

    @abstractmethod
    async def job(self, job_key: str) -> Job | None: ...

    @abstractmethod
    def iter_jobs(
        self, statuses: Sequence[Status] = tuple(Status), batch_size: int = 100
    ) -> AsyncIterator[Job]: ...

    @abstractmethod
    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None: ...

    @abstractmethod
    async def finish(
        self, job: Job, status: Status, *, result: t.Any = None, error: str | None = None
    ) -> t.Any: ...

    @abstractmethod
    async def finish_abort(self, job: Job) -> None: ...

    @abstractmethod
    async def retry(self, job: Job, error: str | None) -> t.Any: ...

    @abstractmethod
    async def listen(
        self,
        job_keys: Iterable[str],
        callback: ListenCallback,
        timeout: float | None = 10,
        poll_interval: float = 0.5,
    ) -> None: ...

    @abstractmethod
    async def write_worker_info(
        self, worker_id: str, info: dict[str, t.Any], ttl: float
    ) -> int: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop (SAQ's property)."""
        return asyncio.get_running_loop()

    async def worker_info(
        self, worker_id: str, queue_key: str, metadata: dict | None = None, ttl: int = 60
    ) -> WorkerInfo:
        """SAQ's: write a worker record with this queue's counters as its stats (podq's
        workers write their own, Worker.worker_info())."""
        info: WorkerInfo = {
            "stats": {"complete": self.complete, "failed": self.failed,
                      "retried": self.retried, "aborted": self.aborted,
                      "uptime": now() - self.started},
            "queue_key": queue_key,
            "metadata": metadata,
        }
        # the record also names its worker, as podq's own records do (info() keys by it)
        await self.write_worker_info(worker_id, {"id": worker_id, **info}, ttl=ttl)
        return info

    # -- (de)serialisation ---------------------------------------------------------

    def job_id(self, job_key: str) -> str:
        return job_key

    def serialize(self, job: Job) -> str:
        return self._dump(job.to_dict())

    def deserialize(self, payload: dict | str | bytes | None, status: t.Any = None) -> Job | None:
        if not payload:
            return None
        job_dict = dict(payload) if isinstance(payload, dict) else self._load(payload)
        queue_name = job_dict.pop("queue", self.name)
        if queue_name != self.name:
            raise ValueError(f"Job {job_dict} fetched by wrong queue: {self.name}")
        if status:
            job_dict["status"] = status
        return Job(**job_dict, queue=self)

    def copy(self, job: Job) -> Job:
        copy = t.cast(Job, self.deserialize(job.to_dict()))
        copy.choose("timeout", job.chose("timeout"))
        return copy

    # the Job fields that the store keeps out of the job's JSON (RedisQueue: in fields
    # of their own: podq.queue.store.APART)
    _apart: t.ClassVar[tuple[str, ...]] = ()

    def _json(self, job: Job, what: str = "store") -> str:
        """The job as JSON, without the fields kept apart; TypeError naming the field
        that cannot be encoded. A job read briefly (no kwargs, meta) is never stored."""
        self._whole(job, what)
        job_dict = job.to_dict()
        for name in self._apart:
            job_dict.pop(name, None)
        return self._dumper(job, what)(job_dict)

    @staticmethod
    def _whole(job: Job, what: str = "store") -> None:
        """TypeError for a job read briefly (RedisQueue.jobs_or_errors(brief=True)): it
        has no kwargs or meta, and storing it would lose them."""
        if getattr(job, "_brief", False):
            raise TypeError(f"cannot {what} job {job.key}: read briefly, without its kwargs")

    def _dumper(self, job: Job, what: str = "store") -> t.Callable[[t.Any], t.Any]:
        """The queue's JSON encoder, raising TypeError naming the field of the job that
        cannot be encoded."""
        def dump(value: t.Any) -> t.Any:
            try:
                return self._dump(value)
            except (TypeError, ValueError, RecursionError) as e:
                problem = (
                    json_problem(job.kwargs, "kwargs")
                    or json_problem(job.meta, "meta")
                    or json_problem(job.result, "result")
                )
                raise TypeError(f"cannot {what} job {job.function!r}: {problem or e}") from None
        return dump

    # -- enqueue ---------------------------------------------------------------------

    def _prepare(self, job_or_func: str | Job, kwargs: dict[str, t.Any]) -> Job:
        return prepare(self, job_or_func, kwargs)

    async def enqueue(self, job_or_func: str | Job, **kwargs: t.Any) -> Job | None:
        """Enqueue a job by name or instance; job fields by name, the rest into kwargs.

        Returns None when a job with the same key is queued, scheduled, active or
        aborting (or its abort marker lives).
        """
        job = self._prepare(job_or_func, kwargs)
        for cb in list(self._before_enqueues.values()):
            await cb(job)
        if not await self._enqueue(job):
            return None
        return job

    def register_before_enqueue(self, callback: Callable[[Job], t.Awaitable[None]]) -> None:
        self._before_enqueues[id(callback)] = callback

    def unregister_before_enqueue(self, callback: Callable[[Job], t.Awaitable[None]]) -> None:
        self._before_enqueues.pop(id(callback), None)

    # -- apply / map / batch ---------------------------------------------------------

    async def apply(
        self,
        job_or_func: str | Job,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        **kwargs: t.Any,
    ) -> t.Any:
        """Enqueue a job and wait for its result; JobError if it did not complete.
        poll_interval is accepted as SAQ's and unused: results arrive by pub/sub."""
        results = await self.map(job_or_func, timeout=timeout, iter_kwargs=[kwargs])
        return results[0] if results else None

    async def map(
        self,
        job_or_func: str | Job,
        iter_kwargs: Sequence[dict[str, t.Any]],
        timeout: float | None = None,
        return_exceptions: bool = False,
        poll_interval: float = 0.5,
        **kwargs: t.Any,
    ) -> list[t.Any]:
        """Enqueue one job per kwargs dict and collect their results in order."""
        # the wait is the jobs' timeout too, as in SAQ (without one: the default timeout)
        base = {"timeout": timeout} if timeout else {}
        all_kwargs = [
            {
                **base,
                **kwargs,
                **kw,
                "key": kw.get("key") or kwargs.get("key") or get_default_job_key(),
            }
            for kw in iter_kwargs
        ]
        keys = [kw["key"] for kw in all_kwargs]

        async def collect(sub: Subscription) -> list[t.Any]:
            results: dict[str, t.Any] = {}
            while True:
                sub.changed.clear()
                pending = [k for k in keys if k not in results]
                if not pending:
                    return [results[k] for k in keys]
                for key, job in zip(pending, await self.jobs(pending), strict=True):
                    if job is None:
                        results[key] = None
                    elif job.status in UNSUCCESSFUL_TERMINAL_STATUSES:
                        exc = JobError(job)
                        if not return_exceptions:
                            raise exc
                        results[key] = exc
                    elif job.status == Status.COMPLETE:
                        results[key] = job.result
                if any(k not in results for k in keys):  # a key may repeat
                    await sub.wait(5.0)

        async with self.subscribe(keys) as sub:
            await asyncio.gather(*(self.enqueue(job_or_func, **kw) for kw in all_kwargs))
            return await asyncio.wait_for(collect(sub), timeout or None)

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """Track jobs enqueued inside; abort them all if an exception escapes."""
        children: set[Job] = set()

        async def track(job: Job) -> None:
            children.add(job)

        self.register_before_enqueue(track)
        try:
            yield
        except BaseException:
            await asyncio.gather(
                *(self.abort(child, "cancelled") for child in children), return_exceptions=True
            )
            raise
        finally:
            self.unregister_before_enqueue(track)

