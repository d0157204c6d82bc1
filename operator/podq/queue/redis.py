"""The Redis queue: enqueue, take, retry, finish, abort, sweep, counts and notifications.

Every key of a queue shares the hash tag `{name}` (podq.queue.keys, docs/redis-keys.md),
so a queue lives in one Redis Cluster slot and different queues spread over shards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import typing as t
import weakref
from urllib.parse import urlparse

from redis import asyncio as aioredis
from redis.exceptions import ResponseError

from podq.errors import InvalidUrlError
from podq.job import STORED_FIELDS, TERMINAL_STATUSES, Job, Status
from podq.queue import cluster
from podq.queue import keys as redis_keys
from podq.queue import pool as redis_pool
from podq.queue.base import DEFAULT_MAX_DISRUPTIONS, WORKER_LOST, Queue
from podq.queue.batch import ScriptBatcher
from podq.queue.limits import Limit, read_limits, set_limits
from podq.queue.notify import Change, Notifier, Subscription, WakeSubscription, message
from podq.queue.store import (
    TAKE_FIELDS,
    Scripts,
    decode_hash,
    decode_values,
    encode,
    job_hash,
    read_counts,
    text,
)
from podq.redact import redact
from podq.utils import new_request_id, now, now_seconds

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence

    from podq.queue.notify import Listener
    from podq.queue.store import Counts

logger = logging.getLogger("podq")
STORED_NAMES = frozenset(f.name for f in STORED_FIELDS)

_OWNED = "active,aborting"  # the statuses in which a run may write its attempt back


class RedisQueue(Queue):
    """A podq queue on Redis.

    Args:
        redis: a redis.asyncio client
        name: queue name (letters, digits, `_.:-`)
        default_timeout: timeout (s) given to jobs enqueued here without one (fix 7)
        dump/load: JSON encoder/decoder for job payloads (default json.dumps/json.loads)
        swept_error_message: error of jobs recovered by a sweep (default "swept")
        max_disruptions: after this many disruptions (its worker killed or shut down
            under it) a job ends Failed with error "WorkerLost: ..." (default 5)
        max_concurrent_ops: accepted for SAQ compatibility; the connection pool bounds
            concurrency instead
        max_connections: the size of the connection pool, chosen (None: the client's,
            which a Worker grows to its concurrency plus a few; podq.queue.pool)

    Callers never fail because the queue is busy: they wait for a free connection. A
    client on redis-py's plain pool (which raises when it runs out) is replaced, for
    this queue, by one on a waiting pool with the same settings and size; the queue
    closes that one on disconnect(), the caller closes its own.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        name: str = "default",
        dump: Callable[[t.Any], str] | None = None,
        load: Callable[[str | bytes], t.Any] | None = None,
        max_concurrent_ops: int = 20,
        swept_error_message: str | None = None,
        default_timeout: int | None = None,
        max_disruptions: int = DEFAULT_MAX_DISRUPTIONS,
        max_connections: int | None = None,
    ) -> None:
        if max_disruptions < 1:
            raise ValueError(f"max_disruptions must be at least 1, got {max_disruptions}")
        self.max_disruptions = max_disruptions
        self.keys = redis_keys.QueueKeys(name)
        super().__init__(
            name,
            dump=dump,
            load=load,
            swept_error_message=swept_error_message,
            default_timeout=default_timeout,
        )
        self.redis, self._owns_redis = redis_pool.waiting_client(redis)
        self.max_connections_chosen = max_connections is not None
        if max_connections is not None:
            redis_pool.grow(self.redis, max_connections)
        self._scripts = Scripts(self.redis)
        cluster.preload(self.redis, [s.script for s in vars(self._scripts).values()])
        self._batcher = ScriptBatcher(self.redis)  # write-backs of one loop turn, pipelined
        self._notifier = Notifier(self.redis, self.keys.changes, name)
        # workers listen here only: new ready work and aborts, not every change
        self._wake_notifier = Notifier(self.redis, self.keys.wake, name)
        # dropped without disconnect(): its readers stop rather than being destroyed
        # pending ("Task was destroyed but it is pending")
        weakref.finalize(self, _abandon, (self._notifier, self._wake_notifier))
        self._registered = False

    @classmethod
    def from_url(  # type: ignore[override]
        cls,
        url: str,
        name: str = "default",
        max_connections: int | None = None,
        **kwargs: t.Any,
    ) -> RedisQueue:
        """A queue on the Redis at url (redis://, rediss://, unix://); InvalidUrlError
        for another scheme, as SAQ's Queue.from_url (`podq.Queue` is this class).

        Its pool holds up to max_connections (default 50, grown by a Worker to its
        concurrency plus 5 when not chosen); callers beyond wait for a free one.
        Commands are retried on a dropped connection (3 times, backoff up to 1 s), so a
        Redis restart costs a retry rather than an error.
        """
        if urlparse(url).scheme.lower() not in ("redis", "rediss", "unix", *cluster.SCHEMES):
            raise InvalidUrlError(
                f"Invalid url: {redact(url)} (podq queues live on Redis: redis://, rediss://,"
                " unix://, redis+cluster://host:port,host:port)"
            )
        pool = redis_pool.waiting_pool(
            url, max_connections, slot_key=redis_keys.QueueKeys(name).queued
        )
        client = aioredis.Redis.from_pool(pool)
        return cls(client, name=name, max_connections=max_connections, **kwargs)

    def fit_pool(self, concurrency: int) -> None:
        """Let the pool open a connection per running job plus a few (what a Worker of
        this concurrency needs), unless its size was chosen."""
        if not self.max_connections_chosen:
            redis_pool.grow(self.redis, concurrency + redis_pool.WORKER_RESERVE)

    def __repr__(self) -> str:
        return f"Queue<name={self.name!r}, redis={self.redis!r}>"

    # -- keys ------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    @property
    def job_prefix(self) -> str:
        return self.keys.job_prefix

    @property
    def channel(self) -> str:
        return self.keys.changes

    def job_id(self, job_key: str) -> str:
        return self.keys.job(job_key)

    def job_key_from_id(self, job_id: str | bytes) -> str:
        return redis_keys.key_from_id(job_id)

    def abort_id(self, job_key: str) -> str:
        return self.keys.abort(job_key)

    def worker_key(self, worker_id: str) -> str:
        return self.keys.worker(worker_id)

    # -- connection ------------------------------------------------------------------

    async def connect(self) -> None:
        """Check the connection and register the queue name (for `podq info`)."""
        await self.redis.ping()
        await self._register()

    async def _register(self) -> None:
        if not self._registered:
            async with cluster.client_for(self.redis, redis_keys.QUEUES_KEY) as client:
                await client.sadd(redis_keys.QUEUES_KEY, self.name)
            self._registered = True

    async def disconnect(self) -> None:
        await self._batcher.drain()
        await self._notifier.close()
        await self._wake_notifier.close()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    async def version(self) -> tuple[int, ...]:
        """The Redis server's version, e.g. (7, 0, 15) (SAQ's)."""
        info = await self.redis.info("server")
        return tuple(int(part) for part in str(info["redis_version"]).split("."))

    # -- (de)serialisation ---------------------------------------------------------

    def _from_hash(self, raw: t.Any, positional: bool = False) -> Job | None:
        """The Job of a job hash (HGETALL reply), or of the values of TAKE_FIELDS
        (positional: take.lua's reply)."""
        decoded = (decode_values if positional else decode_hash)(raw, self._load)
        if decoded is None:
            return None
        job_dict, timeout_chosen = decoded
        job = t.cast(Job, self.deserialize(job_dict))
        job.choose("timeout", timeout_chosen)
        # the stored fields as read: a guarded finish sends only those changed since
        job._read_as = {name: getattr(job, name) for name in STORED_NAMES}  # type: ignore[attr-defined]
        return job

    # -- enqueue ---------------------------------------------------------------------

    def _enqueue_call(self, job: Job) -> t.Any:
        """enqueue.lua, batched with the other calls of this loop turn (safe to resend:
        its request id makes a resent enqueue report the job it stored)."""
        key = job.key
        return self._batcher.call(
            self._scripts.enqueue,
            [
                self.keys.job(key),
                self.keys.queued,
                self.keys.scheduled,
                self.keys.abort(key),
                self.keys.seq,
                self.keys.stats,
                self.keys.waiting,
            ],
            [
                key,
                self.keys.changes,
                self.keys.wake,
                job.scheduled or 0,
                new_request_id(),
                job.priority,
                "\n".join(job.depends_on or ()),
                self.keys.job_prefix,
                self.keys.pending_prefix,
                self.keys.dependents_prefix,
                *job_hash(job, self._json(job, "enqueue"), fresh=True),
            ],
        )

    async def _enqueue(self, job: Job) -> bool:
        if not self._registered:
            await self._register()
        if not await self._enqueue_call(job):
            return False
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Enqueued %s", job.info(False))
        return True

    async def enqueue_many(self, jobs: Iterable[Job | str | dict[str, t.Any]]) -> list[Job]:
        """Pipelined bulk enqueue; returns the jobs actually enqueued (not duplicates).

        Items are Job objects, function names, or dicts of Queue.enqueue keyword
        arguments with a "function" entry.
        """
        prepared: list[Job] = []
        for item in jobs:
            if isinstance(item, dict):
                kw = dict(item)
                prepared.append(self._prepare(kw.pop("function"), kw))
            else:
                prepared.append(self._prepare(item, {}))
        if not prepared:
            return []
        for job in prepared:
            for cb in list(self._before_enqueues.values()):
                await cb(job)
        if not self._registered:
            await self._register()
        # jobs with dependencies go one by one, after the others, in order: each finds
        # those it depends on already stored (enqueue.lua)
        after = [job for job in prepared if job.depends_on]
        plain = [job for job in prepared if not job.depends_on]
        flags = await self._enqueue_plain(plain) if plain else ""
        ok = {id(job) for job, flag in zip(plain, flags, strict=True) if flag == "1"}
        for job in after:
            if await self._enqueue_call(job):
                ok.add(id(job))
        return [job for job in prepared if id(job) in ok]

    async def _enqueue_plain(self, prepared: list[Job]) -> str:
        """enqueue_many.lua for jobs without dependencies: '1' per job enqueued."""
        chunk = 200
        async with self.redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(prepared), chunk):
                args: list[t.Any] = [
                    self.keys.changes,
                    new_request_id(),
                    self.keys.job_prefix,
                    self.keys.abort_prefix,
                    self.keys.wake,
                ]
                for job in prepared[start : start + chunk]:
                    pairs = job_hash(job, self._json(job, "enqueue"), fresh=True)
                    args += [job.key, job.scheduled or 0, job.priority, len(pairs), *pairs]
                await self._scripts.enqueue_many(
                    keys=[self.keys.queued, self.keys.scheduled, self.keys.seq, self.keys.stats],
                    args=args,
                    client=pipe,
                )
            results = await pipe.execute()
        return "".join(text(part) for part in results)

    # -- take (used by workers) --------------------------------------------------------

    async def take(
        self,
        n: int,
        worker_id: str,
        default_timeout: int | None = None,
        *,
        request: str | None = None,
        previous: str | None = None,
        lease: float = 0.0,
    ) -> tuple[list[Job], float | None]:
        """Atomically take up to n ready jobs and mark them active for worker_id.

        Also promotes due scheduled jobs. Returns (jobs, next scheduled time in epoch
        seconds or None). Each job gets an attempt id (`job.attempt_id`) that guarded
        write-backs present. `request` names this take: sent again (after a lost reply)
        it returns the same jobs instead of taking more; `previous` is the taker's last
        request whose reply arrived (its record is dropped). `lease` (s): how long after
        the take a missing liveness record of worker_id is not yet taken for its death.
        """
        jobs, nxt, _ = await self._take(n, worker_id, default_timeout, request, previous, lease)
        return jobs, nxt

    async def _take(
        self,
        n: int,
        worker_id: str,
        default_timeout: int | None = None,
        request: str | None = None,
        previous: str | None = None,
        lease: float = 0.0,
    ) -> tuple[list[Job], float | None, list[str]]:
        """take(), and the keys of the scheduled jobs it promoted to the ready queue."""
        request = request or new_request_id()
        raw = await self._scripts.take(
            # the pause flag of `podq drain` (podq/drain.py), then the requests' records
            keys=[self.keys.queued, self.keys.scheduled, self.keys.active, self.keys.seq,
                  self.keys.paused, self.keys.take_record(request),
                  self.keys.take_record(previous or request),
                  self.keys.limits, self.keys.limited],
            args=[
                n,
                request,
                worker_id,
                self.keys.job_prefix,
                self.keys.changes,
                "" if default_timeout is None else default_timeout,
                int(lease * 1000),
                self.keys.slot_prefix,
                self.keys.parked_prefix,
                self.keys.rate_prefix,
                *TAKE_FIELDS,
            ],
            client=self.redis,
        )
        nxt = float(text(raw[0])) if raw[0] else None
        promoted = [text(key) for key in raw[1]]
        jobs = []
        for i in range(2, len(raw), 2):
            try:
                job = self._from_hash(raw[i + 1], positional=True)
            except Exception as error:  # corrupted or foreign data: that job fails, not us
                await self._fail_unreadable(text(raw[i]), raw[i + 1], error)
                continue
            if job:
                jobs.append(job)
        return jobs, nxt, promoted

    async def _fail_unreadable(self, key: str, raw: t.Any, error: Exception) -> None:
        """A job just taken whose record cannot be read as a job: write it back as a
        readable Failed job saying why (guarded by the attempt take.lua gave it)."""
        fields = dict(zip(TAKE_FIELDS, raw or (), strict=False))  # take.lua's reply
        message = f"job record {self.job_id(key)} cannot be read: {type(error).__name__}: {error}"
        logger.warning("%s; marked failed", message)
        job = Job(function=text(fields.get("function", b"")) or "?", key=key, queue=self)
        job.attempt_id = text(fields.get("attempt_id", b""))
        job.attempts = 1
        await self.finish(job, Status.FAILED, error=message[:2000], expect=True)

    async def take_one(
        self,
        timeout: float | None,
        worker_id: str = "",
        default_timeout: int | None = None,
        lease: float = 0.0,
    ) -> Job | None:
        """Take one job, marked active for worker_id, waiting up to timeout seconds for
        one (None: until one arrives); None if none came. lease: as take()'s."""
        deadline = None if timeout is None else now_seconds() + timeout
        request = new_request_id()  # one take, however often it is sent
        async with self.subscribe() as sub:
            while True:
                sub.changed.clear()
                jobs, next_at = await self.take(
                    1, worker_id, default_timeout, request=request, lease=lease
                )
                if jobs:
                    return jobs[0]
                wait = 1.0  # a fallback only: a new job wakes the subscription
                if next_at is not None:
                    wait = max(0.0, min(wait, next_at - now_seconds()))
                if deadline is not None:
                    remaining = deadline - now_seconds()
                    if remaining <= 0:
                        return None
                    wait = min(wait, remaining)
                await sub.wait(wait)

    async def dequeue(
        self, timeout: float = 0.0, poll_interval: float = 0.0, worker_id: str = ""
    ) -> Job | None:
        """SAQ's dequeue: take one job, waiting up to timeout seconds (0: until one
        arrives; poll_interval is accepted and unused, podq is woken by pub/sub).

        The take is atomic (fix 1): in Redis the job is active, its attempt counted, at
        once. The returned Job shows it as SAQ's dequeue does, before its attempt:
        status queued, `attempts` not yet counted, `started` 0, no `worker_id`, so code
        that counts the attempt itself (as SAQ's Worker.process() does) counts it once.
        """
        job = await self.take_one(timeout or None, worker_id)
        if job is not None:
            job.attempts -= 1
            job.status = Status.QUEUED
            job.started = 0
            job.worker_id = None
        return job

    async def schedule(self, lock: int = 1) -> list[str]:
        """Promote due scheduled jobs to the ready queue and return their ids (workers
        promote them as they take; `lock` is accepted for SAQ and unused: the promotion
        is atomic)."""
        _, _, promoted = await self._take(0, "")
        return [self.job_id(key) for key in promoted]

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
        payload = self._json(job)
        read_as = getattr(job, "_read_as", None)
        if expect and read_as is not None:
            # still this attempt: the stored fields not changed since the job was read
            # are as it read them, in Redis too (an update() there is sent again), but
            # for status and error, which an abort sets meanwhile: always sent
            changed = ["job", payload, "status", encode("status", job.status),
                       "error", encode("error", job.error)]
            for name, was in read_as.items():
                value = getattr(job, name)
                if value != was and name not in ("status", "error"):
                    changed += [name, encode(name, value)]
            wrote = await self._write(job, "finish", changed, expect=_OWNED, partial=True)
            if wrote == -1:  # Redis lost the job: write it back whole
                wrote = await self._write(job, "finish", job_hash(job, payload), expect=_OWNED)
        else:
            wrote = await self._write(job, "finish", job_hash(job, payload),
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
        current = now_seconds()
        ready_at = max(float(job.scheduled or 0), current + delay)
        if ready_at > current and delay:
            job.scheduled = int(ready_at) if float(ready_at).is_integer() else ready_at
        guard = _OWNED if expect is True else (expect or "")
        state = job_hash(job, self._json(job))
        wrote = bool(await self._write(job, "retry", state, delay=delay, expect=guard))
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
        if await self._write(job, "requeue", job_hash(job, self._json(job)), expect=_OWNED):
            logger.info("Job %s put back after a disruption (%s)", job.key, reason)
            return Status.QUEUED
        return None

    async def update(self, job: Job, **kwargs: t.Any) -> None:
        """Set fields on the job, refresh `touched` and store + notify (status only if given).

        On a job being run (it has an attempt id and is active or aborting) the update
        lands only while that attempt is current: a stale run cannot change a newer one.
        `worker_id` is the take's alone (the worker whose liveness record vouches for the
        run): one set here is not stored, or a custom loop's own id, which has no
        liveness record, would have its job swept for a dead worker's.
        """
        job.touched = now()
        for k, v in kwargs.items():
            if hasattr(job, k):
                setattr(job, k, v)
        copy = self.copy(job)
        fields: list[t.Any] = ["job", self._json(copy)]
        for k in kwargs:
            if k not in ("touched", "worker_id") and k in STORED_NAMES:
                fields += [k, encode(k, getattr(copy, k))]
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
            ],
            args=[job.key, self.keys.changes, self.keys.wake, error, int(ttl * 1000),
                  self.keys.job_prefix, self.keys.pending_prefix, self.keys.dependents_prefix],
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

    async def jobs_or_errors(self, job_keys: Iterable[str]) -> list[Job | Exception | None]:
        """jobs(), except that a record that cannot be read (the wrong type, JSON that
        does not parse or is not a job) is the exception in its place, in the same one
        round trip. Connection errors still raise."""
        keys = list(job_keys)
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(self.job_id(key))
            raws = await pipe.execute(raise_on_error=False)
        found: list[Job | Exception | None] = []
        for raw in raws:
            if isinstance(raw, Exception) and not isinstance(raw, ResponseError):
                raise raw  # not this record's doing
            try:
                found.append(raw if isinstance(raw, Exception) else self._from_hash(raw))
            except Exception as error:
                found.append(error)
        return found

    async def iter_jobs(
        self, statuses: Sequence[Status] = tuple(Status), batch_size: int = 100
    ) -> AsyncIterator[Job]:
        wanted = {Status(s) for s in statuses}
        cursor = 0
        while True:
            cursor, ids = await self.redis.scan(
                cursor=cursor, match=self.keys.job_prefix + "*", count=batch_size
            )
            for job in await self.jobs(self.job_key_from_id(i) for i in ids):
                if job and job.status in wanted:
                    yield job
            if not cursor:
                break

    async def counts(self) -> Counts:
        """The sizes of this queue's sets, read in one round trip."""
        return await read_counts(self.redis, self.keys)

    async def set_limits(self, limits: dict[str, Limit]) -> None:
        """Replace this queue's concurrency and rate limits, for every worker
        (podq.queue.limits): `{"charge_card": Limit(concurrency=3), "*": Limit(rate=100)}`."""
        await set_limits(self.redis, self.keys, limits)

    async def limits(self) -> dict[str, Limit]:
        """This queue's limits, as set by set_limits()."""
        return await read_limits(self.redis, self.keys)

    async def count(self, kind: str) -> int:
        """queued (ready and due now, also those waiting on a limit), scheduled (due
        later), active (active+aborting), incomplete (all of them)."""
        if kind not in ("queued", "scheduled", "active", "incomplete"):
            raise ValueError(f"Can't count unknown type {kind!r}")
        counts = await self.counts()
        return counts.later if kind == "scheduled" else getattr(counts, kind)

    async def depth(self) -> int:
        """Due-queued + active jobs: what an autoscaler should size workers for."""
        return (await self.counts()).depth

    async def next_scheduled(self) -> float | None:
        """Epoch seconds at which the earliest scheduled job becomes due, or None."""
        first = await self.redis.zrange(self.keys.scheduled, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def waiting_since(self) -> float | None:
        """Epoch seconds since when the next job to run has waited: the head of the ready
        queue (since it was enqueued, or became due if scheduled) or the earliest scheduled
        job already due, whichever waited longer. None when no job is due. With
        priorities, a lower-priority job may have waited longer than the head."""
        current = now_seconds()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(self.keys.queued, 0, 0)
            pipe.zrangebyscore(self.keys.scheduled, "-inf", current, start=0, num=1,
                               withscores=True)
            head, due = await pipe.execute()
        since = [float(due[0][1])] if due else []
        if head:
            queued, scheduled = await self.redis.hmget(
                self.job_id(text(head[0])), "queued", "scheduled")
            if queued is not None:
                since.append(max(int(queued) / 1000, float(scheduled or 0)))
        return min(since) if since else None

    async def stats(self) -> dict[str, int]:
        """Lifetime counters of this queue (enqueued, complete, failed, aborted, retried,
        disrupted) plus the current counts."""
        raw = await self.redis.hgetall(self.keys.stats)
        out = {k: 0 for k in ("enqueued", "complete", "failed", "aborted", "retried",
                              "disrupted")}
        out.update({text(k): int(v) for k, v in raw.items()})
        counts = await self.counts()
        out.update(queued=counts.queued, scheduled=counts.later, active=counts.active)
        return out

    async def workers(self) -> list[dict[str, t.Any]]:
        """Live workers of this queue, from their liveness records."""
        seconds, micros = await self.redis.time()  # the clock liveness expires on
        await self.redis.zremrangebyscore(
            self.keys.workers, "-inf", seconds * 1000 + micros // 1000
        )
        ids = [text(i) for i in await self.redis.zrange(self.keys.workers, 0, -1)]
        if not ids:
            return []
        records = await self.redis.mget([self.keys.worker(i) for i in ids])
        found = []
        for worker_id, record in zip(ids, records, strict=True):
            try:
                info = json.loads(record) if record else None
            except ValueError:  # foreign data under the queue's keys: not a worker
                info = None
                logger.warning("worker record %s of queue %s is not JSON; ignored",
                               self.keys.worker(worker_id), self.name)
            if isinstance(info, dict):
                found.append(info)
        return found

    async def info(self, jobs: bool = False, offset: int = 0, limit: int = 10) -> dict[str, t.Any]:
        workers = await self.workers()
        counts = await self.counts()
        info: dict[str, t.Any] = {
            "workers": {w["id"]: w for w in workers},
            "name": self.name,
            "queued": counts.queued,
            "active": counts.active,
            "scheduled": counts.later,
            "jobs": [],
        }
        if jobs:
            end = offset + limit - 1
            keys = []
            for zset in (self.keys.active, self.keys.queued, self.keys.scheduled):
                keys += [text(k) for k in await self.redis.zrange(zset, offset, end)]
            info["jobs"] = [j.to_dict() for j in await self.jobs(keys) if j][:limit]
        return info

    # -- workers' liveness -----------------------------------------------------------

    async def write_worker_info(self, worker_id: str, info: dict[str, t.Any], ttl: float) -> None:
        """Write a worker's liveness record; it expires after ttl seconds (Redis's clock)."""
        await self._scripts.liveness(
            keys=[self.keys.worker(worker_id), self.keys.workers],
            args=[worker_id, json.dumps(info), int(ttl * 1000)],
            client=self.redis,
        )

    async def remove_worker_info(self, worker_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            await pipe.execute()

    # -- sweep -----------------------------------------------------------------------

    async def sweep(
        self,
        lock: float = 60,
        abort: float = 5.0,
        stuck_grace: float = 1.0,
        max_disruptions: int | None = None,
    ) -> list[str]:
        """Recover active jobs whose worker died (fix 6), that are stuck, or whose
        record is inconsistent; returns their ids. `lock` (s) keeps other sweepers out
        meanwhile.

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

    # -- notifications ---------------------------------------------------------------

    def subscribe(self, keys: Iterable[str] | None = None) -> Subscription:
        """A subscription to this queue's changes: `async with queue.subscribe() as sub:
        async for change in sub: ...` (change.key, change.status)."""
        return Subscription(self._notifier, keys)

    def subscribe_wake(self, callback: Listener) -> WakeSubscription:
        """A subscription of callback to this queue's wake channel (ready work, aborts),
        which workers listen to: `sub = await queue.subscribe_wake(cb).start()`, and
        `await sub.close()`; also an async context manager."""
        return WakeSubscription(self._wake_notifier, callback)

    async def changes(self, keys: Iterable[str] | None = None) -> AsyncIterator[Change]:
        """Yield a `Change(key, status)` for each job change in this queue."""
        async with self.subscribe(keys) as sub:
            async for change in sub:
                yield change

    async def notify(self, job: Job) -> None:
        await self.redis.publish(self.keys.changes, message(Status(job.status).value, job.key))

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
        poll_interval: float = 0.5,
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


async def list_queues(redis: aioredis.Redis) -> list[str]:
    """Names of the queues registered on this Redis (by connect/enqueue/workers)."""
    async with cluster.client_for(redis, redis_keys.QUEUES_KEY) as client:
        return sorted(text(n) for n in await client.smembers(redis_keys.QUEUES_KEY))


def _abandon(notifiers: tuple[Notifier, ...]) -> None:
    for notifier in notifiers:
        notifier.abandon()
