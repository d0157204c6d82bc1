"""The example functions: shipped in the podq worker image, so a fresh install runs jobs
at once, and the one module that every example uses: examples/*.yaml, examples/gitops/,
the chart's NOTES.txt and ./scripts/demo (a test checks that they name only these).

    podq worker podq_hello.settings          (in the image, or with worker_image/ on
                                               PYTHONPATH from the repository root)

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


async def add(ctx: dict[str, Any], *, a: float, b: float) -> float:
    """Return a + b."""
    return a + b


async def count_words(ctx: dict[str, Any], *, text: str) -> dict[str, int]:
    """Count words, reporting progress as it goes (`kubectl get pqjob` shows it)."""
    job = ctx["job"]
    counts: dict[str, int] = {}
    words = text.split()
    for index, word in enumerate(words, 1):
        counts[word.lower()] = counts.get(word.lower(), 0) + 1
        if index % 10 == 0:
            await job.update(progress=index / len(words))
    return counts


async def flaky(ctx: dict[str, Any], *, fail_times: int = 2) -> str:
    """Fail the first `fail_times` attempts, then succeed: shows retries with backoff."""
    attempts = ctx["job"].attempts
    if attempts <= fail_times:
        raise RuntimeError(f"attempt {attempts} failed on purpose")
    return f"succeeded on attempt {attempts}"


async def report(ctx: dict[str, Any], *, name: str = "nightly") -> str:
    """What the example CronJob runs."""
    logger.info("report %s (job %s)", name, ctx["job"].key)
    await asyncio.sleep(0.1)
    return f"report {name} done"


settings = {
    "functions": [echo, sleep, fail, add, count_words, flaky, report],
    "concurrency": 10,
}
