"""spec.after: Job resources waiting for other Job resources (docs/operator.md)."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from operator_harness import (
    Harness,
    condition,
    eventually,
    status,
)


async def test_chain_applied_in_reverse_runs_in_order(harness: Harness) -> None:
    harness.start_operator()
    # C first, naming B, which does not exist yet: C waits and says for what
    await harness.create_job("step-c", "nap", kwargs={"seconds": 0.2}, after=["step-b"])
    waiting = await harness.wait_job(
        "step-c", lambda b: (condition(b, "Ready") or {}).get("reason") == "WaitingForDependencies",
        what="step-c waiting for its dependencies")
    assert "Job step-b does not exist" in condition(waiting, "Ready")["message"]
    assert "jobKey" not in status(waiting)
    await harness.create_job("step-b", "nap", kwargs={"seconds": 0.2}, after=["step-a"])
    await harness.create_job("step-a", "nap", kwargs={"seconds": 0.2})
    # all three enqueued before any worker runs: B and C wait in the engine for theirs
    queued = await harness.wait_job(
        "step-c", lambda b: status(b).get("status") == "queued", what="step-c enqueued")
    assert condition(queued, "Ready")["reason"] == "WaitingForDependencies"
    harness.start_worker()
    bodies = {name: await harness.wait_status(name, "complete", within=60)
              for name in ("step-a", "step-b", "step-c")}
    queue = harness.queue()
    jobs = {name: await queue.job(status(body)["jobKey"]) for name, body in bodies.items()}
    assert jobs["step-b"].depends_on == [jobs["step-a"].key]
    assert jobs["step-c"].depends_on == [jobs["step-b"].key]
    assert jobs["step-b"].started >= jobs["step-a"].completed
    assert jobs["step-c"].started >= jobs["step-b"].completed


async def test_failed_dependency_fails_the_dependent(harness: Harness) -> None:
    harness.start_operator()
    # both enqueued before any worker runs, so the engine fails the dependent
    await harness.create_job("doomed", "nap", kwargs={"seconds": 5}, timeout=1, retries=1)
    await harness.create_job("next", "echo", after=["doomed"])
    await harness.wait_job("next", lambda b: bool(status(b).get("jobKey")),
                           what="next enqueued")
    harness.start_worker()
    assert condition(await harness.wait_status("doomed", "failed"), "Failed")["reason"] \
        == "Timeout"
    body = await harness.wait_status("next", "failed", within=30)
    assert condition(body, "Failed")["reason"] == "DependencyFailed"
    assert status(body)["attempts"] == 0
    # a Job naming one that has already failed fails at once, never enqueued
    await harness.create_job("broken", "always_fail")
    await harness.wait_status("broken", "failed", within=30)
    await harness.create_job("late", "echo", after=["broken"])
    body = await harness.wait_status("late", "failed", within=30)
    assert condition(body, "Failed")["reason"] == "DependencyFailed"
    assert "broken" in condition(body, "Failed")["message"]


async def test_self_reference_is_refused_at_apply(harness: Harness) -> None:
    with pytest.raises(ApiException) as refused:
        await harness.create_job("ouroboros", "echo", after=["ouroboros"])
    assert refused.value.status == 422
    assert "cannot wait for itself" in refused.value.body
    with pytest.raises(ApiException) as refused:
        await harness.create_job("not-a-name", "echo", after=["Not_A_Name"])
    assert refused.value.status == 422


async def test_a_cycle_fails_its_jobs_naming_it(harness: Harness) -> None:
    harness.start_operator()
    await harness.create_job("ping", "echo", after=["pong"])
    await harness.create_job("pong", "echo", after=["ping"])
    reasons = set()
    for name in ("ping", "pong"):
        body = await harness.wait_status(name, "failed", within=30)
        reasons.add(condition(body, "Failed")["reason"])
        assert "jobKey" in status(body) and not await harness.queue().job(status(body)["jobKey"])
    # the first found refuses itself; the other fails on it, or finds the cycle too
    assert "DependencyCycle" in reasons and reasons <= {"DependencyCycle", "DependencyFailed"}
    ping = await harness.get_job("ping")
    if condition(ping, "Failed")["reason"] == "DependencyCycle":
        assert condition(ping, "Failed")["message"].endswith("ping -> pong -> ping")


async def test_a_job_made_again_with_its_key_and_other_after_runs_after_those(
    harness: Harness,
) -> None:
    harness.start_operator()
    await harness.create_job("old-dep", "nap", kwargs={"seconds": 0.2})
    await harness.create_job("new-dep", "nap", kwargs={"seconds": 0.2})
    await harness.create_job("then", "echo", key="then", after=["old-dep"])
    await harness.wait_job("then", lambda b: status(b).get("status") == "queued",
                           what="then enqueued, waiting for old-dep")
    # deleted (its job aborted, the key's abort marker set) and made again at once with
    # the same spec.key: a new run, not the aborted one, waiting for new-dep only
    await harness.delete_job("then")
    await eventually(lambda: gone(harness, "then"), within=30, what="then deleted")
    await harness.create_job("then", "echo", key="then", after=["new-dep"])
    new_dep = status(await harness.get_job("new-dep"))["jobKey"]
    queue = harness.queue()

    async def new_run() -> bool:
        body = await harness.get_job("then")
        job = await queue.job(status(body).get("jobKey") or "none")
        return job is not None and job.depends_on == [new_dep] and \
            status(body).get("status") == "queued"
    await eventually(new_run, within=30, what="then enqueued again, waiting for new-dep")
    # its old dependency aborted (deleted) fails it no more
    await harness.delete_job("old-dep")
    await eventually(lambda: gone(harness, "old-dep"), within=30, what="old-dep deleted")
    harness.start_worker()
    body = await harness.wait_status("then", "complete", within=60)
    assert status(body)["attempts"] == 1


async def gone(harness: Harness, name: str) -> bool:
    return await harness.get_job(name) is None
