"""The dashboard's one view of the queues' change feeds, shared by every browser.

One `Queue.subscribe()` per queue, however many browsers are open. Changes are
batched (every `flush_s`), recorded (the finished-jobs sets and each job's events, see
podq.queue.keys `web_*`), and sent to every connected browser as one server-sent
event with the queues' fresh counts. Every `sample_s` the queues' counters are sampled
for the charts, new queues are picked up (unless the queues were named), and a
`samples` event tells the browsers to redraw their charts.

Jobs that finished while no dashboard listened (before it started, or while its
subscription was lost) are found by a scan of the queue's job records, one SCAN step
at a time in the background, each time the subscription starts (index_finished).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import typing as t

from redis.exceptions import NoPermissionError, RedisError

from podq.job import TERMINAL_STATUSES, Status
from podq.queue import Queue, check_redis_version, list_queues
from podq.utils import cancel_and_wait
from podq.web.charts import HISTORY_S, Sample
from podq.web.data import FINISHED, FINISHED_CAP, summary

if t.TYPE_CHECKING:
    from podq.queue import Subscription

logger = logging.getLogger("podq.web")

INDEX_STEP = 1000  # job records one SCAN step of index_finished looks at
EVENTS_CAP = 50  # changes remembered per job
EVENTS_TTL_S = 24 * 3600
CLIENT_BACKLOG = 100  # events queued for a slow browser before it misses some
MAX_KEYS_PER_EVENT = 200  # job changes named in one event (the rest: counts only)


class Feed:
    """Subscriptions, recording and fan-out to browsers (each an asyncio.Queue of
    ready-to-send SSE texts)."""

    def __init__(
        self,
        url: str,
        names: list[str] | None,
        *,
        flush_s: float = 0.25,
        sample_s: float = 10.0,
    ) -> None:
        self.url = url
        self.fixed = names is not None
        self.queues: dict[str, Queue] = {}
        self._wanted = list(names or [])
        self.flush_s = flush_s
        self.sample_s = sample_s
        self.clients: set[asyncio.Queue[str]] = set()
        self._subs: dict[str, Subscription] = {}
        self._pending: list[tuple[str, str, str, int]] = []  # queue, key, status, ms
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._admin = Queue.from_url(url, name="default")  # for list_queues only
        # queues whose finished jobs are being indexed: job records looked at so far
        self.indexing: dict[str, int] = {}
        self.index_errors: dict[str, str] = {}  # queues that could not be indexed: why
        self._indexers: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Check the server (RedisVersionError when too old: podq web exits), subscribe
        to the queues and start the background loops."""
        await check_redis_version(self._admin.redis)
        await self._discover()
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="podq-web-flush"),
            asyncio.create_task(self._sample_loop(), name="podq-web-sample"),
        ]

    async def close(self) -> None:
        await cancel_and_wait([*self._tasks, *self._indexers.values()], 5.0)
        self._tasks = []
        self._indexers = {}
        for sub in self._subs.values():
            await sub.close()
        for queue in self.queues.values():
            with contextlib.suppress(Exception):
                await queue.disconnect()
        with contextlib.suppress(Exception):
            await self._admin.disconnect()

    # -- queues ------------------------------------------------------------------------

    async def _discover(self) -> None:
        names = self._wanted if self.fixed else await list_queues(self._admin.redis)
        for name in names:
            if name not in self.queues:
                await self._watch(Queue.from_url(self.url, name=name))

    async def _watch(self, queue: Queue) -> None:
        self.queues[queue.name] = queue
        sub = queue.subscribe()
        sub.notifier.callbacks.add(
            lambda key, status, name=queue.name: self._on_change(name, key, status)
        )
        await sub.notifier.start()
        self._subs[queue.name] = sub

    def _on_change(self, name: str, key: str | None, status: str) -> None:
        if key is None:  # (re)subscribed: changes may have been missed
            self._pending.append((name, "", "resync", 0))
            self._index(name)
        else:
            self._pending.append((name, key, status, int(time.time() * 1000)))
        self._wake.set()

    def _index(self, name: str) -> None:
        """Index the queue's finished jobs in the background, unless it is already."""
        running = self._indexers.get(name)
        if running is None or running.done():
            self._indexers[name] = asyncio.create_task(
                self._index_all(self.queues[name]), name=f"podq-web-index-{name}")

    async def _index_all(self, queue: Queue) -> None:
        started, cursor = time.monotonic(), 0
        self.indexing[queue.name] = 0
        try:
            while True:
                cursor, looked = await index_finished(queue, cursor)
                self.indexing[queue.name] += looked
                if not cursor:
                    break
            self.index_errors.pop(queue.name, None)
            logger.info("podq web: indexed the finished jobs of queue %s (%d records, "
                        "%.1f s)", queue.name, self.indexing[queue.name],
                        time.monotonic() - started)
        except NoPermissionError as e:  # a queue's ACL user may not SCAN
            self.index_errors[queue.name] = "this Redis user may not SCAN"
            logger.warning("podq web: cannot index the finished jobs of queue %s: %s; only "
                           "those seen finishing are listed", queue.name, e)
        except RedisError as e:  # the next resubscription indexes again
            logger.warning("podq web: indexing the finished jobs of queue %s stopped (%s)",
                           queue.name, e)
        finally:
            self.indexing.pop(queue.name, None)

    # -- browsers ----------------------------------------------------------------------

    def connect(self) -> asyncio.Queue[str]:
        client: asyncio.Queue[str] = asyncio.Queue(CLIENT_BACKLOG)
        self.clients.add(client)
        return client

    def disconnect(self, client: asyncio.Queue[str]) -> None:
        self.clients.discard(client)

    def broadcast(self, event: str, data: dict[str, t.Any]) -> None:
        message = f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        for client in list(self.clients):
            with contextlib.suppress(asyncio.QueueFull):  # a stalled browser misses it
                client.put_nowait(message)

    # -- recording ---------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.flush_s)  # let a burst gather into one event
            self._wake.clear()
            batch, self._pending = self._pending, []
            try:
                await self.flush(batch)
            except RedisError as e:
                logger.warning("podq web: cannot record changes (%s)", e)
            except Exception:
                logger.exception("podq web: recording changes failed")

    async def flush(self, batch: list[tuple[str, str, str, int]]) -> None:
        """Record a batch of changes and tell the browsers, with fresh counts."""
        by_queue: dict[str, list[tuple[str, str, int]]] = {}
        for name, key, status, at in batch:
            by_queue.setdefault(name, []).append((key, status, at))
        for name, changes in by_queue.items():
            queue = self.queues[name]
            await record(queue, [c for c in changes if c[1] != "resync"])
            counts = (await summary(queue)).as_dict()
            named = [[k, s] for k, s, _ in changes[-MAX_KEYS_PER_EVENT:] if s != "resync"]
            self.broadcast("changes", {"queue": name, "jobs": named, "counts": counts,
                                       "more": len(changes) > MAX_KEYS_PER_EVENT})

    async def _sample_loop(self) -> None:
        while True:
            try:
                if not self.fixed:
                    await self._discover()
                for queue in list(self.queues.values()):
                    await sample(queue)
                    self.broadcast("samples", {"queue": queue.name,
                                               "counts": (await summary(queue)).as_dict()})
            except RedisError as e:
                logger.warning("podq web: cannot sample the queues (%s)", e)
            except Exception:
                logger.exception("podq web: sampling the queues failed")
            await asyncio.sleep(self.sample_s)


