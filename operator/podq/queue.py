"""The Redis queue: enqueue, take, retry, finish, abort, sweep, counts and notifications.

Every key of a queue shares the hash tag `{name}` (see docs/redis-keys.md), so a queue
lives in one Redis Cluster slot and different queues spread over shards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import typing as t
from importlib import resources

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from podq.job import (
    TERMINAL_STATUSES,
    UNSUCCESSFUL_TERMINAL_STATUSES,
    Job,
    Status,
    get_default_job_key,
)
from podq.utils import json_problem, now, now_seconds

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence

logger = logging.getLogger("podq")

DEFAULT_SWEPT_JOB_ERROR = "swept"
QUEUES_KEY = "podq:queues"
PRIORITY_LIMIT = 8000
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]+$")
_JOB_FIELDS = set(Job.__dataclass_fields__)
_INT_FIELDS = ("attempts", "started", "touched", "completed", "timeout")


class JobError(Exception):
    """A job finished unsuccessfully (raised by apply/map)."""

    def __init__(self, job: Job) -> None:
        super().__init__(
            f"Job {job.id} {job.status.value}\n\n"
            f"The above job failed with the following error:\n\n{job.error}"
        )
        self.job = job


class Change(t.NamedTuple):
    """One job change in a queue, as carried by its pub/sub channel."""

    key: str
    status: Status


def _s(value: t.Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _num(value: t.Any) -> int | float:
    text = _s(value)
    try:
        return int(text)
    except ValueError:
        number = float(text)
        return int(number) if number.is_integer() else number


def _load_script(name: str) -> str:
    return resources.files("podq").joinpath("scripts", name).read_text()


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[t.Any]], deadline_s: float
) -> set[asyncio.Task[t.Any]]:
    """Cancel the tasks and wait for them, cancelling again while any still runs, for
    at most deadline_s; returns the tasks still running then.

    One cancel is not enough: on Python 3.11 asyncio.wait_for (which redis-py uses to
    send every command, as socket_timeout is set) returns the result and drops the
    cancel when it arrives just as the send completes, so the task carries on.
    """
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while pending:
        for task in pending:
            task.cancel()
        left = end - loop.time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(0.2, left))
    return pending


def cancel_requested() -> bool:
    """Whether the current task was asked to cancel, even if a callee swallowed it."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _Notifier:
    """One pub/sub connection per Queue object, fanned out to in-process callbacks.

    Callbacks get (key, status) for each change; (None, "resync") after a (re)subscribe,
    meaning messages may have been missed.
    """

    def __init__(self, queue: Queue, channel: str) -> None:
        self.queue = queue
        self.channel = channel
        self.callbacks: set[Callable[[str | None, str], None]] = set()
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self, timeout: float = 10.0) -> None:
        """Make sure the channel is subscribed; ConnectionError if Redis cannot be
        reached within timeout seconds (the reader keeps trying meanwhile)."""
        if self.task is None or self.task.done():
            self.ready = asyncio.Event()
            self.task = asyncio.create_task(self._run(), name=f"podq-notify-{self.queue.name}")
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            raise RedisConnectionError(
                f"cannot subscribe to {self.channel}: Redis unreachable"
            ) from None

    def _dispatch(self, key: str | None, status: str) -> None:
        for cb in list(self.callbacks):
            try:
                cb(key, status)
            except Exception:
                logger.exception("change listener failed")

    def _client(self) -> aioredis.Redis:
        """A client with a pool of its own: closing the queue's pool underneath a
        blocked reader would leave it unable to be cancelled."""
        pool = self.queue.redis.connection_pool
        own = type(pool)(connection_class=pool.connection_class, **pool.connection_kwargs)
        return aioredis.Redis(connection_pool=own)

    async def _run(self) -> None:
        client = self._client()
        try:
            await self._listen(client)
        finally:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(client.aclose(close_connection_pool=True), 1.0)

    async def _listen(self, client: aioredis.Redis) -> None:
        backoff = 0.1
        while not cancel_requested():
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for msg in pubsub.listen():
                    kind = _s(msg["type"])
                    if kind == "message":
                        status, _, key = _s(msg["data"]).partition(":")
                        self._dispatch(key, status)
                    elif kind == "subscribe":
                        backoff = 0.1
                        self.ready.set()
                        self._dispatch(None, "resync")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.ready.clear()
                logger.warning(
                    "podq: lost the notification channel of queue %s (%s); reconnecting in %.1fs",
                    self.queue.name,
                    e,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                # bounded: closing can hang when the pool was closed underneath
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)

    async def close(self) -> None:
        task, self.task = self.task, None
        if task is None:
            return
        # bounded: a swallowed cancel (see cancel_and_wait) must not hang the closer
        if await cancel_and_wait([task], 5.0):
            logger.warning(
                "podq: the notification reader of queue %s did not stop", self.queue.name
            )
        elif not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()


