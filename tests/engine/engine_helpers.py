"""Helpers of the engine tests: fast worker timers, in-process workers and the job
functions they run (FUNCTIONS), `podq worker` processes, waiting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from podq import Job, Queue, Status, Worker

HERE = Path(__file__).resolve().parent
PODQ = [str(Path(sys.executable).parent / "podq")]
if not Path(PODQ[0]).exists():
    PODQ = [sys.executable, "-m", "podq.cli"]

FAST_TIMERS = {"schedule": 0.5, "worker_info": 0.2, "sweep": 0.3, "abort": 0.2}

# The in-process workers' job functions (the test_worker_*.py tests); tick records its
# runs in EVENTS
EVENTS: list[str] = []


async def add(ctx: dict, a: int, b: int) -> int:
    return a + b


def sync_mul(ctx: dict, a: int, b: int) -> int:
    assert threading.current_thread() is not threading.main_thread()
    return a * b


async def fails(ctx: dict) -> None:
    raise ValueError("it broke")


async def sleeps(ctx: dict, seconds: float = 10.0) -> str:
    await asyncio.sleep(seconds)
    return "slept"


async def progress(ctx: dict) -> str:
    job: Job = ctx["job"]
    await job.update(progress=0.5, meta={"half": True})
    return "done"


async def context_keys(ctx: dict) -> list[str]:
    assert isinstance(ctx["worker"], Worker) and isinstance(ctx["queue"], Queue)
    assert ctx["job"].status is Status.ACTIVE
    return sorted(k for k in ctx if k in ("worker", "job", "queue"))


async def unserialisable(ctx: dict) -> object:
    return object()


async def tick(ctx: dict) -> None:
    EVENTS.append("tick")


FUNCTIONS = [add, sync_mul, fails, sleeps, progress, context_keys, unserialisable, tick]


class Workers:
    """Starts workers as tasks and stops them all at teardown."""

    def __init__(self) -> None:
        self.running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(self, queue: Queue, functions: Any, **kwargs: Any) -> Worker:
        kwargs.setdefault("timers", dict(FAST_TIMERS))
        kwargs.setdefault("handle_signals", False)
        worker = Worker(queue, functions, **kwargs)
        task = asyncio.create_task(worker.start())
        self.running.append((worker, task))
        await wait_for(lambda: worker._upkeep != [] or task.done(), 30)
        return worker

    async def stop_all(self) -> None:
        for worker, task in self.running:
            await worker.stop()
            await asyncio.wait_for(task, 30)


async def wait_for(
    condition: Callable[[], Any | Awaitable[Any]], deadline_s: float = 30.0, step: float = 0.02
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


def start_worker_process(
    procs: list, redis_url: str, *extra: str, settings: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """A `podq worker SETTINGS` process (run in tests/engine), added to procs; its output
    goes to a file (a full pipe would block it)."""
    log = tempfile.NamedTemporaryFile("w+", prefix="podq-worker-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [*PODQ, "worker", settings, "--redis-url", redis_url, *extra],
        cwd=HERE, stdout=log, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )
    proc.log_path = log.name  # type: ignore[attr-defined]
    log.close()
    procs.append(proc)
    return proc


def output(proc: subprocess.Popen[str]) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


class Gauge:
    """How many runs are inside a function now, and the most there ever were."""

    def __init__(self) -> None:
        self.now = self.most = 0

    def function(self, name: str, seconds: float) -> tuple[str, Any]:
        async def run(ctx: dict, **_: Any) -> str:
            self.now += 1
            self.most = max(self.most, self.now)
            try:
                await asyncio.sleep(seconds)
            finally:
                self.now -= 1
            return ctx["job"].key

        return (name, run)
