"""Status mapping and conditions of Job resources (pure)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from podq.operator.conditions import failure_reason
from podq.operator.jobview import JobView, view_of
from podq.operator.status import job_status, refused_status, status_patch
from podq.operator.status_values import MAX_ERROR_BYTES, MAX_RESULT_BYTES, cap_error, cap_result
from podq.queue import QUEUE_CONCURRENCY_HELD, QUEUE_RATE_HELD

NOW = 1_800_000_000.0


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def build(view: JobView, previous: dict | None = None, now: float = NOW) -> dict:
    return job_status(view, key="ns/j/u", queue="default", generation=1, previous=previous,
                      now_s=now)


def test_complete_job_has_result_and_complete_condition() -> None:
    view = JobView(status="complete", attempts=1, progress=1.0, queued=1_000, started=2_000,
                   completed=3_500, result={"sum": 3}, function="add", worker="w1")
    status = build(view)
    assert status["result"] == {"sum": 3}
    assert status["completedTime"] == "1970-01-01T00:00:03.500Z"
    cond = conditions(status)
    assert cond["Complete"]["status"] == "True"
    assert cond["Ready"]["status"] == "True"
    assert cond["Reconciling"]["status"] == "False"
    assert "Failed" not in cond
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])


def test_failed_job_names_the_error_and_is_stalled() -> None:
    view = JobView(status="failed", attempts=2, retries=2, function="boom",
                   error="Traceback...\nValueError: nope\n")
    cond = conditions(build(view))
    assert cond["Failed"]["status"] == "True"
    assert cond["Failed"]["reason"] == "JobFailed"
    assert "ValueError: nope" in cond["Failed"]["message"]
    assert cond["Stalled"]["status"] == "True"
    assert "Complete" not in cond


def test_failure_reasons() -> None:
    assert failure_reason(JobView(status="failed", error="function 'nope' is not registered"))\
        == "FunctionNotRegistered"
    assert failure_reason(JobView(status="failed", error="TimeoutError: job timed out")) \
        == "Timeout"
    assert failure_reason(JobView(status="aborted", error="swept")) == "Swept"
    assert failure_reason(JobView(status="aborted", error="deleted")) == "Aborted"


def test_retry_pending_shows_next_retry_time() -> None:
    view = JobView(status="queued", attempts=1, retries=3, scheduled=int(NOW) + 30)
    status = build(view)
    assert status["nextRetryTime"] == status["scheduledTime"]
    assert conditions(status)["Reconciling"]["reason"] == "RetryScheduled"
    later = build(JobView(status="queued", attempts=0, scheduled=int(NOW) + 30))
    assert later["nextRetryTime"] is None
    assert conditions(later)["Reconciling"]["reason"] == "Scheduled"


def test_transition_time_moves_only_when_condition_status_changes() -> None:
    queued = build(JobView(status="queued"), now=NOW)
    active = build(JobView(status="active", attempts=1), previous=queued, now=NOW + 5)
    assert conditions(active)["Reconciling"]["lastTransitionTime"] == \
        conditions(queued)["Reconciling"]["lastTransitionTime"]
    done = build(JobView(status="complete", attempts=1), previous=active, now=NOW + 9)
    assert conditions(done)["Reconciling"]["lastTransitionTime"] != \
        conditions(active)["Reconciling"]["lastTransitionTime"]


def test_large_result_and_error_are_capped_with_a_marker() -> None:
    big = {"rows": ["x" * 100] * 1000}
    capped, cut = cap_result(big)
    assert cut and isinstance(capped, str) and "truncated" in capped
    assert len(capped.encode()) <= MAX_RESULT_BYTES
    assert cap_result([1, 2]) == ([1, 2], False)
    error = "line\n" * 10_000 + "KeyError: last"
    capped_error, cut = cap_error(error)
    assert cut and capped_error.startswith("[truncated") and capped_error.endswith("KeyError: last")
    assert len(capped_error.encode()) <= MAX_ERROR_BYTES
    assert cap_result(object())[0].startswith("<object")  # not JSON: kept as its repr
    json.dumps(build(JobView(status="complete", result=big)))


def test_status_patch_is_empty_when_nothing_changed_and_nulls_dropped_fields() -> None:
    status = build(JobView(status="active", attempts=1, worker="w"))
    assert status_patch(status, status) == {}
    after = build(JobView(status="queued", attempts=1), previous=status)
    patch = status_patch(status, after)
    assert patch["status"] == "queued"
    assert patch["worker"] is None  # removed by merge-patch
    assert "resultTruncated" not in patch


def test_refused_status_is_failed_with_reason() -> None:
    status = refused_status("KwargsTooLarge", "spec.kwargs too big", key="k", queue="q",
                            generation=1, previous=None, now_s=NOW)
    assert status["status"] == "failed"
    assert conditions(status)["Failed"]["reason"] == "KwargsTooLarge"


def test_view_of_reads_engine_like_objects() -> None:
    job = SimpleNamespace(status=SimpleNamespace(value="active"), attempts=1, retries=2,
                          progress=0.5, queued=1, started=2, completed=0, scheduled=0,
                          worker_id="w9", result=None, error=None, function="f")
    view = view_of(job)
    assert view.status == "active" and view.worker == "w9" and view.progress == 0.5


def test_disruptions_are_shown_and_too_many_fail_with_reason_worker_lost() -> None:
    engine_job = SimpleNamespace(status="queued", attempts=0, disruptions=2,
                                 last_disruption="worker w1 was lost (SIGKILL)")
    status = build(view_of(engine_job))
    assert (status["disruptions"], status["lastDisruption"]) == (2, "worker w1 was lost (SIGKILL)")
    assert status["attempts"] == 0
    quiet = build(view_of(SimpleNamespace(status="queued")))
    assert quiet["disruptions"] is None and quiet["lastDisruption"] is None  # not shown
    lost = JobView(status="failed", attempts=0, disruptions=5, function="crash",
                   error="WorkerLost: the job's worker was lost 5 times")
    assert failure_reason(lost) == "WorkerLost"
    assert conditions(build(lost))["Failed"]["reason"] == "WorkerLost"


def test_progress_shows_as_a_percentage_and_duration_once_finished() -> None:
    running = build(JobView(status="active", attempts=1, progress=0.14166666666666666,
                            queued=1_000, started=2_000))
    assert running["progressPercent"] == "14%"
    assert running["duration"] is None
    done = build(JobView(status="complete", attempts=1, progress=0.0, queued=1_000,
                         started=2_000, completed=201_000))
    assert (done["progressPercent"], done["duration"]) == ("100%", "3m20s")
    failed = build(JobView(status="failed", attempts=1, progress=0.999, queued=1_000,
                           completed=46_000, error="x"))
    assert (failed["progressPercent"], failed["duration"]) == ("99%", "45s")


def test_human_duration_reads_like_kubectl() -> None:
    from podq.operator.status_values import human_duration

    cases = {0: "0s", 119: "119s", 125: "2m5s", 600: "10m", 3 * 3600 + 60: "3h1m",
             20 * 3600: "20h", 3 * 86400 + 4 * 3600: "3d4h", 30 * 86400: "30d"}
    assert {s: human_duration(s) for s in cases} == cases


def test_retried_attempts_count_every_retry_between_two_writes() -> None:
    from podq.operator.status import retried_attempts

    # the states a job that fails twice, then succeeds (retries 3), passes through
    path = [("queued", 0), ("active", 1), ("queued", 1), ("active", 2), ("queued", 2),
            ("active", 3), ("complete", 3)]
    counts = [retried_attempts(status, attempts) for status, attempts in path]
    assert counts == [0, 0, 1, 1, 2, 2, 2]
    # coalesced: whatever two states are written, the difference is the retries between
    assert retried_attempts("complete", 3) - retried_attempts(None, 0) == 2
    assert retried_attempts("active", 3) - retried_attempts("active", 1) == 2
    # a disrupted run gives its attempt back: queued again at attempts - 1, no retry
    assert retried_attempts("queued", 1) == retried_attempts("active", 2)
    assert retried_attempts("failed", 3) == 2


def test_a_job_waiting_on_a_limit_or_its_dependencies_says_so() -> None:
    for blocked, reason in (("dependencies", "WaitingForDependencies"),
                            ("concurrency", "ConcurrencyLimited"), ("rate", "RateLimited"),
                            (QUEUE_RATE_HELD, "RateLimited"),
                            (QUEUE_CONCURRENCY_HELD, "ConcurrencyLimited")):
        view = view_of(SimpleNamespace(status="queued", blocked=blocked, function="f"))
        ready = conditions(build(view))["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", reason)
        if blocked == QUEUE_RATE_HELD:
            assert ready["message"] == "waiting for the queue's rate limit"
        if blocked == QUEUE_CONCURRENCY_HELD:
            assert ready["message"] == "waiting for the queue's concurrency limit"
    # the Reason column (the Ready condition's) shows plain Queued once it is not blocked
    assert conditions(build(JobView(status="queued")))["Ready"]["reason"] == "Queued"
