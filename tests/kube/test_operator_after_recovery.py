"""spec.after across Redis data loss: a Job enqueued again from its resource after a
FLUSHALL still waits for its dependencies, resolved again from their resources
(podq.operator.after.resolve_lost); and `kubectl get` says why a Job waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from operator_harness import (
    Harness,
    condition,
    eventually,
    status,
)
from test_metrics_and_status import scrape

from podq.testing import free_port


def reason(body: dict) -> str | None:
    return (condition(body, "Ready") or {}).get("reason")


async def lost_and_enqueued_again(harness: Harness, name: str) -> dict:
    """Wait until the job of Job `name` is in Redis again after the flush; its record."""
    key = status(await harness.get_job(name))["jobKey"]

    async def back() -> object:
        return await harness.queue().job(key)
    return await eventually(back, within=30, what=f"the job of {name} enqueued again")


async def test_flushed_while_waiting_still_runs_after_its_dependency(harness: Harness) -> None:
    operator = harness.start_operator()
    await harness.create_job("first", "nap", kwargs={"seconds": 2})
    await harness.create_job("then", "echo", after=["first"])
    waiting = await harness.wait_job(
        "then", lambda b: status(b).get("status") == "queued" and reason(b) ==
        "WaitingForDependencies", what="then enqueued, waiting for first")
    assert harness.reason_column()["then"] == "WaitingForDependencies"
    first_key = status(await harness.get_job("first"))["jobKey"]
    assert (await harness.queue().job(status(waiting)["jobKey"])).depends_on == [first_key]
    # Redis loses everything, and the operator its memory: only the resources remain
    operator.kill()
    await harness.queue().redis.flushall()
    harness.start_operator()
    then = await lost_and_enqueued_again(harness, "then")
    assert then.depends_on == [first_key]
    assert then.blocked == "dependencies"
    harness.start_worker(concurrency=4)  # room to run both at once, were "then" not waiting
    first = await harness.wait_status("first", "complete", within=60)
    done = await harness.wait_status("then", "complete", within=60)
    jobs = {name: await harness.queue().job(status(body)["jobKey"])
            for name, body in (("first", first), ("then", done))}
    assert jobs["then"].started >= jobs["first"].completed
    assert any(e.reason == "Recovered" for e in await harness.events("then"))


async def test_flushed_dependencies_resolve_from_their_resources(harness: Harness) -> None:
    harness.start_operator()
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await harness.create_job("done", "echo")
    await harness.create_job("pending", "echo", scheduled=later)  # no worker runs it yet
    await harness.create_job("both", "echo", after=["done", "pending"])
    body = await harness.wait_job(
        "both", lambda b: status(b).get("status") == "queued", what="both enqueued")
    keys = {name: status(await harness.get_job(name))["jobKey"] for name in ("done", "pending")}
    assert sorted((await harness.queue().job(status(body)["jobKey"])).depends_on) == \
        sorted(keys.values())
    harness.start_worker()
    await harness.wait_status("done", "complete")
    await harness.queue().redis.flushall()  # the operator runs on, and finds them gone
    both = await lost_and_enqueued_again(harness, "both")
    # the Complete one's record is gone with the rest: its resource says it succeeded
    assert both.depends_on == [keys["pending"]]
    assert both.status.value == "queued" and both.blocked == "dependencies"
    assert harness.reason_column()["both"] == "WaitingForDependencies"
    # the one it still waits for goes (aborted): it fails DependencyFailed, never run
    await harness.delete_job("pending")
    failed = await harness.wait_status("both", "failed", within=30)
    assert condition(failed, "Failed")["reason"] == "DependencyFailed"
    assert status(failed)["attempts"] == 0


async def test_a_lost_job_refused_for_its_dependency_counts_as_refused(
        harness: Harness) -> None:
    """Redis loses a Job waiting for spec.after, and its dependency is now a Job of
    another queue: the lost job is refused DependencyInOtherQueue, which the operator's
    status_syncs counter counts under outcome refused, like its other refusals."""
    operator = harness.start_operator()
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await harness.create_job("first", "echo", scheduled=later)
    await harness.create_job("then", "echo", after=["first"])
    await harness.wait_job("then", lambda b: status(b).get("status") == "queued"
                           and reason(b) == "WaitingForDependencies", what="then waiting")
    operator.kill()
    await harness.queue().redis.flushall()
    await harness.delete_job("first")  # our finalizer holds it until an operator runs
    port = free_port()
    harness.start_operator("--metrics-port", str(port), "--metrics-host", "127.0.0.1")

    async def gone() -> bool:
        return await harness.get_job("first") is None
    await eventually(gone, within=30, what="first released and gone")
    await harness.create_job("first", "echo", queue="other")
    failed = await harness.wait_status("then", "failed", within=30)
    assert condition(failed, "Failed")["reason"] == "DependencyInOtherQueue"
    assert scrape(port).get(("podq_operator_status_syncs_total",
                             frozenset({("outcome", "refused")}))) == 1
