"""Worker settings for the fault tests (`podq worker fault_settings.settings`, run with
tests/engine as the working directory).

FAULTS names these settings for `start_worker_process`; runs() reads what their functions
record (test_faults*.py).

PODQ_TEST_CLOCK_SKEW_S, when set, shifts this process's wall clock (time.time) by that
many seconds: a host whose clock disagrees with the others'.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from podq import Queue

RUNS = "podq-test:runs"  # every run appends "<function>:<job key>:<pid>" here
FAULTS = "fault_settings.settings"


async def runs(queue: Queue) -> Counter[str]:
    """How many times each job key ran, from the fault_settings functions' record."""
    return Counter(r.decode().split(":")[1] for r in await queue.redis.lrange(RUNS, 0, -1))


_skew = float(os.environ.get("PODQ_TEST_CLOCK_SKEW_S") or 0)
if _skew:
    _real_time = time.time
    time.time = lambda: _real_time() + _skew  # type: ignore[assignment]


async def _record(ctx: dict, what: str) -> None:
    job = ctx["job"]
    await job.queue.redis.rpush(RUNS, f"{what}:{job.key}:{os.getpid()}")


async def kills_its_worker(ctx: dict) -> None:
    """Brings its worker down every time (as a segfault or the OOM killer would)."""
    await _record(ctx, "kills_its_worker")
    os.kill(os.getpid(), signal.SIGKILL)


async def runs_for(ctx: dict, seconds: float) -> str:
    await _record(ctx, "runs_for")
    await asyncio.sleep(seconds)
    return "ran"


async def beats(ctx: dict, seconds: float) -> str:
    """Runs for `seconds`, sending a heartbeat (job.update) every 0.2 s."""
    await _record(ctx, "beats")
    job = ctx["job"]
    end = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < end:
        await job.update(progress=0.5)
        await asyncio.sleep(0.2)
    return "beat"


async def fails_once(ctx: dict) -> str:
    """Fails its first attempt (the function's own error), completes the next."""
    await _record(ctx, "fails_once")
    if ctx["job"].attempts == 1:
        raise RuntimeError("first attempt fails")
    return "second"


FAST = {"schedule": 0.5, "worker_info": 0.2, "sweep": 0.3, "abort": 0.2}

settings: dict[str, Any] = {
    "functions": [kills_its_worker, runs_for, beats, fails_once],
    "concurrency": 2,
    "timers": FAST,
    "liveness_ttl": 1.0,
}
