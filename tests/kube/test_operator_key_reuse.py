"""A Job deleted and made again at once under the same spec.key (GitOps delete and
recreate, `kubectl replace --force`) before its run ended: the new Job waits for that
run's end and runs anew, never taking its status (previous.py). Real API server,
redis-server, worker and operator."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from operator_harness import Harness, condition, eventually, status
from operator_worker_settings import RUNS

from podq import Status
from podq.operator.jobs import CLAIM_HELD, claim_key

GATE = "podq-test:gate:running"


def ready_reason(body: dict[str, Any]) -> str:
    return (condition(body, "Ready") or {}).get("reason", "")


async def gone(harness: Harness, name: str) -> bool:
    return await harness.get_job(name) is None


async def test_a_job_made_again_while_its_run_is_aborted_or_queued_runs_anew(
    harness: Harness,
) -> None:
    harness.start_operator()
    harness.start_worker()
    queue = harness.queue()
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # one running (its function holds until aborted, and then until told to stop), one
    # queued (scheduled an hour ahead)
    await harness.create_job("running", "hold", key="running", timeout=300,
                             kwargs={"label": "running-old", "gate": GATE})
    await harness.create_job("queued", "hold", key="queued", scheduled=later,
                             kwargs={"label": "queued-old"})
    await harness.wait_status("running", "active", within=60)
    await harness.wait_status("queued", "queued", within=60)
    for name in ("running", "queued"):
        await harness.delete_job(name)
    for name in ("running", "queued"):
        await eventually(lambda name=name: gone(harness, name), within=30,
                         what=f"{name} deleted")
    for name in ("running", "queued"):
        await harness.create_job(name, "hold", key=name, kwargs={"label": f"{name}-new"})

    # the earlier run is still aborting (its function holds on): the new Job waits for
    # it, with a condition saying so and none of that run's status
    body = await harness.wait_job(
        "running", lambda b: ready_reason(b) == "WaitingForPreviousRun", within=30,
        what="the new Job waiting for the aborting run")
    assert "status" not in status(body) and "jobKey" not in status(body), status(body)
    assert "being aborted" in condition(body, "Ready")["message"]
    earlier = await queue.job(f"{harness.namespace}/running")
    assert earlier is not None and earlier.status == "aborting"
    assert earlier.kwargs["label"] == "running-old"

    await queue.redis.rpush(f"{GATE}:stop", 1)  # the aborted function ends
    for name in ("running", "queued"):
        body = await harness.wait_status(name, "complete", "failed", "aborted", within=60)
        assert status(body)["status"] == "complete", (name, status(body))
        assert status(body)["result"] == f"{name}-new"
        assert status(body)["attempts"] == 1
    runs = await queue.redis.hmget(RUNS, ["running-old", "running-old aborted",
                                          "running-new", "queued-old", "queued-new"])
    # the earlier running run ran once and was aborted; the queued one never ran
    assert runs == [b"1", b"1", b"1", None, b"1"]


async def claim_attempts(redis_url: str, claim: str, listening: asyncio.Event,
                         window_s: float) -> int:
    """How many times the operator tries to claim `claim` (SET NX) within window_s of its
    first try, as the redis-server's MONITOR shows them."""
    client = aioredis.from_url(redis_url)
    count, ends = 0, time.monotonic() + 60  # until the first try, at most
    try:
        async with client.monitor() as monitor:
            listening.set()
            while (left := ends - time.monotonic()) > 0:
                try:
                    command = (await asyncio.wait_for(monitor.next_command(), left))["command"]
                except TimeoutError:
                    break
                if command.upper().startswith("SET ") and command.split()[1] == claim:
                    count += 1
                    if count == 1:
                        ends = time.monotonic() + window_s
    finally:
        await client.aclose()
    return count


async def test_a_job_whose_key_another_jobs_fresh_claim_holds_backs_off_then_runs_anew(
    harness: Harness,
) -> None:
    """Two Jobs sharing a spec.key: the first one's run has finished, its enqueue claim
    is fresh (30 s). The second waits until that claim may be taken over, saying why,
    and looks again with a backoff, not every pass (it used to: a claim attempt and
    reads every ~0.4 s, with no status at all), then runs anew."""
    harness.start_operator("--reconcile-interval", "30")  # only its own rechecks count
    queue = harness.queue()
    key = f"{harness.namespace}/shared"
    first = await harness.create_job("first", "noop", key="shared")
    await harness.wait_status("first", "queued", within=60)
    taken, _ = await queue.take(1, "test-worker")  # a worker runs it
    await queue.finish(taken[0], Status.COMPLETE, result="first")
    await harness.wait_status("first", "complete", within=60)

    claim = claim_key(queue, key)
    listening = asyncio.Event()
    counting = asyncio.create_task(claim_attempts(harness.redis_url, claim, listening, 8.0))
    await asyncio.wait_for(listening.wait(), 30)
    await harness.create_job("second", "noop", key="shared")
    attempts = await counting
    # a backoff of 0.25 s doubling to 2 s: 7 in 8 s (the hot loop: ~20)
    assert 1 <= attempts < 12, attempts
    body = await harness.wait_job("second", lambda b: ready_reason(b) == CLAIM_HELD,
                                  within=30, what="the second Job waiting for the claim")
    assert "status" not in status(body) and "jobKey" not in status(body), status(body)
    assert first["metadata"]["uid"] in condition(body, "Ready")["message"]
    assert (await queue.job(key)).result == "first"

    # 30 s after the first Job's enqueue its claim may be taken over: the second runs anew
    body = await harness.wait_status("second", "queued", within=60)
    assert status(body)["jobKey"] == key
    assert (await queue.redis.get(claim)).decode().startswith(body["metadata"]["uid"] + " ")
    assert (await queue.job(key)).status == Status.QUEUED
