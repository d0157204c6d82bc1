"""Dashboard fixtures: a queue on the per-test flushed Redis, `podq web` servers and
in-process workers, all stopped at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from web_helpers import Dashboard, Workers

from podq import Queue


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[Queue]:
    q = Queue.from_url(redis_url, name="web")
    await q.connect()
    yield q
    await q.disconnect()


@pytest.fixture
async def dashboard(redis_url: str) -> AsyncIterator[Callable[..., Awaitable[Dashboard]]]:
    """dashboard(token=None, queues=None, url=None) starts a `podq web`."""
    started: list[Dashboard] = []

    async def start(token: str | None = None, queues: list[str] | None = None,
                    url: str | None = None) -> Dashboard:
        d = await Dashboard(url or redis_url, token, queues).start()
        started.append(d)
        return d

    yield start
    for d in started:
        await d.stop()


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    w = Workers()
    yield w
    await w.stop_all()
