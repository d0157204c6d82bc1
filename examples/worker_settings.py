"""Functions the example manifests in this folder call.

Run a worker for them with:  podq worker examples.worker_settings.settings --redis-url redis://...
(from the repository root, or with the root on PYTHONPATH).
"""

from __future__ import annotations

import asyncio
from typing import Any


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
    await asyncio.sleep(0.1)
    return f"report {name} done"


settings = {
    "functions": [add, count_words, flaky, report],
    "concurrency": 10,
}
