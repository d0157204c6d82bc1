"""Worker settings used by the CLI tests (`podq worker podq_test_settings.settings`)."""

from __future__ import annotations

import asyncio
from typing import Any


async def add(ctx: dict, a: int, b: int) -> int:
    return a + b


async def slow(ctx: dict, seconds: float = 1.0) -> str:
    await asyncio.sleep(seconds)
    return "slow done"


FAST = {"schedule": 0.5, "worker_info": 0.2, "sweep": 0.3, "abort": 0.2}

settings: dict[str, Any] = {
    "functions": [add, slow],
    "concurrency": 2,
    "timers": FAST,
    "liveness_ttl": 1.0,
}


def make_settings() -> dict[str, Any]:
    return {**settings, "queue_name": "cli"}


not_a_dict = 42
unknown_key = {**settings, "nonsense": 1}  # SAQ: Worker's TypeError, a traceback, exit 1
no_functions = {"concurrency": 2}  # SAQ starts a worker that fails every job it takes
