"""Worker settings for the metrics, drain and status tests (`podq worker
ops_settings.settings`, run with tests/engine as the working directory)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

RELEASE = "podq-test:release"  # a `hold` job returns once this Redis key holds its name


async def ok(ctx: dict) -> str:
    return "fine"


async def fail(ctx: dict) -> None:
    raise ValueError("always fails")


async def flaky(ctx: dict) -> int:
    """Fails its first attempt, completes its second."""
    if ctx["job"].attempts < 2:
        raise RuntimeError("first attempt fails")
    return ctx["job"].attempts


async def hold(ctx: dict, name: str) -> str:
    """Runs until a test releases it (no fixed duration: tests decide when it ends)."""
    redis = ctx["job"].queue.redis
    while True:
        if await redis.sismember(RELEASE, name):
            return name
        await asyncio.sleep(0.02)


async def held_then_flaky(ctx: dict, name: str) -> str:
    """Its first attempt runs until a test releases it, then fails; its second completes."""
    if ctx["job"].attempts < 2:
        await hold(ctx, name)
        raise RuntimeError("first attempt fails once released")
    return name


async def chatty(ctx: dict, words: str) -> str:
    """Logs a line of its own (the worker adds the job to it)."""
    logging.getLogger("ops_settings").warning("chatty says %s", words)
    return words


FAST = {"schedule": 0.5, "worker_info": 0.2, "sweep": 0.3, "abort": 0.2, "metrics": 0.2}

settings: dict[str, Any] = {
    "functions": [ok, fail, flaky, hold, held_then_flaky, chatty],
    "concurrency": 4,
    "timers": FAST,
    "liveness_ttl": 1.0,
}
