"""Events of Job resources on the real API server: one per transition, every retry and
every completion, also when the status writer coalesced several changes into one write;
a CronJob's `active` list follows its children as they finish."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from operator_harness import (
    Harness,
    eventually,
)


async def reasons(harness: Harness, name: str) -> Counter[str]:
    return Counter(e.reason for e in await harness.events(name))


async def wait_completed_event(harness: Harness, name: str) -> Counter[str]:
    async def completed() -> Counter[str] | None:
        seen = await reasons(harness, name)
        return seen if seen["Completed"] else None
    return await eventually(completed, within=60, what=f"the Completed Event of {name}")


# retryDelay 1: the status writer sees each failed attempt (queued, active, queued, ...);
# retryDelay 0: the three attempts run within one coalescing window, one status write
@pytest.mark.parametrize("retry_delay", [1, 0], ids=["apart", "coalesced"])
async def test_fails_twice_then_succeeds_gives_two_retrying_and_one_completed(
        harness: Harness, retry_delay: int) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create_job("twice", "fail_times", kwargs={"times": 2}, retries=3,
                             retryDelay=retry_delay)
    body = await harness.wait_status("twice", "complete", within=60)
    assert body["status"]["attempts"] == 3
    assert body["status"]["progressPercent"] == "100%" and body["status"]["duration"]
    seen = await wait_completed_event(harness, "twice")
    # a later point in the operator's life: another job enqueued, run and written
    await harness.create_job("later", "noop")
    await wait_completed_event(harness, "later")
    seen = await reasons(harness, "twice")
    assert seen == Counter({"Retrying": 2, "Completed": 1}), seen
    events = {e.reason: e for e in await harness.events("twice")}
    assert events["Completed"].message == "fail_times completed after 3 attempt(s)"
    retrying = sorted(e.message for e in await harness.events("twice")
                      if e.reason == "Retrying")
    assert retrying[0].startswith("attempt 1 failed") and retrying[1].startswith(
        "attempt 2 failed"), retrying
    table = harness.plane.kubectl("get", "pqjob", "twice", "-n", harness.namespace).stdout
    header, row = table.splitlines()
    assert header.split()[:7] == ["NAME", "FUNCTION", "STATUS", "REASON", "ATTEMPTS",
                                  "PROGRESS", "DURATION"], table
    assert row.split()[:6] == ["twice", "fail_times", "complete", "Completed", "3", "100%"]


async def test_cron_child_completion_names_the_function_and_clears_active(
        harness: Harness) -> None:
    # the refresh tick is long: only the child's completion can update the CronJob soon
    harness.start_operator("--cron-refresh", "300")
    harness.start_worker()
    # 6 s ahead: created before its slot (3 s could pass first on a loaded machine, and
    # the next firing was a day later)
    fire = datetime.now(UTC) + timedelta(seconds=6)
    # six fields, seconds last: fires once within seconds, next time a day later
    schedule = f"{fire.minute} {fire.hour} * * * {fire.second}"
    # a 4 s run: the child is seen in the active list before it ends (1 s was a short
    # window for the status mirror and the polls on a loaded machine)
    await harness.create("cronjobs", "once", {"schedule": schedule, "jobTemplate": {
        "spec": {"function": "nap", "kwargs": {"seconds": 4}}}})

    async def child() -> dict | None:
        jobs = await harness.list_jobs(label_selector="podq.dev/cronjob=once")
        return jobs[0] if jobs else None
    made = await eventually(child, within=60, what="the CronJob's child")
    name = made["metadata"]["name"]

    async def active_listed() -> bool:
        cron = await harness.get("cronjobs", "once")
        return bool((cron.get("status") or {}).get("activeCount"))
    await eventually(active_listed, within=60, what="the child in the CronJob's active list")
    await harness.wait_status(name, "complete", within=30)
    seen = await wait_completed_event(harness, name)
    assert seen["Completed"] == 1
    completed = next(e for e in await harness.events(name) if e.reason == "Completed")
    assert completed.message.startswith("nap completed")

    async def cleared() -> dict | None:
        cron = await harness.get("cronjobs", "once")
        status = cron.get("status") or {}
        return cron if status.get("activeCount") == 0 and not status.get("active") else None
    cron = await eventually(cleared, within=60, what="the active list emptied")
    assert cron["status"]["lastSuccessfulTime"]
    assert cron["status"]["nextScheduleTime"]
    table = harness.plane.kubectl("get", "pqcron", "once", "-n", harness.namespace).stdout
    header, row = table.splitlines()
    assert header.split() == ["NAME", "SCHEDULE", "TIMEZONE", "FUNCTION", "SUSPEND", "ACTIVE",
                              "LAST", "SCHEDULE", "NEXT", "REASON", "AGE"], table
    cells = row.split()  # the schedule is six of them
    assert cells[7:11] == ["UTC", "nap", "false", "0"], row
    assert cells[12] == cron["status"]["nextScheduleTime"], row
    assert cells[13] == "Scheduling", row  # the Ready condition's reason


async def test_deleting_a_running_cron_child_clears_active_at_once(harness: Harness) -> None:
    harness.start_operator("--cron-refresh", "300")
    harness.start_worker()
    fire = datetime.now(UTC) + timedelta(seconds=6)  # created before its slot
    schedule = f"{fire.minute} {fire.hour} * * * {fire.second}"
    await harness.create("cronjobs", "held", {"schedule": schedule, "jobTemplate": {
        "spec": {"function": "nap", "kwargs": {"seconds": 120}, "timeout": 300}}})

    async def running_child() -> dict | None:
        jobs = await harness.list_jobs(label_selector="podq.dev/cronjob=held")
        return next((j for j in jobs if (j.get("status") or {}).get("status") == "active"),
                    None)
    child = await eventually(running_child, within=60, what="a running child")

    async def listed() -> bool:
        cron = await harness.get("cronjobs", "held")
        return (cron.get("status") or {}).get("activeCount") == 1
    await eventually(listed, within=60, what="the child in the active list")
    await harness.delete_job(child["metadata"]["name"])

    async def cleared() -> bool:
        cron = await harness.get("cronjobs", "held")
        return (cron.get("status") or {}).get("activeCount") == 0
    await eventually(cleared, within=60, what="the deleted child gone from the active list")



async def test_a_burst_beyond_the_event_rate_is_posted_late_not_dropped(
        harness: Harness) -> None:
    """120 transitions at once through a recorder allowing 10 Normal Events a second
    (burst 40): the first 40 go out at once, the other 80 wait their turn in its backlog,
    and all 120 reach the API server."""
    from podq.operator.kube import EventRecorder, ObjectRef

    recorder = EventRecorder(harness.core, normal_rate=10)
    made = await harness.create_job("bursty", "noop")
    ref = ObjectRef("podq.dev/v1alpha1", "Job", harness.namespace, "bursty",
                    made["metadata"]["uid"])
    try:
        for n in range(120):
            assert await recorder.post(ref, "Normal", "Transition", f"transition {n:03d}")

        async def all_posted() -> list | None:
            mine = [e for e in await harness.events("bursty") if e.reason == "Transition"]
            return mine if len(mine) == 120 else None
        posted = await eventually(all_posted, within=60, what="all 120 Events")
        assert sorted(e.message for e in posted) == [f"transition {n:03d}" for n in range(120)]
        assert recorder.dropped == 0
    finally:
        await recorder.close()


async def test_a_namespace_flooding_events_delays_its_own_not_another_namespaces(
        harness: Harness) -> None:
    """One namespace posts 150 Warnings at once (a flood of refused Jobs) through a
    recorder allowing 5 a second (burst 25): a Warning of another namespace posted after
    them goes out in the next round, while the flood still waits (drained round-robin
    per namespace; in one shared backlog it waited about 25 s behind the flood)."""
    from podq.operator.kube import EventRecorder, ObjectRef

    quiet = f"{harness.namespace}-quiet"
    harness.plane.kubectl("create", "namespace", quiet)
    recorder = EventRecorder(harness.core, warning_rate=5)
    try:
        for n in range(150):
            ref = ObjectRef("podq.dev/v1alpha1", "Job", harness.namespace, f"flood-{n}",
                            f"uid-flood-{n}")
            assert await recorder.post(ref, "Warning", "QueueNotAllowed", f"flood {n}")
        assert await recorder.post(
            ObjectRef("podq.dev/v1alpha1", "Job", quiet, "victim", "uid-victim"),
            "Warning", "QueueNotAllowed", "the quiet namespace's Warning")

        async def posted() -> bool:
            listed = await harness.core.list_namespaced_event(
                quiet, field_selector="involvedObject.name=victim")
            return bool(listed.items)
        await eventually(posted, within=60, what="the quiet namespace's Warning")
        flood = await harness.core.list_namespaced_event(harness.namespace)
        sent = sum(e.reason == "QueueNotAllowed" for e in flood.items)
        assert sent < 100, f"{sent} of the flood's 150 Warnings went out before it"
        assert recorder.dropped == 0
    finally:
        await recorder.close()
        harness.plane.discard_namespace(quiet)
