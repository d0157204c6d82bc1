"""Bad podq manifests: refused by `kubectl apply` with a message naming the field, or
(when only the operator can tell) marked with a clear condition, and never a crash."""

from __future__ import annotations

import pytest
import yaml
from operator_harness import (
    Harness,
    condition,
    eventually,
)

from podq.testing import ControlPlane


def job(**spec: object) -> dict:
    return {"apiVersion": "podq.dev/v1alpha1", "kind": "Job", "metadata": {"name": "bad"},
            "spec": spec}


def cron(name: str = "bad-cron", **spec: object) -> dict:
    base = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"function": "noop"}}}
    base.update(spec)
    return {"apiVersion": "podq.dev/v1alpha1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {k: v for k, v in base.items() if v is not None}}


# (manifest, text the refusal must contain: the field it names)
REFUSED = {
    "missing function": (job(kwargs={}), "spec.function"),
    "empty function": (job(function=""), "spec.function"),
    "function with spaces": (job(function="rm -rf"), "spec.function"),
    "negative timeout": (job(function="f", timeout=-1), "spec.timeout"),
    "zero retries": (job(function="f", retries=0), "spec.retries"),
    "bad queue name": (job(function="f", queue="my queue!"), "spec.queue"),
    "queue with braces": (job(function="f", queue="{x}"), "spec.queue"),
    # RE2 (the apiserver's regexp): `$` is the end of the text, not before a last newline
    "queue ending in a newline": (job(function="f", queue="a\n"), "spec.queue"),
    "cron template queue ending in a newline": (
        cron(jobTemplate={"spec": {"function": "f", "queue": "a\n"}}),
        "spec.jobTemplate.spec.queue"),
    "unknown field": (job(function="f", funtion="typo"), "spec.funtion"),
    "kwargs not an object": (job(function="f", kwargs=[1, 2]), "spec.kwargs"),
    "scheduled not a time": (job(function="f", scheduled="tomorrow"), "spec.scheduled"),
    "priority out of range": (job(function="f", priority=9000), "spec.priority"),
    "negative ttl": (job(function="f", ttl=-1), "spec.ttl"),
    "negative ttlSecondsAfterFinished": (
        job(function="f", ttlSecondsAfterFinished=-5), "spec.ttlSecondsAfterFinished"),
    "negative retryDelay": (job(function="f", retryDelay=-1), "spec.retryDelay"),
    "string timeout": (job(function="f", timeout="ten"), "spec.timeout"),
    "cron schedule with 3 fields": (cron(schedule="* * *"), "spec.schedule"),
    "cron unknown concurrencyPolicy": (cron(concurrencyPolicy="Sometimes"),
                                       "spec.concurrencyPolicy"),
    "cron name too long": (cron(name="c" * 53), "metadata.name"),
    "cron without jobTemplate": (cron(jobTemplate=None), "spec.jobTemplate"),
    "cron template with negative timeout": (
        cron(jobTemplate={"spec": {"function": "f", "timeout": -3}}),
        "spec.jobTemplate.spec.timeout"),
    "cron negative history limit": (cron(successfulJobsHistoryLimit=-1),
                                    "spec.successfulJobsHistoryLimit"),
    # issue 8: values that used to pass the schema and then break the operator or Redis
    "scheduled in year 0": (job(function="f", scheduled="0000-01-01T00:00:00Z"),
                            "spec.scheduled"),
    "scheduled past 9999 in UTC": (job(function="f", scheduled="9999-12-31T23:59:59-23:59"),
                                   "spec.scheduled"),
    "retryDelay 1e12": (job(function="f", retryDelay=1e12), "spec.retryDelay"),
    "ttl 1e16": (job(function="f", ttl=10**16), "spec.ttl"),
    "ttlSecondsAfterFinished 1e16": (job(function="f", ttlSecondsAfterFinished=10**16),
                                     "spec.ttlSecondsAfterFinished"),
    "cron template scheduled in year 0": (
        cron(jobTemplate={"spec": {"function": "f", "scheduled": "0000-01-01T00:00:00Z"}}),
        "spec.jobTemplate.spec.scheduled"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_at_apply_time_naming_the_field(
    podq_crds: ControlPlane, namespace: str, case: str
) -> None:
    manifest, field = REFUSED[case]
    applied = podq_crds.kubectl("apply", "-n", namespace, "-f", "-",
                                input=yaml.safe_dump(manifest), check=False)
    assert applied.returncode != 0, f"{case}: accepted\n{applied.stdout}"
    assert field in applied.stderr, applied.stderr


def test_spec_is_immutable(podq_crds: ControlPlane, namespace: str) -> None:
    manifest = job(function="noop", kwargs={"a": 1})
    podq_crds.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    manifest["spec"]["kwargs"] = {"a": 2}
    changed = podq_crds.kubectl("apply", "-n", namespace, "-f", "-",
                                input=yaml.safe_dump(manifest), check=False)
    assert changed.returncode != 0 and "spec is immutable" in changed.stderr


async def test_what_only_the_operator_can_judge_gets_a_condition(harness: Harness) -> None:
    operator = harness.start_operator()
    harness.start_worker()
    await harness.create("cronjobs", "bad-schedule",
                         cron(schedule="61 * * * *")["spec"])
    await harness.create("cronjobs", "bad-zone",
                         cron(schedule="* * * * *", timeZone="Mars/Olympus")["spec"])
    await harness.create_job("bad-backoff", "noop", retryBackoff="fast")
    await harness.create_job("bad-function", "not_a_registered_function")
    await harness.create_job("good", "noop")
    await harness.create("cronjobs", "fine", cron(schedule="0 0 1 1 *")["spec"])

    async def stalled(name: str, reason: str) -> bool:
        body = await harness.get("cronjobs", name)
        found = condition(body, "Stalled") if body else None
        return bool(found and found["status"] == "True" and found["reason"] == reason)
    await eventually(lambda: stalled("bad-schedule", "InvalidSchedule"),
                     what="InvalidSchedule on bad-schedule")
    await eventually(lambda: stalled("bad-zone", "InvalidTimeZone"),
                     what="InvalidTimeZone on bad-zone")
    zone = condition(await harness.get("cronjobs", "bad-zone"), "Stalled")
    assert "spec.timeZone" in zone["message"] and "Mars/Olympus" in zone["message"]
    warnings = [e for e in await harness.events("bad-schedule") if e.type == "Warning"]
    assert [e.reason for e in warnings] == ["InvalidSchedule"]

    # kubectl get pqcron says which CronJobs are broken (the Reason column)
    async def reasons() -> dict[str, str] | None:
        lines = harness.plane.kubectl("get", "pqcron", "-n", harness.namespace).stdout
        header, *rows = lines.splitlines()
        start, end = header.index("REASON"), header.index("AGE")
        found = {row.split()[0]: row[start:end].strip() for row in rows}
        return found if found.get("fine") else None
    assert await eventually(reasons, what="the fine CronJob scheduled") == {
        "bad-schedule": "InvalidSchedule", "bad-zone": "InvalidTimeZone", "fine": "Scheduling"}

    backoff = await harness.wait_status("bad-backoff", "failed")
    assert condition(backoff, "Failed")["reason"] == "InvalidSpec"
    assert "spec.retryBackoff" in condition(backoff, "Failed")["message"]
    function = await harness.wait_status("bad-function", "failed")
    assert condition(function, "Failed")["reason"] == "FunctionNotRegistered"
    assert "not_a_registered_function" in condition(function, "Failed")["message"]

    # the operator kept serving everything else
    await harness.wait_status("good", "complete")
    assert operator.alive
