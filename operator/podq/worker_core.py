"""What the parts of a Worker share (podq.worker, worker_run, worker_abort,
worker_upkeep): a run of one attempt (_Run), calling a function whether async or sync
(in a thread that a cancel outlives), and retrying a Redis call through an outage.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import logging
import typing as t
from concurrent.futures import ThreadPoolExecutor

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from podq.job import Job
from podq.queue import Queue
from podq.utils import Backoff

if t.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

logger = logging.getLogger("podq")

Context = dict[str, t.Any]
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


@dataclasses.dataclass(eq=False)
class _Run:
    """One attempt of a job on this worker, from its take until it is written back.
    Runs are told apart by attempt id, not job key: the same key can be taken again
    (swept, re-enqueued after Redis lost it) while a stale run of it still ends."""

    job: Job
    task: asyncio.Task[None] | None = None
    executing: bool = True  # the function or its hooks still run: it holds a slot
    abort_error: str | None = None  # why it was cancelled, when an abort did it
    timed_out: bool = False  # cancelled by its job's timeout (podq.deadlines)


class WorkerCore:
    """The state and helpers the parts of Worker share (Worker sets them up in its
    __init__)."""

    queue: Queue
    id: str
    pool: ThreadPoolExecutor
    timers: dict[str, float]
    _executing: int
    _stop_event: asyncio.Event
    _runs: dict[str, _Run]

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    @property
    def executing(self) -> int:
        """Runs holding a slot: their function or hooks still run."""
        return self._executing

    def _run_tasks(self) -> list[asyncio.Task[None]]:
        return [run.task for run in self._runs.values() if run.task is not None]

    async def _retrying(
        self, what: str, fn: Callable[[], Awaitable[t.Any]], forever: bool = False
    ) -> t.Any:
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                return await fn()
            except REDIS_ERRORS as e:
                if self._stop_event.is_set() and not forever:
                    raise
                delay = backoff.next()
                logger.warning(
                    "podq: %s failed, Redis unreachable (%s); retrying in %.1fs", what, e, delay
                )
                await asyncio.sleep(delay)

    async def _call(self, fn: Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
        if asyncio.iscoroutinefunction(fn):
            return await fn(*args, **kwargs)
        ctx = contextvars.copy_context()
        thread = self.pool.submit(ctx.run, fn, *args, **kwargs)
        ended = asyncio.wrap_future(thread)
        try:
            result = await asyncio.shield(ended)
        except asyncio.CancelledError:
            await _outlive(thread, ended)
            raise
        if asyncio.iscoroutine(result):
            result = await result
        return result


async def _outlive(thread: concurrent.futures.Future[t.Any], ended: asyncio.Future[t.Any]) -> None:
    """Wait for a sync function's thread, which cannot be interrupted, through any
    number of cancels: its job is written back (aborted, timed out, put back) only once
    it has ended, so it never runs twice at once nor ends after "aborted"."""
    if thread.cancel():  # it had not started
        return
    while not ended.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([ended])
    if not ended.cancelled():
        ended.exception()  # what it raised is moot now: the run was cancelled
