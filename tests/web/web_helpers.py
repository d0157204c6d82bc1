"""Helpers of the dashboard tests: a `podq web` served in the test's event loop on a
free loopback port; in-process workers and waiting on conditions come from the engine
tests' helpers."""

from __future__ import annotations

import asyncio
import errno
import re
import sys
from pathlib import Path

import aiohttp

from podq.testing import free_port
from podq.web.main import Options, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_helpers import Workers, wait_for

__all__ = ["TOKEN", "Dashboard", "Workers", "keys_of", "page", "wait_for"]

TOKEN = "s3cret-write-token"


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
        for attempt in range(3):
            ready = asyncio.Event()
            self._task = asyncio.create_task(serve(self.options, ready, self._stop))
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait([waiter, self._task], timeout=30,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if self._task.done():
                error = self._task.exception()
                if isinstance(error, OSError) and error.errno == errno.EADDRINUSE and attempt < 2:
                    # the port was taken between its choice and the bind: another one
                    self.options.port = free_port()
                    self.url = f"http://127.0.0.1:{self.options.port}"
                    continue
                self._task.result()  # raises what stopped it
            break
        assert ready.is_set(), "podq web did not start within 30 s"
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)


async def page(base: str, path: str) -> str:
    """The page at path, which must answer 200."""
    async with aiohttp.ClientSession() as s, s.get(base + path) as r:
        assert r.status == 200, path
        return await r.text()


def keys_of(body: str) -> list[str]:
    """The job keys of a jobs table, in order."""
    return re.findall(r'<tr data-key="([^"]+)"', body)