async def record(queue: Queue, changes: list[tuple[str, str, int]], chunk: int = 2000) -> None:
    """Keep what the change feed said: each job's events, and which jobs finished with
    which status (a job that runs again leaves the finished sets)."""
    keys = queue.keys
    for i in range(0, len(changes), chunk):
        async with queue.redis.pipeline(transaction=False) as pipe:
            touched: set[str] = set()
            for key, status, at in changes[i:i + chunk]:
                events = keys.web_events(key)
                pipe.rpush(events, f"{at} {status}")
                pipe.ltrim(events, -EVENTS_CAP, -1)
                pipe.expire(events, EVENTS_TTL_S)
                for finished in FINISHED:
                    if finished == status:
                        pipe.zadd(keys.web_finished(finished), {key: at})
                        touched.add(finished)
                    elif _leaves_finished(status):
                        pipe.zrem(keys.web_finished(finished), key)
            for finished in touched:
                pipe.zremrangebyrank(keys.web_finished(finished), 0, -FINISHED_CAP - 1)
            await pipe.execute()


def _leaves_finished(status: str) -> bool:
    try:
        return Status(status) not in TERMINAL_STATUSES
    except ValueError:
        return False


async def sample(queue: Queue) -> Sample:
    """Write one sample of the queue's counters (for the charts) and drop old ones."""
    at_ms = await queue.redis_ms()
    stats = await queue.stats()
    point = Sample(at_ms, stats["complete"], stats["failed"], stats["aborted"])
    async with queue.redis.pipeline(transaction=False) as pipe:
        pipe.zadd(queue.keys.web_samples, {point.member(): at_ms / 1000})
        pipe.zremrangebyscore(queue.keys.web_samples, "-inf", at_ms / 1000 - HISTORY_S)
        await pipe.execute()
    return point


async def index_finished(queue: Queue, cursor: int = 0, count: int = INDEX_STEP
                         ) -> tuple[int, int]:
    """One SCAN step over the queue's job records from cursor: the finished ones
    (complete, failed, aborted) go into the finished sets, scored by when they finished.
    Reads each record's status and finish time only. Returns the next cursor (0: done)
    and how many records it looked at."""
    cursor, found = await queue.scan_job_fields(cursor, count, ("status", "completed"))
    by_status: dict[str, dict[str, int]] = {}
    for key, (status, completed) in found:
        if status in FINISHED and completed and completed.isdigit():
            by_status.setdefault(status, {})[key] = int(completed)
    if by_status:
        async with queue.redis.pipeline(transaction=False) as pipe:
            for status, members in by_status.items():
                pipe.zadd(queue.keys.web_finished(status), members)
                pipe.zremrangebyrank(queue.keys.web_finished(status), 0, -FINISHED_CAP - 1)
            await pipe.execute()
    return cursor, len(found)
