"""Helpers of the dashboard tests: a `podq web` served in the test's event loop on a
free loopback port, in-process workers, waiting on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from podq import Queue, Worker
from podq.testing import free_port
from podq.web.main import Options, serve

TOKEN = "s3cret-write-token"
FAST_TIMERS = {"schedule": 0.5, "worker_info": 0.2, "sweep": 0.3, "abort": 0.2}


class Dashboard:
    """A running `podq web` (serve()) and its base URL."""

    def __init__(self, redis_url: str, token: str | None = None,
                 queues: list[str] | None = None) -> None:
        self.options = Options(redis_url=redis_url, port=free_port(), queues=queues,
                               token=token, sample_s=0.5)
        self.url = f"http://127.0.0.1:{self.options.port}"
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Dashboard:
        ready = asyncio.Event()
        self._task = asyncio.create_task(serve(self.options, ready, self._stop))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([waiter, self._task], timeout=10,
                           return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()  # raises what stopped it
        assert ready.is_set(), "podq web did not start within 10 s"
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 15)


class Workers:
    """Workers run as tasks, stopped at teardown."""

    def __init__(self) -> None:
        self.running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(self, queue: Queue, functions: Any, **kwargs: Any) -> Worker:
        kwargs.setdefault("timers", dict(FAST_TIMERS))
        kwargs.setdefault("handle_signals", False)
        worker = Worker(queue, functions, **kwargs)
        task = asyncio.create_task(worker.start())
        self.running.append((worker, task))
        await wait_for(lambda: worker._upkeep != [] or task.done(), 5)
        return worker

    async def stop_all(self) -> None:
        for worker, task in self.running:
            await worker.stop()
            await asyncio.wait_for(task, 10)


async def wait_for(
    condition: Callable[[], Any | Awaitable[Any]], deadline_s: float = 5.0, step: float = 0.02
) -> Any:
    """Wait until condition() is truthy (sync or async), or fail after deadline_s."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {deadline_s}s")
        await asyncio.sleep(step)