class Subscription:
    """Async iterator of `Change`s in a queue (optionally only for some keys)."""

    def __init__(self, queue: Queue, keys: Iterable[str] | None = None) -> None:
        self.queue = queue
        self.keys = set(keys) if keys is not None else None
        self._items: asyncio.Queue[Change] = asyncio.Queue()
        self.changed = asyncio.Event()

    def _on_change(self, key: str | None, status: str) -> None:
        if key is None:
            self.changed.set()
            return
        if self.keys is None or key in self.keys:
            try:
                change = Change(key, Status(status))
            except ValueError:
                return
            self._items.put_nowait(change)
            self.changed.set()

    async def start(self) -> Subscription:
        self.queue._notifier.callbacks.add(self._on_change)
        await self.queue._notifier.start()
        return self

    async def close(self) -> None:
        self.queue._notifier.callbacks.discard(self._on_change)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until something changed since the last wait; False on timeout."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self.changed.clear()

    async def __aenter__(self) -> Subscription:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        return await self._items.get()


class Queue:
    """A podq queue on Redis.

    Args:
        redis: a redis.asyncio client
        name: queue name (letters, digits, `_.:-`)
        default_timeout: timeout (s) given to jobs enqueued here without one (fix 7)
        dump/load: JSON encoder/decoder for job payloads (default json.dumps/json.loads)
        swept_error_message: error of jobs recovered by a sweep (default "swept")
        max_concurrent_ops: accepted for SAQ compatibility; the connection pool bounds
            concurrency instead
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        name: str = "default",
        default_timeout: int = 10,
        dump: Callable[[t.Any], str] | None = None,
        load: Callable[[str | bytes], t.Any] | None = None,
        max_concurrent_ops: int = 20,
        swept_error_message: str | None = None,
    ) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid queue name {name!r}: use letters, digits and _.:-")
        self.redis = redis
        self.name = name
        self.default_timeout = default_timeout
        self._dump = dump or json.dumps
        self._load = load or json.loads
        self.swept_error_message = swept_error_message or DEFAULT_SWEPT_JOB_ERROR
        self.started = now()
        self.complete = self.failed = self.retried = self.aborted = 0
        tag = "{" + name + "}"
        self.prefix = f"podq:{tag}:"
        self.job_prefix = self.prefix + "job:"
        self.channel = self.prefix + "changes"
        self._queued = self.prefix + "queued"
        self._scheduled = self.prefix + "scheduled"
        self._active = self.prefix + "active"
        self._seq = self.prefix + "seq"
        self._stats = self.prefix + "stats"
        self._workers = self.prefix + "workers"
        self._sweep_lock = self.prefix + "sweep-lock"
        self._enqueue_script = redis.register_script(_load_script("enqueue.lua"))
        self._enqueue_many_script = redis.register_script(_load_script("enqueue_many.lua"))
        self._take_script = redis.register_script(_load_script("take.lua"))
        self._write_script = redis.register_script(_load_script("write.lua"))
        self._abort_script = redis.register_script(_load_script("abort.lua"))
        self._sweep_script = redis.register_script(_load_script("sweep.lua"))
        self._notifier = _Notifier(self, self.channel)
        # workers listen here only: new ready work and aborts, not every change
        self._wake_notifier = _Notifier(self, self.prefix + "wake")
        self._before_enqueues: dict[int, Callable[[Job], t.Awaitable[None]]] = {}
        self._registered = False

    @classmethod
    def from_url(cls, url: str, name: str = "default", **kwargs: t.Any) -> Queue:
        """A queue on the Redis at url (redis://, rediss://, unix://).

        Commands are retried on a dropped connection (3 times, backoff up to 1 s), so a
        Redis restart costs a retry rather than an error.
        """
        retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), 3)
        return cls(aioredis.from_url(url, retry=retry), name=name, **kwargs)

    def __repr__(self) -> str:
        return f"Queue<name={self.name!r}, redis={self.redis!r}>"

    # -- keys ------------------------------------------------------------------------

    def job_id(self, job_key: str) -> str:
        return self.job_prefix + job_key

    def job_key_from_id(self, job_id: str | bytes) -> str:
        return Job.key_from_id(_s(job_id))

    def abort_id(self, job_key: str) -> str:
        return self.prefix + "abort:" + job_key

    def worker_key(self, worker_id: str) -> str:
        return self.prefix + "worker:" + worker_id

    def namespace(self, key: str) -> str:
        return self.prefix + key

    # -- connection ------------------------------------------------------------------

    async def connect(self) -> None:
        """Check the connection and register the queue name (for `podq info`)."""
        await self.redis.ping()
        await self._register()

    async def _register(self) -> None:
        if not self._registered:
            await self.redis.sadd(QUEUES_KEY, self.name)
            self._registered = True

    async def disconnect(self) -> None:
        await self._notifier.close()
        await self._wake_notifier.close()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    # -- (de)serialisation ---------------------------------------------------------

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
        return t.cast(Job, self.deserialize(job.to_dict()))

    def _json(self, job: Job) -> str:
        try:
            return self.serialize(job)
        except (TypeError, ValueError) as e:
            problem = (
                json_problem(job.kwargs, "kwargs")
                or json_problem(job.meta, "meta")
                or json_problem(job.result, "result")
            )
            raise TypeError(f"cannot store job {job.function!r}: {problem or e}") from None

    def _state(self, job: Job) -> list[t.Any]:
        """The job JSON and the hash fields the Lua scripts read and write."""
        return [
            self._json(job),
            job.attempts,
            job.started,
            job.touched,
            job.completed,
            job.worker_id or "",
            job.error or "",
            job.timeout or 0,
            job.heartbeat or 0,
        ]

    def _from_hash(self, raw: t.Any) -> Job | None:
        if not raw:
            return None
        if isinstance(raw, list):
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        h = {_s(k): v for k, v in raw.items()}
        if "job" not in h:
            return None
        job_dict = self._load(h["job"])
        for name in _INT_FIELDS:
            if name in h:
                job_dict[name] = _num(h[name])
        if "status" in h:
            job_dict["status"] = _s(h["status"])
        for name in ("worker_id", "error"):
            if name in h:
                job_dict[name] = _s(h[name]) or None
        return self.deserialize(job_dict)

    # -- enqueue ---------------------------------------------------------------------

    def _prepare(self, job_or_func: str | Job, kwargs: dict[str, t.Any]) -> tuple[Job, bool]:
        job_kwargs: dict[str, t.Any] = {}
        extra: dict[str, t.Any] = {}
        for k, v in kwargs.items():
            if k in _JOB_FIELDS:
                job_kwargs[k] = v
            else:
                extra[k] = v
        if extra:
            job_kwargs["kwargs"] = {**(job_kwargs.get("kwargs") or {}), **extra}
        if isinstance(job_or_func, str):
            job = Job(function=job_or_func, **job_kwargs)
            explicit_timeout = "timeout" in job_kwargs
        else:
            job = job_or_func
            explicit_timeout = "timeout" in job_kwargs or job.timeout != 10
            for k, v in job_kwargs.items():
                setattr(job, k, v)
        if job.queue and job.queue.name != self.name:
            raise ValueError(f"Job {job} registered to a different queue")
        if not explicit_timeout:
            job.timeout = self.default_timeout
            # a queue configured with its own default counts as a choice; only jobs with
            # no choice at all take the default timeout of the worker that runs them
            explicit_timeout = self.default_timeout != 10
        if not isinstance(job.priority, int) or abs(job.priority) > PRIORITY_LIMIT:
            raise ValueError(
                f"priority must be an integer between -{PRIORITY_LIMIT} and {PRIORITY_LIMIT}"
            )
        job.queue = self
        job.queued = now()
        job.status = Status.QUEUED
        return job, explicit_timeout

    def _payload(self, job: Job) -> str:
        try:
            return self.serialize(job)
        except (TypeError, ValueError) as e:
            problem = json_problem(job.kwargs, "kwargs") or json_problem(job.meta, "meta")
            raise TypeError(f"cannot enqueue job {job.function!r}: {problem or e}") from None

    def _enqueue_call(self, job: Job, explicit_timeout: bool, client: t.Any = None) -> t.Any:
        payload = self._payload(job)
        key = job.key
        return self._enqueue_script(
            keys=[
                self.job_prefix + key,
                self._queued,
                self._scheduled,
                self.prefix + "abort:" + key,
                self._seq,
                self._stats,
            ],
            args=[
                key,
                self.prefix,
                job.scheduled or 0,
                now_seconds(),
                job.priority,
                payload,
                job.attempts,
                job.timeout or 0,
                job.heartbeat or 0,
                job.ttl,
                "0" if explicit_timeout else "1",
            ],
            client=client or self.redis,
        )

    async def enqueue(self, job_or_func: str | Job, **kwargs: t.Any) -> Job | None:
        """Enqueue a job by name or instance; job fields by name, the rest into kwargs.

        Returns None when a job with the same key is queued, scheduled, active or
        aborting (or its abort marker lives).
        """
        job, explicit = self._prepare(job_or_func, kwargs)
        for cb in list(self._before_enqueues.values()):
            await cb(job)
        if not self._registered:
            await self._register()
        if not await self._enqueue_call(job, explicit):
            return None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Enqueued %s", job.info(False))
        return job

    async def enqueue_many(self, jobs: Iterable[Job | str | dict[str, t.Any]]) -> list[Job]:
        """Pipelined bulk enqueue; returns the jobs actually enqueued (not duplicates).

        Items are Job objects, function names, or dicts of Queue.enqueue keyword
        arguments with a "function" entry.
        """
        prepared: list[tuple[Job, bool]] = []
        for item in jobs:
            if isinstance(item, dict):
                kw = dict(item)
                prepared.append(self._prepare(kw.pop("function"), kw))
            else:
                prepared.append(self._prepare(item, {}))
        if not prepared:
            return []
        for job, _ in prepared:
            for cb in list(self._before_enqueues.values()):
                await cb(job)
        if not self._registered:
            await self._register()
        enqueued: list[Job] = []
        chunk = 200
        current = now_seconds()
        async with self.redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(prepared), chunk):
                args: list[t.Any] = [self.channel, current, self.prefix]
                for job, explicit in prepared[start : start + chunk]:
                    args += [
                        job.key,
                        self._payload(job),
                        f"{job.scheduled or 0} {job.priority} {job.attempts} {job.timeout or 0} "
                        f"{job.heartbeat or 0} {job.ttl} {0 if explicit else 1}",
                    ]
                await self._enqueue_many_script(
                    keys=[self._queued, self._scheduled, self._seq, self._stats],
                    args=args,
                    client=pipe,
                )
            results = await pipe.execute()
        flags = "".join(_s(part) for part in results)
        enqueued.extend(job for (job, _), ok in zip(prepared, flags, strict=True) if ok == "1")
        return enqueued

    def register_before_enqueue(self, callback: Callable[[Job], t.Awaitable[None]]) -> None:
        self._before_enqueues[id(callback)] = callback

    def unregister_before_enqueue(self, callback: Callable[[Job], t.Awaitable[None]]) -> None:
        self._before_enqueues.pop(id(callback), None)

    # -- take (used by workers) --------------------------------------------------------

    async def take(
        self, n: int, worker_id: str, default_timeout: int | None = None
    ) -> tuple[list[Job], float | None]:
        """Atomically take up to n ready jobs and mark them active for worker_id.

        Also promotes due scheduled jobs. Returns (jobs, next scheduled time in epoch
        seconds or None).
        """
        raw = await self._take_script(
            # the last key: the pause flag of `podq drain` (podq/drain.py)
            keys=[self._queued, self._scheduled, self._active, self._seq,
                  self.prefix + "paused"],
            args=[
                n,
                now(),
                now_seconds(),
                worker_id,
                self.job_prefix,
                self.channel,
                "" if default_timeout is None else default_timeout,
            ],
            client=self.redis,
        )
        nxt = float(_s(raw[0])) if raw[0] else None
        jobs = []
        for i in range(1, len(raw), 2):
            job = self._from_hash(raw[i + 1])
            if job:
                jobs.append(job)
        return jobs, nxt

    async def dequeue(self, timeout: float = 0.0, worker_id: str = "") -> Job | None:
        """Take one job (waiting up to timeout seconds for one; 0 = don't wait)."""
        deadline = now_seconds() + timeout
        async with self.subscribe() as sub:
            while True:
                sub.changed.clear()
                jobs, _ = await self.take(1, worker_id)
                if jobs:
                    return jobs[0]
                remaining = deadline - now_seconds()
                if remaining <= 0:
                    return None
                await sub.wait(min(remaining, 1.0))

    async def schedule(self, lock: int = 1) -> list[str]:
        """Promote due scheduled jobs to the ready queue (workers do this as they take)."""
        await self.take(0, "")
        return []

    # -- write back ------------------------------------------------------------------

    def _write(
        self,
        job: Job,
        mode: str,
        fields: list[t.Any],
        *,
        ready_at: float = 0,
        expect: bool = False,
    ) -> t.Any:
        key = job.key
        return self._write_script(
            keys=[
                self.job_prefix + key,
                self._queued,
                self._scheduled,
                self._active,
                self._seq,
                self._stats,
            ],
            args=[
                key,
                self.prefix,
                mode,
                Status(job.status).value,
                job.ttl,
                ready_at,
                now_seconds(),
                job.attempts if expect else "",
                job.worker_id or "",
                job.priority,
                *fields,
            ],
            client=self.redis,
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
        still this attempt, active or aborting; returns whether it wrote.
        """
        job.status = Status(status)
        job.result = result
        job.error = error
        job.completed = now()
        if job.status == Status.COMPLETE:
            job.progress = 1.0
        wrote = bool(await self._write(job, "finish", self._state(job), expect=expect))
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

    async def retry(self, job: Job, error: str | None, *, expect: bool = False) -> bool:
        """Put a job back to queued, ready after next_retry_delay() (fix 3: once)."""
        delay = job.next_retry_delay()
        job.status = Status.QUEUED
        job.error = error
        job.completed = 0
        job.started = 0
        job.progress = 0.0
        job.touched = now()
        current = now_seconds()
        ready_at = max(float(job.scheduled or 0), current + delay)
        if ready_at > current and delay:
            job.scheduled = int(ready_at) if float(ready_at).is_integer() else ready_at
        wrote = bool(
            await self._write(job, "retry", self._state(job), ready_at=ready_at, expect=expect)
        )
        if wrote:
            self.retried += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("Retrying %s", job.info(False))
        return wrote

    async def update(self, job: Job, **kwargs: t.Any) -> None:
        """Set fields on the job, refresh `touched` and store + notify (status only if given)."""
        job.touched = now()
        for k, v in kwargs.items():
            if hasattr(job, k):
                setattr(job, k, v)
        copy = self.copy(job)
        fields: list[t.Any] = ["job", self._json(copy), "touched", copy.touched]
        for k in kwargs:
            if k == "status":
                fields += ["status", Status(copy.status).value]
            elif k in _INT_FIELDS or k == "heartbeat":
                fields += [k, getattr(copy, k) or 0]
            elif k in ("worker_id", "error"):
                fields += [k, getattr(copy, k) or ""]
        await self._write(copy, "update", fields)

    async def abort(self, job: Job, error: str, ttl: float = 5) -> None:
        """Abort a queued, scheduled (finished as aborted at once) or active job (the
        worker cancels it within about a second). While the abort marker lives (ttl s)
        the key cannot be enqueued again in this queue."""
        result = await self._abort_script(
            keys=[
                self.job_id(job.key),
                self._queued,
                self._scheduled,
                self.abort_id(job.key),
                self._stats,
            ],
            args=[job.key, self.prefix, error, int(ttl * 1000), now()],
            client=self.redis,
        )
        state = _s(result) if result else None
        if state == "aborted":
            job.status = Status.ABORTED
            job.error = error
            job.completed = now()
            self.aborted += 1
        elif state == "aborting":
            job.status = Status.ABORTING
            job.error = error

    async def finish_abort(self, job: Job) -> None:
        await self.finish(job, Status.ABORTED, error=job.error)

    # -- read ------------------------------------------------------------------------

    async def job(self, job_key: str) -> Job | None:
        return self._from_hash(await self.redis.hgetall(self.job_id(job_key)))

    async def jobs(self, job_keys: Iterable[str]) -> list[Job | None]:
        keys = list(job_keys)
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(self.job_id(key))
            raws = await pipe.execute()
        return [self._from_hash(raw) for raw in raws]

    async def iter_jobs(
        self, statuses: Sequence[Status] = tuple(Status), batch_size: int = 100
    ) -> AsyncIterator[Job]:
        wanted = {Status(s) for s in statuses}
        cursor = 0
        while True:
            cursor, ids = await self.redis.scan(
                cursor=cursor, match=self.job_prefix + "*", count=batch_size
            )
            for job in await self.jobs(self.job_key_from_id(i) for i in ids):
                if job and job.status in wanted:
                    yield job
            if not cursor:
                break

    async def count(self, kind: str) -> int:
        """queued (ready and due now), scheduled (due later), active (active+aborting),
        incomplete (all of them)."""
        current = now_seconds()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self._queued)
            pipe.zcount(self._scheduled, "-inf", current)
            pipe.zcount(self._scheduled, f"({current}", "+inf")
            pipe.zcard(self._active)
            ready, due, later, active = await pipe.execute()
        if kind == "queued":
            return ready + due
        if kind == "scheduled":
            return later
        if kind == "active":
            return active
        if kind == "incomplete":
            return ready + due + later + active
        raise ValueError(f"Can't count unknown type {kind!r}")

    async def depth(self) -> int:
        """Due-queued + active jobs: what an autoscaler should size workers for."""
        current = now_seconds()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self._queued)
            pipe.zcount(self._scheduled, "-inf", current)
            pipe.zcard(self._active)
            return sum(await pipe.execute())

    async def next_scheduled(self) -> float | None:
        """Epoch seconds at which the earliest scheduled job becomes due, or None."""
        first = await self.redis.zrange(self._scheduled, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def stats(self) -> dict[str, int]:
        """Lifetime counters of this queue (enqueued, complete, failed, aborted, retried)
        plus the current counts."""
        raw = await self.redis.hgetall(self._stats)
        out = {k: 0 for k in ("enqueued", "complete", "failed", "aborted", "retried")}
        out.update({_s(k): int(v) for k, v in raw.items()})
        for kind in ("queued", "scheduled", "active"):
            out[kind] = await self.count(kind)
        return out

    async def workers(self) -> list[dict[str, t.Any]]:
        """Live workers of this queue, from their liveness records."""
        current = now()
        await self.redis.zremrangebyscore(self._workers, "-inf", current)
        ids = [_s(i) for i in await self.redis.zrange(self._workers, 0, -1)]
        if not ids:
            return []
        records = await self.redis.mget([self.worker_key(i) for i in ids])
        return [json.loads(r) for r in records if r]

    async def info(self, jobs: bool = False, offset: int = 0, limit: int = 10) -> dict[str, t.Any]:
        workers = await self.workers()
        info: dict[str, t.Any] = {
            "workers": {w["id"]: w for w in workers},
            "name": self.name,
            "queued": await self.count("queued"),
            "active": await self.count("active"),
            "scheduled": await self.count("scheduled"),
            "jobs": [],
        }
        if jobs:
            keys = [
                _s(k) for k in await self.redis.zrange(self._active, offset, offset + limit - 1)
            ]
            keys += [
                _s(k) for k in await self.redis.zrange(self._queued, offset, offset + limit - 1)
            ]
            keys += [
                _s(k) for k in await self.redis.zrange(self._scheduled, offset, offset + limit - 1)
            ]
            info["jobs"] = [j.to_dict() for j in await self.jobs(keys) if j][:limit]
        return info

    # -- workers' liveness -----------------------------------------------------------

    async def write_worker_info(self, worker_id: str, info: dict[str, t.Any], ttl: float) -> None:
        """Write a worker's liveness record; it expires after ttl seconds."""
        current = now()
        ttl_ms = int(ttl * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.worker_key(worker_id), json.dumps(info), px=ttl_ms)
            pipe.zadd(self._workers, {worker_id: current + ttl_ms})
            pipe.zremrangebyscore(self._workers, "-inf", current)
            await pipe.execute()

    async def remove_worker_info(self, worker_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.worker_key(worker_id))
            pipe.zrem(self._workers, worker_id)
            await pipe.execute()

    # -- sweep -----------------------------------------------------------------------

    async def sweep(
        self, lock: float = 60, abort: float = 5.0, stuck_grace: float = 1.0
    ) -> list[str]:
        """Recover active jobs whose worker died (fix 6), that are stuck, or whose
        record is inconsistent. Retried if retryable, else finished aborted "swept".
        `lock` (s) keeps other sweepers out meanwhile."""
        raw = await self._sweep_script(
            keys=[self._active, self._sweep_lock],
            args=[self.prefix, now(), int(lock * 1000), int(stuck_grace * 1000)],
            client=self.redis,
        )
        pairs = [(_s(raw[i]), _s(raw[i + 1])) for i in range(0, len(raw), 2)]
        if not pairs:
            return []
        await asyncio.gather(*(self._recover(k, r, abort) for k, r in pairs))
        return [self.job_id(k) for k, _ in pairs]

    async def _recover(self, key: str, reason: str, abort_wait: float) -> None:
        job = await self.job(key)
        if job is None or job.status not in (Status.ACTIVE, Status.ABORTING):
            await self.redis.zrem(self._active, key)
            logger.info("Sweeping %s job %s", "missing" if job is None else "inconsistent", key)
            return
        logger.info("Sweeping job %s (%s)", key, reason)
        error = self.swept_error_message
        if reason in ("timeout", "heartbeat"):
            # a live worker owns it: ask it to cancel, then take over
            await self.abort(job, error=error)
            with contextlib.suppress(TimeoutError, RuntimeError):
                await job.refresh(abort_wait)
            if job.retryable:
                await self.retry(job, error=error)
            elif job.status not in TERMINAL_STATUSES:
                await self.finish(job, Status.ABORTED, error=error)
            return
        # the worker is gone: nobody else will write this attempt
        if job.status == Status.ABORTING:
            await self.finish(job, Status.ABORTED, error=job.error or error, expect=True)
        elif job.retryable:
            await self.retry(job, error=error, expect=True)
        else:
            await self.finish(job, Status.ABORTED, error=error, expect=True)

    # -- notifications ---------------------------------------------------------------

    def subscribe(self, keys: Iterable[str] | None = None) -> Subscription:
        """A subscription to this queue's changes: `async with queue.subscribe() as sub:
        async for change in sub: ...` (change.key, change.status)."""
        return Subscription(self, keys)

    async def changes(self, keys: Iterable[str] | None = None) -> AsyncIterator[Change]:
        """Yield a `Change(key, status)` for each job change in this queue."""
        async with self.subscribe(keys) as sub:
            async for change in sub:
                yield change

    async def notify(self, job: Job) -> None:
        await self.redis.publish(self.channel, f"{Status(job.status).value}:{job.key}")

    async def wait_for_terminal(self, job_key: str, timeout: float | None = None) -> Job | None:
        """Wait (notification-driven) until the job is terminal or gone; TimeoutError past
        timeout seconds (None = forever)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        async with self.subscribe([job_key]) as sub:
            while True:
                sub.changed.clear()
                job = await self.job(job_key)
                if job is None or job.status in TERMINAL_STATUSES:
                    return job
                wait = 5.0 if deadline is None else min(5.0, deadline - loop.time())
                if wait <= 0:
                    raise TimeoutError(f"job {job_key} did not finish within {timeout}s")
                await sub.wait(wait)

    async def listen(
        self,
        job_keys: Iterable[str],
        callback: Callable[[str, Status], t.Any],
        timeout: float | None = 10,
        poll_interval: float | None = None,
    ) -> None:
        """Call callback(key, status) on each change of these jobs until it returns truthy."""
        keys = list(job_keys)
        if not keys:
            return

        async def run(sub: Subscription) -> None:
            async for change in sub:
                stop = callback(change.key, change.status)
                if asyncio.iscoroutine(stop):
                    stop = await stop
                if stop:
                    return

        async with self.subscribe(keys) as sub:
            await asyncio.wait_for(run(sub), timeout or None)

    # -- apply / map / batch ---------------------------------------------------------

    async def apply(
        self, job_or_func: str | Job, timeout: float | None = None, **kwargs: t.Any
    ) -> t.Any:
        """Enqueue a job and wait for its result; JobError if it did not complete."""
        kwargs.pop("poll_interval", None)
        results = await self.map(job_or_func, timeout=timeout, iter_kwargs=[kwargs])
        return results[0] if results else None

    async def map(
        self,
        job_or_func: str | Job,
        iter_kwargs: Sequence[dict[str, t.Any]],
        timeout: float | None = None,
        return_exceptions: bool = False,
        poll_interval: float | None = None,
        **kwargs: t.Any,
    ) -> list[t.Any]:
        """Enqueue one job per kwargs dict and collect their results in order."""
        base = {"timeout": int(timeout)} if timeout else {}
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
                if len(results) < len(keys):
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


async def list_queues(redis: aioredis.Redis) -> list[str]:
    """Names of the queues registered on this Redis (by connect/enqueue/workers)."""
    return sorted(_s(n) for n in await redis.smembers(QUEUES_KEY))

