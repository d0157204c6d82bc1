"""CronJob resources on the real control plane: firing, policies, suspend, downtime."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import pytest
from kubernetes_asyncio.client.rest import ApiException
from operator_harness import (
    GROUP,
    VERSION,
    Harness,
    condition,
    eventually,
)

from podq.operator.kube import MAX_REFUSAL_TEXT, refusal_text

EVERY_SECOND = "* * * * * *"
EVERY_2_SECONDS = "* * * * * */2"


def cron_spec(function: str, schedule: str, **extra: Any) -> dict[str, Any]:
    kwargs = extra.pop("kwargs", {})
    return {"schedule": schedule, "jobTemplate": {
        "metadata": {"labels": {"app": "cron-test"}},
        "spec": {"function": function, "kwargs": kwargs, "timeout": 120}}, **extra}


def state(job: dict) -> str:
    return (job.get("status") or {}).get("status", "new")


def slot_of(job: dict) -> float:
    return datetime.fromisoformat(
        job["metadata"]["annotations"]["podq.dev/scheduled-time"].replace("Z", "+00:00")
    ).timestamp()


async def children(harness: Harness, cron: str) -> list[dict]:
    return await harness.list_jobs(label_selector=f"podq.dev/cronjob={cron}")


async def test_fires_children_with_owner_and_trims_history(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    made = await harness.create("cronjobs", "tick", cron_spec(
        "noop", EVERY_2_SECONDS, successfulJobsHistoryLimit=2))
    seen: set[str] = set()

    async def fired_four() -> bool:
        for child in await children(harness, "tick"):
            seen.add(child["metadata"]["name"])
        return len(seen) >= 4
    await eventually(fired_four, within=40, what="four firings")
    child = (await children(harness, "tick"))[0]
    owner = child["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "CronJob" and owner["controller"] is True
    assert owner["uid"] == made["metadata"]["uid"]
    assert child["metadata"]["labels"]["app"] == "cron-test"
    assert child["metadata"]["name"] == f"tick-{int(slot_of(child))}"
    assert int(slot_of(child)) % 2 == 0

    async def trimmed() -> bool:
        done = [c for c in await children(harness, "tick") if state(c) == "complete"]
        return 0 < len(done) <= 2
    await eventually(trimmed, within=30, what="history trimmed to 2 successful Jobs")
    cron = await harness.get("cronjobs", "tick")
    status = cron["status"]
    assert status["lastScheduleTime"] and status["nextScheduleTime"]
    assert status["lastSuccessfulTime"]
    assert condition(cron, "Ready")["status"] == "True"

    async def deletions_told() -> bool:  # as batch/v1 CronJob: one Event per trimmed Job
        present = {c["metadata"]["name"] for c in await children(harness, "tick")}
        told = [e.message for e in await harness.events("tick")
                if e.reason == "SuccessfulDelete"]
        gone = seen - present
        return bool(gone) and all(
            told.count(f"deleted Job {name} (history limit)") == 1 for name in gone)
    await eventually(deletions_told, within=30, what="a SuccessfulDelete Event per trimmed Job")


async def test_forbid_skips_while_a_child_runs(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create("cronjobs", "forbid", cron_spec(
        "nap", EVERY_SECOND, concurrencyPolicy="Forbid", kwargs={"seconds": 30}))

    async def skipped() -> bool:
        events = await harness.events("forbid")
        return any(e.reason == "ConcurrencyForbidden" for e in events)
    await eventually(skipped, within=30, what="a firing skipped by Forbid")
    running = await children(harness, "forbid")
    assert len(running) == 1


async def test_allow_runs_firings_side_by_side(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create("cronjobs", "allow", cron_spec("nap", EVERY_SECOND,
                                                        kwargs={"seconds": 30}))

    async def two_active() -> bool:
        return len([c for c in await children(harness, "allow") if state(c) == "active"]) >= 2
    await eventually(two_active, within=30, what="two Jobs running at once")


async def test_replace_aborts_the_running_child(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create("cronjobs", "replace", cron_spec(
        "nap", EVERY_2_SECONDS, concurrencyPolicy="Replace", kwargs={"seconds": 60}))

    async def first_running() -> dict | None:
        running = [c for c in await children(harness, "replace") if state(c) == "active"]
        return running[0] if running else None
    first = await eventually(first_running, within=30, what="a running child")
    key = first["status"]["jobKey"]

    async def replaced() -> bool:
        names = {c["metadata"]["name"] for c in await children(harness, "replace")}
        return first["metadata"]["name"] not in names and bool(names)
    await eventually(replaced, within=30, what="the first child replaced")

    async def aborted() -> bool:
        job = await harness.queue().job(key)
        return job is not None and job.status.value == "aborted"
    await eventually(aborted, within=20, what="the replaced child's job aborted")


async def test_suspend_holds_firings_until_resumed(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    await harness.create("cronjobs", "paused", cron_spec("noop", EVERY_SECOND, suspend=True))

    async def suspended() -> dict | None:
        cron = await harness.get("cronjobs", "paused")
        ready = condition(cron, "Ready") if cron else None
        return cron if ready and ready["reason"] == "Suspended" else None
    cron = await eventually(suspended, within=30, what="the Suspended condition")
    assert "nextScheduleTime" not in cron["status"]
    assert await children(harness, "paused") == []
    await harness.custom.patch_namespaced_custom_object(
        GROUP, VERSION, harness.namespace, "cronjobs", "paused", {"spec": {"suspend": False}},
        _content_type="application/merge-patch+json")
    await eventually(lambda: children(harness, "paused"), within=30, what="a firing after resume")


async def test_after_downtime_only_the_latest_missed_slot_runs(harness: Harness) -> None:
    operator = harness.start_operator()
    harness.start_worker()
    await harness.create("cronjobs", "catchup", cron_spec("noop", EVERY_SECOND))
    await eventually(lambda: children(harness, "catchup"), within=30, what="a first firing")
    operator.kill()
    down_at = time.time()
    before = {c["metadata"]["name"] for c in await children(harness, "catchup")}
    # the operator stays down while several slots pass (every second, by the wall clock)
    await eventually(_after(down_at + 4), within=10, what="four missed slots")
    # taken before the start: every slot before it was missed (taken after, a slow
    # start on a loaded machine made on-time firings of the new operator look missed)
    back_at = time.time()
    harness.start_operator()

    async def caught_up() -> list[dict]:
        return [c for c in await children(harness, "catchup")
                if c["metadata"]["name"] not in before]
    new = await eventually(caught_up, within=30, what="a firing after the restart")
    missed = [c for c in new if slot_of(c) < back_at - 1]
    # of the >= 4 missed slots, only the latest (the slot before restart) ran
    assert len(missed) <= 1, [c["metadata"]["name"] for c in missed]
    assert len({c["metadata"]["name"] for c in new}) == len(new)


def _after(moment: float):
    async def probe() -> bool:
        return time.time() >= moment
    return probe


async def test_a_cronjob_whose_ticks_keep_failing_is_stalled_then_recovers(
    harness: Harness,
) -> None:
    """A quota that refuses every child: each slot's creation fails (FailedCreate); from
    the third failing tick in a row the CronJob says so (Stalled, TickFailed), and the
    first tick that works again clears it. Other CronJobs are not held up meanwhile."""
    core = harness.core
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs"},
             "spec": {"hard": {f"count/jobs.{GROUP}": "0"}}}
    await core.create_namespaced_resource_quota(harness.namespace, quota)

    async def enforced() -> bool:  # once the quota controller has counted
        read = await core.read_namespaced_resource_quota("no-jobs", harness.namespace)
        return bool(read.status and read.status.hard)
    await eventually(enforced, within=30, what="the quota in force")
    harness.start_operator()
    await harness.create("cronjobs", "refused", cron_spec("noop", EVERY_SECOND))

    async def stalled() -> dict | None:
        cron = await harness.get("cronjobs", "refused")
        found = condition(cron, "Stalled") if cron else None
        return cron if found and found["status"] == "True" else None
    cron = await eventually(stalled, within=60, what="the CronJob marked Stalled")
    found = condition(cron, "Stalled")
    assert found["reason"] == "TickFailed" and "quota" in found["message"], found
    assert condition(cron, "Ready")["status"] == "False"
    events = await harness.events("refused")
    reasons = {e.reason for e in events}
    assert {"FailedCreate", "TickFailed"} <= reasons, reasons
    # FailedCreate says what the API server said, not only "Forbidden"
    failed = [e.message for e in events if e.reason == "FailedCreate"]
    assert "could not create Job refused-" in failed[0], failed
    assert "Forbidden: " in failed[0] and "exceeded quota: no-jobs" in failed[0], failed
    # the condition gives the refusal as FailedCreate does (reason and message, bounded),
    # not the JSON body of the API server's Status
    detail = found["message"].split("retrying with backoff: ", 1)[1]
    assert detail.startswith("Forbidden: ") and "exceeded quota: no-jobs" in detail, detail
    assert '"kind"' not in detail and "\n" not in detail, detail
    assert len(detail) <= MAX_REFUSAL_TEXT, detail
    # ... the same text as the (one, first) FailedCreate Event's, each slot's child aside
    def unnamed(text: str) -> str:
        return re.sub(r"refused-\d+", "refused-<slot>", text)
    assert unnamed(failed[0]).endswith(f": {unnamed(detail)}"), (detail, failed)
    # ... in one line, bounded: the same refusal as the API server sends it
    with pytest.raises(ApiException) as refusal:
        await harness.create_job("direct", "noop")
    text = refusal_text(refusal.value)
    assert text.startswith("Forbidden: ") and "exceeded quota: no-jobs" in text, text
    assert "\n" not in text and len(text) <= MAX_REFUSAL_TEXT
    cut = refusal_text(refusal.value, limit=40)
    assert len(cut) == 40 and cut.endswith("...") and cut.startswith("Forbidden: "), cut
    assert await children(harness, "refused") == []

    await core.delete_namespaced_resource_quota("no-jobs", harness.namespace)

    async def recovered() -> dict | None:
        cron = await harness.get("cronjobs", "refused")
        found = condition(cron, "Stalled") if cron else None
        return cron if found and found["status"] == "False" and await children(
            harness, "refused") else None
    cron = await eventually(recovered, within=60, what="the CronJob firing again")
    assert condition(cron, "Ready")["status"] == "True"
