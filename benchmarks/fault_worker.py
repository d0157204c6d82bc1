"""The worker function of the fault suite (benchmarks/faults.py): `podq worker
fault_worker.settings` with benchmarks/ on PYTHONPATH.

Each run is written to a ledger file outside Redis (FAULTS_LEDGER), one line per event,
so that flushing or restarting Redis cannot erase the evidence: `start` when the
function begins, `done` when it returns. O_APPEND writes of one short line are atomic,
and a SIGKILLed process keeps what it already wrote.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

_ledger: int | None = None


def record(event: str, key: str, attempts: int) -> None:
    global _ledger
    if _ledger is None:
        _ledger = os.open(os.environ["FAULTS_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                          0o644)
    os.write(_ledger, f"{time.time():.3f} {event} {key} {attempts} {os.getpid()}\n".encode())


async def fault_task(ctx: dict[str, Any], *, seconds: float) -> str:
    """Runs `seconds`, never fails by itself: any failure is the infrastructure's."""
    job = ctx["job"]
    record("start", job.key, job.attempts)
    await asyncio.sleep(seconds)
    record("done", job.key, job.attempts)
    return "done"


settings = {"functions": [fault_task], "concurrency": 10}
