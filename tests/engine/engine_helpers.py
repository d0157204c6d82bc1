"""Helpers of the engine tests: fast worker timers, in-process workers and the job
functions they run (FUNCTIONS), `podq worker` processes, waiting; a proxy to Redis that
drops a reply (test_faults*.py); the functions and the runner (`both`) of the scenarios
run on SAQ and on podq (test_saq_side_by_side*.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import types
import typing as t
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import saq

import podq
from podq import Job, Queue, Status, Worker
from podq.testing import free_port

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


# -- a proxy to Redis that drops a reply (test_faults*.py) ---------------------------


async def relay(directions: list[t.Any], writers: list[asyncio.StreamWriter]) -> None:
    """Run a proxy connection's two directions until one ends, then close both sides."""
    tasks = [asyncio.create_task(direction) for direction in directions]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for writer in writers:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class RedisProxy:
    """A TCP proxy on a free loopback port (or listen_port) to the Redis on port:
    `async with Proxy(port) as proxy:` Redis at `proxy.url`; `_serve` relays a
    connection (ReplyDroppingProxy; version_proxy.OldVersionProxy)."""

    def __init__(self, port: int, listen_port: int | None = None) -> None:
        self.port = port
        self.listen_port = listen_port or free_port()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> t.Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.listen_port}/0"

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class ReplyDroppingProxy(RedisProxy):
    """A TCP proxy to Redis that, once armed with some bytes, forwards the next command
    containing them and then drops the connection instead of passing the reply on."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.marker: bytes | None = None
        self.dropped = 0

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.port)
        drop = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.marker is not None and self.marker in data:
                    self.marker = None
                    drop.set()
                redis_w.write(data)
                await redis_w.drain()

        async def downstream() -> None:
            while data := await redis_r.read(65536):
                if drop.is_set():  # the reply to the marked command: lost
                    self.dropped += 1
                    return
                client_w.write(data)
                await client_w.drain()

        await relay([upstream(), downstream()], [client_w, redis_w])


# -- SAQ and podq side by side (test_saq_side_by_side*.py) --------------------


async def noop(ctx: dict[str, t.Any]) -> int:
    return 1


async def error(ctx: dict[str, t.Any]) -> None:
    raise ValueError("oops")


def blocking() -> tuple[asyncio.Event, tuple[str, t.Callable[..., t.Any]]]:
    """A function that runs until cancelled, and the event it sets once running."""
    running = asyncio.Event()

    async def block(ctx: dict[str, t.Any]) -> None:
        running.set()
        await asyncio.sleep(3600)

    return running, ("block", block)


async def both(
    queues: dict[types.ModuleType, t.Any],
    scenario: t.Callable[[types.ModuleType, t.Any], t.Awaitable[t.Any]],
) -> tuple[t.Any, t.Any]:
    return await scenario(saq, queues[saq]), await scenario(podq, queues[podq])


def gated() -> tuple[threading.Event, threading.Event, dict[str, int], t.Callable[..., t.Any]]:
    """A sync function that blocks its thread until the gate opens, then notes (epoch
    ms) when it ended: (started, gate, ended, function)."""
    started, gate, ended = threading.Event(), threading.Event(), {}

    def work(ctx: dict[str, t.Any]) -> str:
        started.set()
        gate.wait(30)
        ended["ms"] = int(time.time() * 1000)
        return "side effect done"

    return started, gate, ended, work


async def until(condition: t.Callable[[], bool], within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def redis_clock_past(queue: Queue, ms: float, deadline_s: float = 30) -> None:
    """Wait until Redis's clock (queue.redis_ms()) has passed ms (epoch), or fail after
    deadline_s: so that what the next step stamps on it cannot pass for the last's."""

    async def past() -> bool:
        return await queue.redis_ms() > ms

    await wait_for(past, deadline_s, step=0.005)


def command_calls(client: Any) -> dict[str, int]:
    """Redis's count of calls per command so far (INFO commandstats; a sync client),
    those a script runs included: compare two readings with spent()."""
    return {name.removeprefix("cmdstat_"): int(stat["calls"])
            for name, stat in client.info("commandstats").items()}


def spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The calls per command between two command_calls() readings, less the INFO that
    took the second."""
    calls = {name: n - before.get(name, 0) for name, n in after.items()}
    calls["info"] -= 1
    return {name: n for name, n in calls.items() if n}
