"""Notifications of a queue: one pub/sub reader per channel and Queue object, fanned
out to in-process callbacks; subscriptions to job changes and to worker wake-ups.

The channels are sharded (SPUBLISH from the scripts, SSUBSCRIBE here; Redis 7.0 or
later): their names carry the queue's hash tag, so on a Redis Cluster a message stays
within the shard that owns the queue's slot instead of crossing the cluster bus to
every node, and the reader subscribes on that shard's primary (the queue's own pool,
podq.queue.cluster). On a lone Redis they behave as plain PUBLISH/SUBSCRIBE. When the
slot leaves the node (a failover demotes it, resharding moves the slot) Redis ends the
subscription with an `sunsubscribe`: the reader subscribes again on the slot's owner
and tells its callbacks to resync, as after a lost connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import typing as t

from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from podq.job import Status
from podq.queue import cluster
from podq.queue.store import text
from podq.utils import Backoff, cancel_and_wait, cancel_requested

if t.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

logger = logging.getLogger("podq")

# a callback gets (job key, status) per change, and (None, "resync") after a
# (re)subscribe, meaning messages may have been missed
Listener = t.Callable[[str | None, str], None]


class ChannelMovedError(RedisConnectionError):
    """Redis ended the subscription itself (`sunsubscribe`): the queue's slot left the
    node (failover, resharding); the reader subscribes again on the slot's owner."""


class Change(t.NamedTuple):
    """One job change in a queue, as carried by its pub/sub channel."""

    key: str
    status: Status


def message(status: str, key: str = "") -> str:
    """The text published on a channel: `<status>:<key>` (what the scripts publish)."""
    return f"{status}:{key}"


# readers of dropped queues, cancelled and finishing: held until done, since a task
# waiting on a socket is otherwise only weakly reachable (asyncio streams hold their
# reader weakly) and would be destroyed pending
_STOPPING: set[asyncio.Task[None]] = set()


async def _close_bounded(close: Callable[[], Awaitable[t.Any]], seconds: float = 1.0) -> None:
    """Await close() for at most seconds, ignoring its errors; nothing when the
    coroutine is being closed (GeneratorExit) or has no loop: nothing can be awaited."""
    if isinstance(sys.exc_info()[1], GeneratorExit):
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    with contextlib.suppress(BaseException):
        async with asyncio.timeout(seconds):  # no task of its own, unlike wait_for
            await close()


class Notifier:
    """One pub/sub connection to one channel, fanned out to in-process callbacks."""

    def __init__(self, redis: aioredis.Redis, channel: str, queue_name: str) -> None:
        self.redis = redis
        self.channel = channel
        self.queue_name = queue_name
        self.callbacks: set[Listener] = set()
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self, timeout: float = 10.0) -> None:
        """Make sure the channel is subscribed; ConnectionError if Redis cannot be
        reached within timeout seconds (the reader keeps trying meanwhile)."""
        if self.task is None or self.task.done():
            self.ready = asyncio.Event()
            self.task = asyncio.create_task(self._run(), name=f"podq-notify-{self.channel}")
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
        pool = self.redis.connection_pool
        own = type(pool)(connection_class=pool.connection_class, **pool.connection_kwargs)
        return aioredis.Redis(connection_pool=own)

    async def _run(self) -> None:
        client = self._client()
        try:
            await self._listen(client)
        finally:
            await _close_bounded(lambda: client.aclose(close_connection_pool=True))

    async def _listen(self, client: aioredis.Redis) -> None:
        backoff = Backoff(0.1, 5.0)
        while not cancel_requested():
            pubsub = client.pubsub()
            try:
                await pubsub.ssubscribe(self.channel)
                async for msg in pubsub.listen():
                    kind = text(msg["type"])
                    if kind == "smessage":
                        status, _, key = text(msg["data"]).partition(":")
                        self._dispatch(key, status)
                    elif kind == "ssubscribe":
                        backoff.reset()
                        self.ready.set()
                        self._dispatch(None, "resync")
                    elif kind == "sunsubscribe":  # never asked for: the slot left the node
                        node = pubsub.connection
                        if node is not None:
                            cluster.slot_left(client, node.host, node.port)
                        raise ChannelMovedError(f"{self.channel} unsubscribed by Redis")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.ready.clear()
                delay = backoff.next()
                logger.warning(
                    "podq: lost the notification channel of queue %s (%s); reconnecting in %.1fs",
                    self.queue_name,
                    e,
                    delay,
                )
                await asyncio.sleep(delay)
            finally:
                # bounded: closing can hang when the pool was closed underneath
                await _close_bounded(pubsub.aclose)

    def abandon(self) -> None:
        """Stop the reader of a queue dropped without disconnect(), from its finalizer
        (podq.queue.redis): cancelled, it closes its connection and ends, held until
        then. If its loop stops or closes first, it can never run again: it then goes
        without the "Task was destroyed but it is pending" error (it was told to stop)."""
        task, self.task = self.task, None
        if task is None or task.done():
            return
        task._log_destroy_pending = False  # type: ignore[attr-defined]
        loop = task.get_loop()
        if loop.is_closed():
            return
        _STOPPING.add(task)
        task.add_done_callback(_STOPPING.discard)
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is loop:
            task.cancel()
        else:
            loop.call_soon_threadsafe(task.cancel)

    async def close(self) -> None:
        task, self.task = self.task, None
        if task is None:
            return
        # bounded: a swallowed cancel (see cancel_and_wait) must not hang the closer
        if await cancel_and_wait([task], 5.0):
            logger.warning(
                "podq: the notification reader of queue %s did not stop", self.queue_name
            )
        elif not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()


class Subscription:
    """Async iterator of `Change`s in a queue (optionally only for some keys)."""

    def __init__(self, notifier: Notifier, keys: Iterable[str] | None = None) -> None:
        self.notifier = notifier
        self.keys = set(keys) if keys is not None else None
        self._items: asyncio.Queue[Change] = asyncio.Queue()
        self.changed = asyncio.Event()
        # set on a resubscription (not the first): changes may have been missed
        self.resynced = asyncio.Event()

    def _on_change(self, key: str | None, status: str) -> None:
        if key is None:
            self.changed.set()
            self.resynced.set()
            return
        if self.keys is None or key in self.keys:
            try:
                change = Change(key, Status(status))
            except ValueError:
                return
            self._items.put_nowait(change)
            self.changed.set()

    async def start(self) -> Subscription:
        self.notifier.callbacks.add(self._on_change)
        await self.notifier.start()
        self.resynced.clear()  # the first subscription: nothing missed yet
        return self

    async def close(self) -> None:
        self.notifier.callbacks.discard(self._on_change)

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


class WakeSubscription:
    """A callback on a queue's wake channel (ready work, aborts), for workers.

    The callback gets (key, status): (key or "", "queued") when work became ready,
    (key, "aborting") when a running job is to be aborted, (None, "resync") after a
    (re)subscribe (messages may have been missed meanwhile). The channel's reader
    stops when its last subscription closes.
    """

    def __init__(self, notifier: Notifier, callback: Listener) -> None:
        self.notifier = notifier
        self.callback = callback

    async def start(self) -> WakeSubscription:
        self.notifier.callbacks.add(self.callback)
        await self.notifier.start()
        return self

    async def close(self) -> None:
        self.notifier.callbacks.discard(self.callback)
        if not self.notifier.callbacks:
            await self.notifier.close()

    async def __aenter__(self) -> WakeSubscription:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = [
    "Change", "ChannelMovedError", "Listener", "Notifier", "Subscription", "WakeSubscription",
    "message",
]
