"""A worker killed under a Job with the CRD's default `retries: 1`: the Job is not failed;
its status and an Event show the disruption; it completes on another worker."""

from __future__ import annotations

import pytest
from operator_harness import (  # noqa: F401 (fixtures)
    Harness,
    eventually,
    harness_fixture,
    podq_crds_fixture,
)


def status(body: dict) -> dict:
    return body.get("status") or {}


@pytest.mark.timeout(180)
async def test_a_killed_worker_is_a_disruption_shown_in_status_not_a_failure(
    harness: Harness,
) -> None:
    harness.start_operator()
    doomed = harness.start_worker()
    await harness.wait_workers(1)
    await harness.create_job("survivor", "count_run", kwargs={"seconds": 8}, timeout=60)
    await harness.wait_status("survivor", "active", within=60)
    doomed.kill()
    harness.start_worker()
    body = await harness.wait_job(
        "survivor", lambda b: status(b).get("status") in ("complete", "failed", "aborted"),
        within=120, what="the Job to finish")
    assert status(body)["status"] == "complete", status(body)
    assert status(body)["disruptions"] == 1
    assert status(body)["lastDisruption"]
    assert status(body)["attempts"] == 1  # the killed run used no attempt

    async def disrupted_event() -> list:
        return [e for e in await harness.events("survivor") if e.reason == "Disrupted"]
    (event,) = await eventually(disrupted_event, within=30, what="the Disrupted Event")
    assert event.type == "Normal" and "not counted as an attempt" in event.message
