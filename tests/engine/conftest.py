"""Engine fixtures: a queue on the per-test flushed Redis, in-process workers, `podq
worker` processes, and a queue of SAQ's and podq's each (test_saq_side_by_side*.py)."""

from __future__ import annotations

import subprocess
import types
import typing as t
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import saq
from engine_helpers import Workers

import podq
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


@pytest.fixture
async def queues(redis_url: str) -> AsyncIterator[dict[types.ModuleType, t.Any]]:
    """A queue named "test" of each library on the same Redis (their keys do not meet)."""
    made = {lib: lib.Queue.from_url(redis_url, name="test") for lib in (saq, podq)}
    for queue in made.values():
        await queue.connect()
    yield made
    for queue in made.values():
        await queue.disconnect()
