"""spec.after in a CronJob's template: each child Job waits for the named Jobs of the
CronJob's namespace, as a Job's spec.after does (docs/operator.md, "Jobs after Jobs")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from operator_harness import (
    Harness,
    condition,
    eventually,
    status,
)

EVERY_2_SECONDS = "* * * * * */2"


def gated_cron(function: str, after: list[str]) -> dict[str, Any]:
    return {"schedule": EVERY_2_SECONDS, "successfulJobsHistoryLimit": 20,
            "failedJobsHistoryLimit": 20,
            "jobTemplate": {"spec": {"function": function, "after": after, "timeout": 60}}}


def epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


async def children(harness: Harness, cron: str) -> list[dict]:
    return await harness.list_jobs(label_selector=f"podq.dev/cronjob={cron}")


async def test_children_wait_for_the_named_job_then_run_after_it(harness: Harness) -> None:
    harness.start_operator()
    await harness.create("cronjobs", "gated", gated_cron("echo", ["gate"]))

    async def waiting_for_gate() -> dict | None:
        for child in await children(harness, "gated"):
            ready = condition(child, "Ready") or {}
            if ready.get("reason") == "WaitingForDependencies" \
                    and "Job gate does not exist" in ready.get("message", ""):
                return child
        return None
    first = await eventually(waiting_for_gate, within=30, what="a child waiting for gate")
    assert first["spec"]["after"] == ["gate"] and "jobKey" not in status(first)
    await harness.create_job("gate", "nap", kwargs={"seconds": 1})
    gate_key = status(await harness.wait_job(
        "gate", lambda b: bool(status(b).get("jobKey")), what="gate enqueued"))["jobKey"]

    async def depending_on_gate() -> bool:  # enqueued while gate is: it waits in Redis
        for child in await children(harness, "gated"):
            key = status(child).get("jobKey")
            job = await harness.queue().job(key) if key else None
            if job is not None and job.depends_on == [gate_key]:
                return True
        return False
    await eventually(depending_on_gate, within=30, what="a child enqueued depending on gate")
    harness.start_worker(concurrency=4)
    gate = await harness.wait_status("gate", "complete", within=60)
    gate_done = epoch(status(gate)["completedTime"])

    async def ran_before_and_after() -> list[dict] | None:
        done = [c for c in await children(harness, "gated") if status(c).get("status")
                == "complete"]
        fired_after = [c for c in done if epoch(c["metadata"]["creationTimestamp"]) > gate_done]
        return done if fired_after and len(done) > len(fired_after) else None
    done = await eventually(ran_before_and_after, within=60,
                            what="children fired before and after gate completed, complete")
    gate_job = await harness.queue().job(gate_key)
    for child in done:
        job = await harness.queue().job(status(child)["jobKey"])
        assert job.started >= gate_job.completed, child["metadata"]["name"]
    assert not [c for c in await children(harness, "gated") if status(c).get("status")
                == "failed"]


async def test_children_fail_when_the_named_job_failed(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create_job("broken", "always_fail")
    await harness.wait_status("broken", "failed", within=30)
    await harness.create("cronjobs", "doomed", gated_cron("echo", ["broken"]))

    async def two_failed() -> list[dict] | None:
        failed = [c for c in await children(harness, "doomed") if status(c).get("status")
                  == "failed"]
        return failed if len(failed) >= 2 else None
    for child in await eventually(two_failed, within=30, what="two children failed"):
        failed = condition(child, "Failed")
        assert failed["reason"] == "DependencyFailed" and "broken" in failed["message"]
        assert status(child)["attempts"] == 0
