"""Engine fixtures: a queue on the per-test flushed Redis, and in-process workers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from engine_helpers import Workers

from podq import Queue


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[Queue]:
    q = Queue.from_url(redis_url, name="test")
    await q.connect()
    yield q
    await q.disconnect()


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    w = Workers()
    yield w
    await w.stop_all()
