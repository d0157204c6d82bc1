"""Worker functions for the operator's integration tests (run as `podq worker
operator_worker_settings.settings` with tests/kube on PYTHONPATH)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

# In a pod, the hostname is the pod's name and the autoscaler maps workers to pods by
# it. These local worker processes stand in for the pods of a Deployment, so the test
# hands each one the name of the pod it plays.
if os.environ.get("PODQ_TEST_POD_NAME"):
    socket.gethostname = lambda: os.environ["PODQ_TEST_POD_NAME"]

RUNS = "podq-test:runs"  # hash: job key -> times the function ran


async def echo(ctx: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return kwargs


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def always_fail(ctx: dict[str, Any], *, message: str = "boom") -> None:
    raise ValueError(f"{message} (attempt {ctx['job'].attempts})")


async def nap(ctx: dict[str, Any], *, seconds: float) -> str:
    """Sleep without heartbeats (for timeout, heartbeat and abort tests)."""
    await asyncio.sleep(seconds)
    return "rested"


async def count_run(ctx: dict[str, Any], *, seconds: float = 0.0) -> str:
    """Record each run in Redis, so a test can prove no job ran twice."""
    job = ctx["job"]
    await job.queue.redis.hincrby(RUNS, job.key, 1)
    if seconds:
        await asyncio.sleep(seconds)
    return job.key


async def mark_run(ctx: dict[str, Any], *, seconds: float = 0.0) -> str:
    """Append "job key, start time" to the file $PODQ_TEST_RUNS_FILE once per run: a side
    effect outside Redis, so it counts every run even if Redis loses writes (a failover)."""
    key = ctx["job"].key
    with open(os.environ["PODQ_TEST_RUNS_FILE"], "a") as runs:  # noqa: ASYNC230 (tiny)
        runs.write(f"{key} {time.time()}\n")
    if seconds:
        await asyncio.sleep(seconds)
    return key


async def fail_times(ctx: dict[str, Any], *, times: int, seconds: float = 0.0) -> str:
    """Fail the first `times` attempts, then succeed; each run takes `seconds` first."""
    attempts = ctx["job"].attempts
    if seconds:
        await asyncio.sleep(seconds)
    if attempts <= times:
        raise ValueError(f"failing on purpose (attempt {attempts})")
    return f"succeeded on attempt {attempts}"


async def hold(ctx: dict[str, Any], *, label: str, gate: str = "", within: float = 120) -> str:
    """Count the run under `label` in RUNS, then wait until something is pushed to the
    Redis list `gate` (at once without one, at most `within` s). Aborted, it counts
    "<label> aborted" and goes on until something is pushed to "<gate>:stop": its job
    stays aborting until the test lets it end."""
    redis = ctx["job"].queue.redis
    await redis.hincrby(RUNS, label, 1)
    deadline = time.monotonic() + within
    try:
        while gate and time.monotonic() < deadline and not await redis.blpop([gate], 1):
            pass
    except asyncio.CancelledError:
        await redis.hincrby(RUNS, f"{label} aborted", 1)
        while time.monotonic() < deadline and not await redis.blpop([f"{gate}:stop"], 1):
            pass
        raise
    return label


async def nan_result(ctx: dict[str, Any]) -> dict[str, float]:
    """Not JSON: the status shows the strings "NaN" and "Infinity" instead."""
    return {"nan": float("nan"), "inf": float("inf")}


async def deep_result(ctx: dict[str, Any], *, depth: int) -> list[Any]:
    """A result nested `depth` levels deep."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def leak(ctx: dict[str, Any], *, text: str) -> None:
    """Log text and fail with it (a secret in a job's error must be masked everywhere)."""
    logging.getLogger("podq.test").warning("about to fail with %s", text)
    raise RuntimeError(text)


settings = {
    "functions": [echo, noop, always_fail, nap, count_run, mark_run, fail_times, hold, nan_result,
                  deep_result, leak],
    "concurrency": int(os.environ.get("PODQ_TEST_CONCURRENCY", "20")),
}
