"""The Redis queue: RedisQueue, its construction, connection and notifications.

Its other parts are mixins by concern: podq.queue.redis_enqueue, redis_take,
redis_write (write-backs, aborts, sweep) and redis_read (jobs, counts, info), on
the shared state of podq.queue.redis_core.

Every key of a queue shares the hash tag `{name}` (podq.queue.keys, docs/redis-keys.md),
so a queue lives in one Redis Cluster slot and different queues spread over shards.
"""

from __future__ import annotations

import asyncio
import logging
import re
import typing as t
import weakref
from urllib.parse import urlparse

from redis import asyncio as aioredis

from podq.errors import InvalidUrlError, RedisVersionError
from podq.job import TERMINAL_STATUSES, Job, Status
from podq.queue import cluster
from podq.queue import keys as redis_keys
from podq.queue import pool as redis_pool
from podq.queue.base import DEFAULT_MAX_DISRUPTIONS
from podq.queue.batch import ScriptBatcher
from podq.queue.notify import Change, Notifier, Subscription, WakeSubscription, message
from podq.queue.redis_core import STORED_NAMES as STORED_NAMES  # re-exported
from podq.queue.redis_enqueue import EnqueueMixin
from podq.queue.redis_read import ReadMixin
from podq.queue.redis_take import TakeMixin
from podq.queue.redis_write import WriteMixin
from podq.queue.store import Scripts, text
from podq.redact import redact
from podq.utils import cancel_and_wait

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from podq.queue.notify import Listener

logger = logging.getLogger("podq")

MIN_REDIS_VERSION = (7, 0)  # sharded pub/sub (SPUBLISH, SSUBSCRIBE), the scripts' Lua
_MIN_TEXT = ".".join(map(str, MIN_REDIS_VERSION))
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def read_redis_version(reported: object) -> tuple[int, ...]:
    """The version in INFO server's redis_version (`7.2.4` -> (7, 2, 4); what follows
    the numbers, as in `7.0.0-rc1`, is ignored), else RedisVersionError naming what the
    server reported."""
    found = _VERSION.match(reported) if isinstance(reported, str) else None
    if found is None:
        raise RedisVersionError(
            f"cannot read the Redis version {reported!r} (INFO server redis_version);"
            f" podq needs Redis {_MIN_TEXT} or later")
    return tuple(int(part) for part in found.groups() if part is not None)


def redis_version(reported: object) -> tuple[int, ...]:
    """read_redis_version(reported), if it is MIN_REDIS_VERSION or later; else
    RedisVersionError naming the version and the minimum."""
    version = read_redis_version(reported)
    if version < MIN_REDIS_VERSION:
        raise RedisVersionError(
            f"Redis {reported} is too old: podq needs Redis {_MIN_TEXT} or later (sharded"
            f" pub/sub: SPUBLISH, SSUBSCRIBE)")
    return version


async def check_redis_version(redis: t.Any) -> tuple[int, ...]:
    """The version of the server redis talks to, by one INFO server, if podq can use it
    (redis_version); else RedisVersionError naming it. Queue.connect, every `podq`
    command, `podq web` and the operator check a server with this."""
    info = await redis.info("server")
    return redis_version(info.get("redis_version"))


class RedisQueue(EnqueueMixin, TakeMixin, WriteMixin, ReadMixin):
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
        self.redis, self._owns_redis = redis_pool.waiting_client(redis, self.keys.queued)
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

    def held_back_at(self) -> float:
        return cluster.held_back_at(self.redis)

    def __repr__(self) -> str:
        return f"Queue<name={self.name!r}, redis={self.redis!r}>"

    # -- connection ------------------------------------------------------------------

    async def connect(self) -> None:
        """Check the connection and the server's version (RedisVersionError below
        MIN_REDIS_VERSION: one INFO a connect), and register the queue name (for `podq
        info`)."""
        await check_redis_version(self.redis)
        await self._register()

    async def disconnect(self) -> None:
        await self._batcher.drain()
        await self._notifier.close()
        await self._wake_notifier.close()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()

    async def version(self) -> tuple[int, ...]:
        """The Redis server's version, e.g. (7, 0, 15) (SAQ's; a pre-release such as
        `7.0.0-rc1` reads as (7, 0, 0), where SAQ's raises ValueError)."""
        info = await self.redis.info("server")
        return read_redis_version(info.get("redis_version"))

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
        await self.redis.spublish(self.keys.changes, message(Status(job.status).value, job.key))

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
        """Call callback(key, status) on each change of these jobs until it returns truthy.

        After a resubscription (a lost connection; on a cluster, a failover or the slot
        moved), when messages may have been missed, callback gets each job's current
        status too."""
        keys = list(job_keys)
        if not keys:
            return

        async def called(key: str, status: Status) -> bool:
            stop = callback(key, status)
            if asyncio.iscoroutine(stop):
                stop = await stop
            return bool(stop)

        async def changes(sub: Subscription) -> None:
            async for change in sub:
                if await called(change.key, change.status):
                    return

        async def resyncs(sub: Subscription) -> None:
            while True:
                await sub.resynced.wait()
                sub.resynced.clear()
                for key, job in zip(keys, await self.jobs(keys), strict=True):
                    if job is not None and await called(key, Status(job.status)):
                        return

        async def run(sub: Subscription) -> None:
            tasks = [asyncio.create_task(changes(sub)), asyncio.create_task(resyncs(sub))]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            finally:
                await cancel_and_wait(tasks, 5.0)

        async with self.subscribe(keys) as sub:
            await asyncio.wait_for(run(sub), timeout or None)


async def list_queues(redis: aioredis.Redis) -> list[str]:
    """Names of the queues registered on this Redis (by connect/enqueue/workers).

    Only valid queue names: any queue's ACL user may add to that set, and one name such
    as 'a b' or 'x{y}' made `podq info`, `podq jobs` and `podq web` fail for everyone."""
    async with cluster.client_for(redis, redis_keys.QUEUES_KEY) as client:
        names = (text(n) for n in await client.smembers(redis_keys.QUEUES_KEY))
        return sorted(n for n in names if redis_keys.is_queue_name(n))


def _abandon(notifiers: tuple[Notifier, ...]) -> None:
    for notifier in notifiers:
        notifier.abandon()
