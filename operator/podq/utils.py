"""Small helpers shared by the engine: clock, backoff, JSON checks, task cancelling."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import typing as t
import uuid
from typing import Any

if t.TYPE_CHECKING:
    from collections.abc import Iterable


def now() -> int:
    """Current time in epoch milliseconds (the unit of queued/started/touched/completed)."""
    return int(time.time() * 1000)


def now_seconds() -> float:
    """Current time in epoch seconds (the unit of `scheduled`)."""
    return time.time()


def new_request_id() -> str:
    """A fresh id for one request to Redis that must be safe to resend (a take, an
    enqueue): the scripts recognise a request they already carried out by it."""
    return os.urandom(8).hex()


# uuid.uuid1() without arguments asks libuuid's time-safe generator, a system call that
# costs three times the rest of the work: given a node and a clock sequence, the standard
# library computes the same kind of uuid in Python (monotonic within the process). The
# clock sequence is random per process, and drawn again in a forked child, so processes
# on one host do not collide.
_NODE = uuid.getnode()
_clock_seq = random.getrandbits(14)


def _reseed_clock_seq() -> None:
    global _clock_seq
    _clock_seq = random.getrandbits(14)


os.register_at_fork(after_in_child=_reseed_clock_seq)


def uuid1() -> str:
    return str(uuid.uuid1(_NODE, _clock_seq))


def millis(s: float) -> float:
    return s * 1000


def seconds(ms: float) -> float:
    return ms / 1000


def exponential_backoff(
    attempts: int, base_delay: float, max_delay: float | None = None, jitter: bool = True
) -> float:
    """`base_delay * 2**(attempts-1)`, capped at max_delay, then full jitter."""
    cap = float("inf") if max_delay is None else max_delay
    backoff = min(cap, base_delay * 2 ** max(attempts - 1, 0))
    return backoff * random.random() if jitter else backoff


class Backoff:
    """The delays between retries of something that failed: `first`, doubling up to
    `cap` (exponential_backoff without jitter); `reset()` once it works again.

        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                await call(); backoff.reset()
            except ConnectionError:
                await asyncio.sleep(backoff.next())
    """

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        """The delay before the next retry (counting one more failure)."""
        self.failures += 1
        return exponential_backoff(self.failures, self.first, self.cap, jitter=False)

    def reset(self) -> None:
        self.failures = 0


_PATH_DEPTH = 20  # deeper than this, a path is not worth spelling out


def _describe_path(value: Any, path: str, depth: int = 0) -> str | None:
    """The first path inside value that json cannot encode, or None."""
    try:
        json.dumps(value)
        return None
    except (TypeError, ValueError, RecursionError):
        pass
    if depth >= _PATH_DEPTH:
        return f"{path}... is nested too deeply"
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int | float | bool) and k is not None:
                return f"{path} has a key of type {type(k).__name__}"
            found = _describe_path(v, f"{path}[{k!r}]", depth + 1)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _describe_path(v, f"{path}[{i}]", depth + 1)
            if found:
                return found
    return f"{path} is a {type(value).__name__}"


def json_problem(value: Any, what: str) -> str | None:
    """A readable reason why `value` is not JSON-serialisable, or None if it is."""
    try:
        json.dumps(value)
        return None
    except (TypeError, ValueError, RecursionError) as e:
        where = _describe_path(value, what)
        return f"{where}, which is not JSON-serialisable ({e})"


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], deadline_s: float
) -> set[asyncio.Task[Any]]:
    """Cancel the tasks and wait for them, cancelling again while any still runs, for
    at most deadline_s; returns the tasks still running then.

    One cancel is not enough: on Python 3.11 asyncio.wait_for (which redis-py uses to
    send every command, as socket_timeout is set) returns the result and drops the
    cancel when it arrives just as the send completes, so the task carries on.
    """
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while pending:
        for task in pending:
            task.cancel()
        left = end - loop.time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(0.2, left))
    return pending


def cancel_requested() -> bool:
    """Whether the current task was asked to cancel, even if a callee swallowed it."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_tasks(
    tasks: Iterable[asyncio.Task[Any]],
    timeout: float | None = 1.0,  # noqa: ASYNC109 (SAQ's signature)
) -> bool:
    """SAQ's: cancel the tasks and wait up to timeout s (None: until they end) for them
    to finish; whether all did."""
    return not await cancel_and_wait(tasks, float("inf") if timeout is None else timeout)
