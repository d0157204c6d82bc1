"""Queues the operator uses, and the listeners that turn Redis changes into callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from podq import Queue
from podq.operator import safejson
from podq.utils import Backoff

log = logging.getLogger("podq.operator")

ChangeCallback = Callable[[str, str, str], None]  # (queue name, job key, status)


class QueuePool:
    """One podq Queue per queue name on one Redis URL, created on first use.

    `listen(name)` starts (once) a task that forwards every job change of that queue to
    the registered callbacks: the status writer and the autoscaler.
    """

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._queues: dict[str, Queue] = {}
        self._listeners: dict[str, asyncio.Task[None]] = {}
        self.callbacks: list[ChangeCallback] = []

    def get(self, name: str) -> Queue:
        queue = self._queues.get(name)
        if queue is None:
            # safejson: a job record nested too deeply cannot crash the operator's reads
            queue = self._queues[name] = Queue.from_url(self.redis_url, name=name,
                                                        load=safejson.loads)
        return queue

    def names(self) -> list[str]:
        return list(self._queues)

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
                async for change in queue.changes():
                    backoff.reset()
                    status = getattr(change.status, "value", change.status)
                    for callback in self.callbacks:
                        callback(name, change.key, status)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # Redis away: the periodic reconcile covers the gap
                log.warning("change listener of queue %s failed (%s); retrying", name, error)
                await asyncio.sleep(backoff.next())

    async def close(self) -> None:
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
