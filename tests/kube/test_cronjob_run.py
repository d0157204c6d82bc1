"""`podq cronjob run NAME`: a child Job now, like `kubectl create job --from=cronjob/NAME`,
on the real control plane."""

from __future__ import annotations

import subprocess

from operator_harness import (
    PODQ,
    Harness,
    eventually,
)


def podq(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PODQ, *args], env=dict(harness.plane.env), capture_output=True,
                          text=True, timeout=60)


async def test_cronjob_run_creates_a_child_now(harness: Harness) -> None:
    harness.start_operator()
    harness.start_worker()
    # New Year only: nothing but the manual run fires during the test
    await harness.create("cronjobs", "yearly", {"schedule": "0 0 1 1 *", "jobTemplate": {
        "metadata": {"labels": {"app": "yearly"}},
        "spec": {"function": "echo", "kwargs": {"said": "now"}}}})
    done = podq(harness, "cronjob", "run", "yearly", "-n", harness.namespace)
    assert done.returncode == 0, done.stderr
    name = done.stdout.strip().removeprefix("job.podq.dev/").removesuffix(" created")
    assert name.startswith("yearly-manual-") and len(name) == len("yearly-manual-") + 5
    body = await harness.wait_status(name, "complete", within=30)
    assert body["status"]["result"] == {"said": "now"}
    meta = body["metadata"]
    assert meta["labels"] == {"app": "yearly", "podq.dev/cronjob": "yearly"}
    assert meta["annotations"]["podq.dev/instantiate"] == "manual"
    assert meta["ownerReferences"][0]["kind"] == "CronJob"

    async def settled() -> dict | None:
        cron = await harness.get("cronjobs", "yearly")
        status = cron.get("status") or {}
        return cron if status.get("activeCount") == 0 and status.get("lastSuccessfulTime") \
            else None
    cron = await eventually(settled, within=20, what="the CronJob to see its child finish")
    assert "lastScheduleTime" not in cron["status"]  # no slot of the schedule was used
    assert len(await harness.list_jobs(label_selector="podq.dev/cronjob=yearly")) == 1

    named = podq(harness, "cronjob", "run", "yearly", "-n", harness.namespace,
                 "--job-name", "by-hand")
    assert named.returncode == 0, named.stderr
    await harness.wait_status("by-hand", "complete", within=30)
    missing = podq(harness, "cronjob", "run", "nope", "-n", harness.namespace)
    assert missing.returncode == 1
    assert f"cronjob.podq.dev/nope not found in namespace {harness.namespace}" in missing.stderr
