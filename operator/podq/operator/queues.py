"""Queues the operator uses, and the listeners that turn Redis changes into callbacks;
the one Redis error that stops the operator (Halt)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator

from podq import Queue
from podq.errors import RedisVersionError
from podq.operator import safejson
from podq.queue import check_redis_version
from podq.utils import Backoff

log = logging.getLogger("podq.operator")

ChangeCallback = Callable[[str, str, str], None]  # (queue name, job key, status)
QueueUser = Callable[[str], bool]  # does this user still need the queue of that name?


class Halt:
    """Stops the operator for an error no retry mends: a Redis too old for podq
    (RedisVersionError). It logs the error once, sets `flag` (kopf's stop flag: the
    operator shuts down as on SIGTERM) and keeps `error` for main() to exit with."""

    def __init__(self) -> None:
        self.flag = asyncio.Event()
        self.error: Exception | None = None

    def __call__(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
            log.critical("%s; the operator stops", error)
        self.flag.set()


class QueuePool:
    """One podq Queue per queue name on one Redis URL, created on first use.

    `listen(name)` starts (once) a task that forwards every job change of that queue to
    the registered callbacks: the status writer and the autoscaler. `release(name)`
    closes both again once no user needs the queue: `users` answer for what they hold
    (the Job registry: a Job resource of that queue; the autoscaler: a Deployment on
    it), `kept` names are never closed, and a queue `borrowed()` for a call (a pass
    reading or writing it) is not closed under it. A listener checks the server's
    version each time it subscribes: one too old for podq calls `halt`.

    A user that stops needing a queue says so with `left(name)`; `run_releases()` (one
    task of the operator) then releases it unless it is still needed, or once the
    borrows of it end. One path for every reason a queue goes: tenants choose queue
    names freely, and each name ever used kept a connection pool and a listener open.
    """

    def __init__(self, redis_url: str, halt: Halt | None = None) -> None:
        self.redis_url = redis_url
        self.halt = halt or Halt()
        self._queues: dict[str, Queue] = {}
        self._listeners: dict[str, asyncio.Task[None]] = {}
        self._borrowed: Counter[str] = Counter()
        self.callbacks: list[ChangeCallback] = []
        self.users: list[QueueUser] = []
        self.kept: set[str] = set()
        self.unused: set[str] = set()  # left by a user: released by run_releases()
        self._left = asyncio.Event()

    def get(self, name: str) -> Queue:
        queue = self._queues.get(name)
        if queue is None:
            # safejson: a job record nested too deeply cannot crash the operator's reads
            queue = self._queues[name] = Queue.from_url(self.redis_url, name=name,
                                                        load=safejson.loads)
        return queue

    def names(self) -> list[str]:
        """The queues open now: a Queue (its connections) or a listener."""
        return list(dict.fromkeys([*self._queues, *self._listeners]))

    def keep(self, name: str) -> None:
        """Listen to this queue for as long as the pool runs."""
        self.kept.add(name)
        self.listen(name)

    @contextlib.contextmanager
    def borrowed(self, name: str) -> Iterator[Queue]:
        """The queue, not released until the block ends (a pass reading or writing it,
        the abort of a Job resource already forgotten); after the last borrow, a queue
        no user needs is released."""
        self._borrowed[name] += 1
        try:
            yield self.get(name)
        finally:
            self._borrowed[name] -= 1
            if not self._borrowed[name]:
                del self._borrowed[name]
                if not self.needed(name):  # left while borrowed, or opened for this call
                    self.left(name)

    def needed(self, name: str) -> bool:
        return name in self.kept or name in self._borrowed or any(
            user(name) for user in self.users)

    def left(self, name: str) -> None:
        """A user no longer needs this queue: run_releases() closes it unless another
        user needs it then (that one says left() in turn when it is done)."""
        if name not in self.kept:
            self.unused.add(name)
            self._left.set()

    async def run_releases(self) -> None:
        """Release the queues users left, as they leave (runs for as long as the pool)."""
        while True:
            await self._left.wait()
            self._left.clear()
            try:
                await self.release_unused()
            except Exception:  # a user's answer failed: the others still go
                log.exception("releasing unused queues failed")

    async def release_unused(self) -> None:
        """Release each queue left since the last call unless a user still needs it; one
        borrowed for a call now is kept for after the borrow (which calls left() again)."""
        for name in list(self.unused):
            if name in self._borrowed:
                continue
            self.unused.discard(name)
            await self.release(name)

    async def release(self, name: str) -> bool:
        """Stop the queue's listener and close its connections unless it is still
        needed (see the class); returns whether it is closed now. A later get() or
        listen() opens it again."""
        if self.needed(name):
            return False
        task = self._listeners.pop(name, None)
        queue = self._queues.pop(name, None)  # both gone before the first await
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if queue is not None:
            with contextlib.suppress(Exception):
                await queue.disconnect()
            log.info("queue %s released: nothing the operator tracks uses it", name)
        return True

    def listen(self, name: str) -> None:
        task = self._listeners.get(name)
        if task is None or task.done():
            self._listeners[name] = asyncio.create_task(
                self._forward(name), name=f"podq-operator-changes-{name}"
            )

    async def _forward(self, name: str) -> None:
        queue = self.get(name)
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                # each (re)subscription checks the server first: an outage is retried,
                # a version too old for podq (sharded pub/sub) stops the operator
                await check_redis_version(queue.redis)
                async for change in queue.changes():
                    backoff.reset()
                    status = getattr(change.status, "value", change.status)
                    for callback in self.callbacks:
                        callback(name, change.key, status)
            except asyncio.CancelledError:
                raise
            except RedisVersionError as error:
                self.halt(error)
                return
            except Exception as error:  # Redis away: the periodic reconcile covers the gap
                log.warning("change listener of queue %s failed (%s); retrying", name, error)
                await asyncio.sleep(backoff.next())

    async def close(self) -> None:
        self.unused.clear()
        for task in self._listeners.values():
            task.cancel()
        for task in self._listeners.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for queue in self._queues.values():
            with contextlib.suppress(Exception):
                await queue.disconnect()
        self._listeners.clear()
        self._queues.clear()
