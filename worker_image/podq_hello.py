"""Demo functions shipped in the podq worker image, so a fresh install runs jobs at once.

    podq worker podq_hello.settings

Your own image replaces them: build FROM the podq worker image, copy your module, and
point the chart's `workers.settings` (or the image's CMD) at your settings.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

# the worker logs to stderr: these lines are what `kubectl logs` of a worker pod shows
logger = logging.getLogger("podq_hello")


async def echo(ctx: dict[str, Any], *, message: str = "hello from podq") -> dict[str, str]:
    """Return the message and the pod that ran it."""
    logger.info("echo %r (job %s)", message, ctx["job"].key)
    return {"message": message, "worker": socket.gethostname()}


async def sleep(ctx: dict[str, Any], *, seconds: float = 1.0) -> float:
    """Sleep, reporting progress; returns the seconds slept."""
    job = ctx["job"]
    logger.info("sleeping %ss (job %s)", seconds, job.key)
    steps = max(1, int(seconds))
    for step in range(steps):
        await asyncio.sleep(seconds / steps)
        await job.update(progress=(step + 1) / steps)
    return seconds


async def fail(ctx: dict[str, Any], *, message: str = "failed on purpose") -> None:
    """Raise, to see retries and the Failed condition."""
    raise RuntimeError(message)


settings = {
    "functions": [echo, sleep, fail],
    "concurrency": 10,
}
