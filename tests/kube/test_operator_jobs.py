"""Job resources end to end: real API server, real Redis, real operator and workers."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import pytest
from operator_harness import (
    Harness,
    condition,
    eventually,
    status,
)


async def test_create_runs_to_complete_with_result_in_status(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create_job("adder", "echo", kwargs={"a": 1, "b": [2, 3]})
    body = await harness.wait_status("adder", "complete")
    assert status(body)["result"] == {"a": 1, "b": [2, 3]}
    assert status(body)["attempts"] == 1
    assert status(body)["progress"] == 1
    assert status(body)["completedTime"].endswith("Z")
    assert condition(body, "Complete")["status"] == "True"
    assert condition(body, "Ready")["status"] == "True"
    assert status(body)["observedGeneration"] == body["metadata"]["generation"]
    # kubectl wait works on the condition, and the printer columns show the state
    harness.plane.kubectl("wait", "-n", harness.namespace, "--for=condition=Complete",
                          "pqjob/adder", "--timeout=60s")
    table = harness.plane.kubectl("get", "podq", "-n", harness.namespace).stdout
    assert "echo" in table and "complete" in table
    job = await harness.queue().job(status(body)["jobKey"])
    assert job is not None and job.result == {"a": 1, "b": [2, 3]}


async def test_failure_with_retries_and_their_delay_is_visible(harness: Harness) -> None:
    harness.start_operator()
    # a fixed 3 s between attempts: retryBackoff's full jitter made the waits as short as
    # the draw (0.7 s and 0.4 s seen), which a loaded machine's status mirror could miss
    # altogether; the backoff's delays are tested in tests/engine/test_job.py
    await harness.create_job("flaky", "always_fail", retries=3, retryDelay=3,
                             kwargs={"message": "nope"})
    harness.start_worker()
    # between attempts the status says when the next one may start
    waiting = await harness.wait_job(
        "flaky", lambda b: status(b).get("nextRetryTime") is not None, within=60,
        what="a pending retry")
    assert status(waiting)["status"] == "queued" and status(waiting)["attempts"] >= 1
    assert condition(waiting, "Reconciling")["reason"] == "RetryScheduled"
    body = await harness.wait_status("flaky", "failed", within=60)
    assert status(body)["attempts"] == 3
    assert "ValueError: nope (attempt 3)" in status(body)["error"]
    failed = condition(body, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "JobFailed"
    assert "nope" in failed["message"]
    assert condition(body, "Stalled")["status"] == "True"
    harness.plane.kubectl("wait", "-n", harness.namespace, "--for=condition=Failed",
                          "pqjob/flaky", "--timeout=60s")

    async def one_warning() -> list:
        warnings = [e for e in await harness.events("flaky") if e.type == "Warning"]
        return warnings
    warnings = await eventually(one_warning, what="the failure's Warning event")
    assert len(warnings) == 1 and warnings[0].reason == "JobFailed"


async def test_timeout_fails_the_job_with_reason_timeout(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create_job("slow", "nap", kwargs={"seconds": 30}, within=1)
    body = await harness.wait_status("slow", "failed", within=30)
    assert condition(body, "Failed")["reason"] == "Timeout"
    assert "timeout" in status(body)["error"].lower()


async def test_missed_heartbeat_ends_the_job(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create_job("silent", "nap", kwargs={"seconds": 60}, heartbeat=1, within=0)
    body = await harness.wait_status("silent", "aborted", "failed", within=45)
    assert condition(body, "Failed")["status"] == "True"


async def test_unregistered_function_fails_naming_it(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create_job("typo", "no_such_function")
    body = await harness.wait_status("typo", "failed")
    failed = condition(body, "Failed")
    assert failed["reason"] == "FunctionNotRegistered"
    assert "no_such_function" in failed["message"]


async def test_deleting_a_running_job_aborts_it(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create_job("long", "nap", kwargs={"seconds": 120}, within=300)
    body = await harness.wait_status("long", "active")
    key = status(body)["jobKey"]
    await harness.delete_job("long")

    async def aborted() -> bool:
        job = await harness.queue().job(key)
        return job is not None and job.status.value == "aborted"
    await eventually(aborted, within=20, what="the job to be aborted in Redis")
    await eventually(lambda: _gone(harness, "long"), within=20, what="the resource to go")


async def _gone(harness: Harness, name: str) -> bool:
    return await harness.get_job(name) is None


async def test_ttl_seconds_after_finished_deletes_the_resource(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create_job("short-lived", "noop", ttlSecondsAfterFinished=2)
    await harness.create_job("kept", "noop")
    await harness.wait_status("kept", "complete")
    await eventually(lambda: _gone(harness, "short-lived"), within=30,
                     what="ttlSecondsAfterFinished to delete the resource")
    assert await harness.get_job("kept") is not None  # unset keeps it


async def test_oversized_kwargs_are_refused_with_a_condition(harness: Harness) -> None:
    harness.start_operator()
    await harness.create_job("huge", "echo", kwargs={"blob": "x" * 70_000})
    body = await harness.wait_status("huge", "failed")
    failed = condition(body, "Failed")
    assert failed["reason"] == "KwargsTooLarge" and "spec.kwargs" in failed["message"]
    assert await harness.queue().job(status(body)["jobKey"]) is None


async def test_redis_restarted_empty_jobs_are_enqueued_again(
    harness: Harness, redis_server
) -> None:
    harness.start_operator()
    for index in range(5):
        await harness.create_job(f"survivor-{index}", "count_run")
    for index in range(5):
        await harness.wait_status(f"survivor-{index}", "queued")
    redis_server.restart()  # comes back empty: --save "" and no AOF
    harness.start_worker()
    for index in range(5):
        body = await harness.wait_status(f"survivor-{index}", "complete", within=60)
        assert status(body)["attempts"] == 1
    runs = await harness.queue().redis.hgetall("podq-test:runs")
    assert sorted(int(v) for v in runs.values()) == [1] * 5
    events = await harness.events("survivor-0")
    assert any(e.reason == "Recovered" for e in events)


@pytest.mark.timeout(240)
async def test_operator_killed_mid_burst_loses_nothing_and_runs_nothing_twice(
    harness: Harness,
) -> None:
    operator = harness.start_operator()
    harness.start_worker()
    count = 150
    for index in range(count):
        await harness.create_job(f"burst-{index:03d}", "count_run", kwargs={"seconds": 0.05})

    async def some_done() -> bool:
        done = [j for j in await harness.list_jobs() if status(j).get("status") == "complete"]
        return len(done) >= 10
    await eventually(some_done, within=60, what="the burst to be under way")
    operator.kill()
    for index in range(count, count + 50):  # more work arrives while it is down
        await harness.create_job(f"burst-{index:03d}", "count_run")
    harness.start_operator()

    async def all_done() -> bool:
        jobs = await harness.list_jobs()
        return len(jobs) == count + 50 and all(
            status(j).get("status") == "complete" for j in jobs)
    await eventually(all_done, within=150, what="every Job to complete", interval=0.5)
    runs = await harness.queue().redis.hgetall("podq-test:runs")
    assert len(runs) == count + 50
    assert {int(v) for v in runs.values()} == {1}, "a job ran twice"


async def test_two_operators_never_enqueue_a_job_twice(harness: Harness) -> None:
    harness.start_operator()
    harness.start_operator()
    harness.start_worker()
    for index in range(40):
        await harness.create_job(f"twice-{index:02d}", "count_run")
    for index in range(40):
        await harness.wait_status(f"twice-{index:02d}", "complete", within=60)
    runs = await harness.queue().redis.hgetall("podq-test:runs")
    assert len(runs) == 40 and {int(v) for v in runs.values()} == {1}


async def test_scheduled_job_waits_for_its_time(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    # 10 s ahead: its status says Scheduled before it runs (4 s could pass before the
    # operator mirrored it on a loaded machine)
    start_at = time.time() + 10
    await harness.create_job("later", "noop", scheduled=datetime.fromtimestamp(
        math.ceil(start_at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    waiting = await harness.wait_job(
        "later", lambda b: (condition(b, "Reconciling") or {}).get("reason") == "Scheduled",
        what="the Scheduled reason")
    assert status(waiting)["status"] == "queued"
    body = await harness.wait_status("later", "complete", within=30)
    started = datetime.fromisoformat(status(body)["startedTime"].replace("Z", "+00:00"))
    assert started.timestamp() >= math.ceil(start_at) - 0.01


async def test_status_lag_at_rest_is_under_a_second(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create_job("warm-up", "noop")
    await harness.wait_status("warm-up", "complete")
    lags = []
    for index in range(5):
        await harness.create_job(f"lag-{index}", "noop")
        body = await harness.wait_job(f"lag-{index}", lambda b: status(b).get("status")
                                      == "complete", within=30, what="completion")
        seen = time.time()
        job = await harness.queue().job(status(body)["jobKey"])
        lags.append(seen - job.completed / 1000)
    lags.sort()
    # the median, polled every 0.1 s: one slow API response on a busy machine is not lag
    assert lags[2] < 1.0, lags


async def test_deleted_while_the_operator_is_down_is_aborted_when_it_returns(
    harness: Harness,
) -> None:
    operator = harness.start_operator()
    harness.start_worker()
    await harness.create_job("orphan", "nap", kwargs={"seconds": 120}, timeout=300)
    body = await harness.wait_job(
        "orphan", lambda b: status(b).get("status") == "active"
        and "podq.dev/abort-job" in b["metadata"].get("finalizers", ()), what="running")
    operator.kill()
    await harness.delete_job("orphan")
    held = await harness.get_job("orphan")
    assert held is not None and held["metadata"].get("deletionTimestamp")  # the finalizer
    harness.start_operator()
    await eventually(lambda: _gone(harness, "orphan"), within=30, what="release on return")
    job = await harness.queue().job(status(body)["jobKey"])
    assert job is not None and job.status.value in ("aborting", "aborted")


async def test_recovery_keeps_the_attempt_count(harness: Harness, redis_server) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create_job("counted", "always_fail", retries=3, retryDelay=600)
    waiting = await harness.wait_job(
        "counted", lambda b: status(b).get("attempts") == 1
        and status(b).get("status") == "queued", what="the first attempt to fail")
    assert status(waiting)["nextRetryTime"]
    redis_server.restart()  # empty: the job and its retry schedule are gone
    # enqueued again from the spec with attempts=1, so the next run is attempt 2 of 3
    body = await harness.wait_job(
        "counted", lambda b: status(b).get("attempts", 0) == 2 and "error" in status(b),
        within=60, what="attempt 2 to fail after recovery")
    assert "(attempt 2)" in status(body)["error"]
