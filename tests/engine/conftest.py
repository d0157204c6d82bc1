"""Engine fixtures: a queue on the per-test flushed Redis, and in-process workers."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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


@pytest.fixture
def spawn(redis_url: str) -> Iterator[list[subprocess.Popen[str]]]:
    """`podq worker` processes started in a test (engine_helpers.start_worker_process);
    killed at teardown."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        Path(p.log_path).unlink(missing_ok=True)  # type: ignore[attr-defined]
