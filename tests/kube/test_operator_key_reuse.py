"""A Job deleted and made again at once under the same spec.key (GitOps delete and
recreate, `kubectl replace --force`) before its run ended: the new Job waits for that
run's end and runs anew, never taking its status (previous.py). Real API server,
redis-server, worker and operator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from operator_harness import Harness, condition, eventually, status
from operator_worker_settings import RUNS

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
