"""A worker killed under a Job with the CRD's default `retries: 1`: the Job is not failed;
its status and an Event show the disruption; it completes on another worker."""

from __future__ import annotations

import pytest
from operator_harness import (
    Harness,
    eventually,
    status,
)


async def run_with_its_worker_killed(harness: Harness, name: str, function: str,
                                     **spec: object) -> dict:
    """Job `name` started on a worker that is SIGKILLed while it runs, another worker
    started: the Job's body once it has finished."""
    harness.start_operator()
    doomed = harness.start_worker()
    await harness.wait_workers(1)
    await harness.create_job(name, function, **spec)
    await harness.wait_status(name, "active", within=60)
    doomed.kill()
    harness.start_worker()
    return await harness.wait_job(
        name, lambda b: status(b).get("status") in ("complete", "failed", "aborted"),
        within=120, what="the Job to finish")


@pytest.mark.timeout(180)
async def test_a_killed_worker_is_a_disruption_shown_in_status_not_a_failure(
    harness: Harness,
) -> None:
    body = await run_with_its_worker_killed(harness, "survivor", "count_run",
                                            kwargs={"seconds": 8}, timeout=60)
    assert status(body)["status"] == "complete", status(body)
    assert status(body)["disruptions"] == 1
    assert status(body)["lastDisruption"]
    assert status(body)["attempts"] == 1  # the killed run used no attempt

    async def disrupted_event() -> list:
        return [e for e in await harness.events("survivor") if e.reason == "Disrupted"]
    (event,) = await eventually(disrupted_event, within=30, what="the Disrupted Event")
    assert event.type == "Normal" and "not counted as an attempt" in event.message


@pytest.mark.timeout(180)
async def test_a_swept_run_posts_no_retrying_event_and_attempts_stay_one_based(
    harness: Harness,
) -> None:
    """The run on a SIGKILLed worker is swept and put back: that is a Disrupted Event,
    never a Retrying one (it once read "attempt 0 failed: swept"). The next run is
    attempt 1 for the function and for the Events alike."""
    body = await run_with_its_worker_killed(harness, "swept", "fail_times",
                                            kwargs={"times": 1, "seconds": 4}, retries=3,
                                            timeout=60)
    assert status(body)["status"] == "complete", status(body)
    assert status(body)["disruptions"] == 1
    assert status(body)["attempts"] == 2  # attempt 1 failed on purpose, attempt 2 passed
    assert body["status"]["result"] == "succeeded on attempt 2"

    async def settled_events() -> list:
        events = await harness.events("swept")
        return events if {"Disrupted", "Completed"} <= {e.reason for e in events} else []
    events = await eventually(settled_events, within=30, what="Disrupted and Completed")
    retrying = [e.message for e in events if e.reason == "Retrying"]
    assert len(retrying) == 1, retrying
    assert retrying[0].startswith("attempt 1 failed"), retrying
    assert "swept" not in retrying[0]
    assert not [e.message for e in events if "attempt 0" in e.message]
    (completed,) = [e for e in events if e.reason == "Completed"]
    assert completed.message == "fail_times completed after 2 attempt(s)"
