"""The validating admission webhook on the real API server: what the schema cannot check
is refused at `kubectl apply` naming the field, good manifests pass, and while the
webhook is down the failurePolicy decides (Ignore: accepted, then marked by the
operator; Fail: refused naming the webhook).

The webhook is registered by URL (https://127.0.0.1:PORT/validate, the API server runs
on loopback) with a CA made here by openssl, and only for the test's namespace (a
namespaceSelector), so other tests sharing the control plane never meet it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import (
    GROUP,
    VERSION,
    Harness,
    condition,
    eventually,
)

from podq.testing import free_port
from podq.testing_webhook import configuration, make_tls


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Job", "metadata": {"name": name},
            "spec": {"function": "noop", **spec}}


def cron(name: str, schedule: str = "*/5 * * * *", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": schedule, "jobTemplate": {"spec": {"function": "noop"}},
                     **spec}}


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# (manifest, the field the refusal names, another word it must contain)
REFUSED: dict[str, tuple[dict[str, Any], str, str]] = {
    "minute 61": (cron("c1", "61 * * * *"), "spec.schedule", "61"),
    "hour 24": (cron("c2", "0 24 * * *"), "spec.schedule", "24"),
    "step 0": (cron("c3", "*/0 * * * *"), "spec.schedule", "*/0"),
    "reversed range": (cron("c4", "5-1 * * * *"), "spec.schedule", "reversed"),
    "reversed weekday range": (cron("c5", "0 9 * * fri-mon"), "spec.schedule", "reversed"),
    "31 February": (cron("c6", "0 0 31 2 *"), "spec.schedule", "no date"),
    "31 February, April or June": (cron("c7", "0 0 31 2,4,6 *"), "spec.schedule", "no date"),
    "month 13": (cron("c8", "0 0 1 13 *"), "spec.schedule", "13"),
    "time zone on Mars": (cron("c9", timeZone="Mars/Olympus"), "spec.timeZone",
                          "Mars/Olympus"),
    "time zone path": (cron("c10", timeZone="../../etc/passwd"), "spec.timeZone", "passwd"),
    "retryBackoff a word": (job("j1", retryBackoff="fast"), "spec.retryBackoff", "fast"),
    "retryBackoff 1e12": (job("j2", retryBackoff=1e12), "spec.retryBackoff", "2592000"),
    "retryBackoff negative": (job("j3", retryBackoff=-1), "spec.retryBackoff", "-1"),
    "retryBackoff an object": (job("j4", retryBackoff={"a": 1}), "spec.retryBackoff", "'a'"),
    "template retryBackoff": (
        cron("c11", jobTemplate={"spec": {"function": "noop", "retryBackoff": "fast"}}),
        "spec.jobTemplate.spec.retryBackoff", "fast"),
    "kwargs of 100 KiB": (job("j5", kwargs={"blob": "k" * 100_000}), "spec.kwargs", "bytes"),
    "meta nested 40 deep": (job("j6", meta=nested(40)), "spec.meta", "32"),
    # the schema's own ranges, refused before the webhook is asked
    "scheduled in year 0": (job("j7", scheduled="0000-01-01T00:00:00Z"), "spec.scheduled",
                            "0000"),
    "ttl 1e16": (job("j8", ttl=10**16), "spec.ttl", ""),
    "retryDelay 1e12": (job("j9", retryDelay=1e12), "spec.retryDelay", ""),
}

ACCEPTED: dict[str, dict[str, Any]] = {
    "29 February": cron("g1", "0 0 29 2 *"),
    "weekdays by name, a step": cron("g2", "*/15 9-17 * * mon-fri"),
    "6 fields (seconds)": cron("g3", "0 0 * * * 30"),
    "@daily in Paris": cron("g4", "@daily", timeZone="Europe/Paris"),
    "day 31 of the months that have it": cron("g5", "0 0 31 * *"),
    "retryBackoff true": job("g6", retryBackoff=True, retries=3),
    "retryBackoff 30 s": job("g7", retryBackoff=30, retries=3),
    "template retryBackoff 0.5": cron(
        "g8", jobTemplate={"spec": {"function": "noop", "retryBackoff": 0.5}}),
}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a certificate for 127.0.0.1 signed by it: ca.crt, tls.crt, tls.key."""
    return make_tls(tmp_path_factory.mktemp("webhook-tls"))


class Webhook:
    """The operator serving the webhook, registered with the API server for one namespace."""

    def __init__(self, harness: Harness, tls: Path) -> None:
        self.harness = harness
        self.tls = tls
        self.port = free_port()
        self.name = f"podq-test-{harness.namespace}"

    def start_operator(self, *extra: str) -> Any:
        return self.harness.start_operator(
            "--webhook-port", str(self.port), "--webhook-host", "127.0.0.1",
            "--webhook-cert-dir", str(self.tls), *extra)

    def register(self, failure_policy: str) -> None:
        config = configuration(self.name, self.port, self.tls, failure_policy,
                               namespace=self.harness.namespace)
        self.harness.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(config))

    def unregister(self) -> None:
        self.harness.plane.kubectl("delete", "validatingwebhookconfiguration", self.name,
                                   "--ignore-not-found", check=False)

    def apply(self, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.harness.plane.kubectl("apply", "-n", self.harness.namespace, "-f", "-",
                                          input=yaml.safe_dump(manifest), check=False)

    async def wait_in_force(self) -> None:
        """The API server reads webhook configurations from an informer: apply a bad
        probe until it is refused by the webhook (nothing else refuses it)."""
        probe = cron("probe", "0 0 31 2 *")

        async def refused() -> bool:
            result = self.apply(probe)
            if result.returncode == 0:
                self.harness.plane.kubectl("delete", "-n", self.harness.namespace,
                                           "cronjobs.podq.dev", "probe", "--wait=false")
                return False
            return "denied the request" in result.stderr
        await eventually(refused, within=30, what="the webhook configuration in force",
                         interval=0.3)


@pytest.fixture
def webhook(harness: Harness, tls: Path) -> Iterator[Webhook]:
    hook = Webhook(harness, tls)
    try:
        yield hook
    finally:
        hook.unregister()


async def test_refused_at_apply_naming_the_field_and_good_ones_accepted(
    webhook: Webhook,
) -> None:
    webhook.start_operator()
    webhook.register("Fail")
    await webhook.wait_in_force()
    wrong = []
    for case, (manifest, field, word) in REFUSED.items():
        result = webhook.apply(manifest)
        if result.returncode == 0 or field not in result.stderr or word not in result.stderr:
            wrong.append(f"{case}: exit {result.returncode} {result.stdout}{result.stderr}")
    for case, manifest in ACCEPTED.items():
        result = webhook.apply(manifest)
        if result.returncode != 0:
            wrong.append(f"{case} refused: {result.stderr}")
    assert not wrong, "\n".join(wrong)

    # an update is judged as a create is; one that leaves the spec alone always passes
    changed = cron("g1", "0 0 30 2 *")
    result = webhook.apply(changed)
    assert result.returncode != 0 and "spec.schedule" in result.stderr, result.stderr
    labelled = cron("g1", "0 0 29 2 *")
    labelled["metadata"]["labels"] = {"team": "a"}
    result = webhook.apply(labelled)
    assert result.returncode == 0, result.stderr


async def test_what_the_webhook_admits_runs(webhook: Webhook, harness: Harness) -> None:
    """The operator's own writes (finalizer, annotations, status) pass the webhook."""
    webhook.start_operator()
    harness.start_worker()
    webhook.register("Fail")
    await webhook.wait_in_force()
    result = webhook.apply(job("runs", retryBackoff=2, retries=2))
    assert result.returncode == 0, result.stderr
    await harness.wait_status("runs", "complete")
    result = webhook.apply({**job("queue-x"), "spec": {"function": "noop", "queue": "other"}})
    assert result.returncode == 0, result.stderr  # open queue access: every queue


async def test_queue_not_granted_is_refused_at_apply(webhook: Webhook, harness: Harness) -> None:
    webhook.start_operator("--allow-queue", f"default={harness.namespace}")
    webhook.register("Fail")
    await webhook.wait_in_force()
    result = webhook.apply({**job("elsewhere"), "spec": {"function": "noop", "queue": "other"}})
    assert result.returncode != 0, result.stdout
    assert "spec.queue" in result.stderr and "'other'" in result.stderr, result.stderr
    assert webhook.apply(job("here")).returncode == 0


async def test_webhook_down_with_ignore_accepts_and_the_operator_marks(
    webhook: Webhook, harness: Harness,
) -> None:
    """The chart's default: while no replica serves, applies pass (after the connection
    is refused, at once) and the operator marks a bad spec when it is back."""
    operator = webhook.start_operator()
    webhook.register("Ignore")
    await webhook.wait_in_force()
    operator.kill()
    result = webhook.apply(cron("late", "61 * * * *"))
    assert result.returncode == 0, result.stderr
    template = cron("template", "* * * * * */2", jobTemplate={"spec": {
        "function": "noop", "retryBackoff": "fast"}})
    assert webhook.apply(template).returncode == 0
    assert webhook.apply(job("good")).returncode == 0
    webhook.start_operator()

    async def stalled(name: str, reason: str) -> dict[str, Any] | None:
        body = await harness.get("cronjobs", name)
        found = condition(body, "Stalled") if body else None
        return found if found and found["reason"] == reason else None
    await eventually(lambda: stalled("late", "InvalidSchedule"),
                     what="InvalidSchedule on the CronJob admitted while down")
    # a template every child of which would fail: no child at all, the field named
    found = await eventually(lambda: stalled("template", "InvalidJobTemplate"),
                             what="InvalidJobTemplate on the CronJob admitted while down")
    assert found["message"].startswith("spec.jobTemplate.spec.retryBackoff"), found
    assert not await harness.list_jobs(label_selector="podq.dev/cronjob=template")


async def test_webhook_down_with_fail_refuses_naming_the_webhook(webhook: Webhook) -> None:
    """Creates and spec changes are refused while down; updates that keep the spec (the
    operator's finalizers, labels) never call the webhook (its matchConditions)."""
    operator = webhook.start_operator()
    webhook.register("Fail")
    await webhook.wait_in_force()
    assert webhook.apply(cron("kept")).returncode == 0
    operator.kill()
    labelled = cron("kept")
    labelled["metadata"]["labels"] = {"team": "a"}
    result = webhook.apply(labelled)
    assert result.returncode == 0, result.stderr
    result = webhook.apply(cron("kept", "*/10 * * * *"))
    assert result.returncode != 0 and "failed calling webhook" in result.stderr, result.stderr
    result = webhook.apply(job("blocked"))
    assert result.returncode != 0, result.stdout
    assert "failed calling webhook" in result.stderr and "validate.podq.dev" in result.stderr, \
        result.stderr
    webhook.start_operator()
    assert webhook.apply(job("blocked")).returncode == 0


async def test_a_standby_replica_serves_the_webhook(webhook: Webhook, harness: Harness) -> None:
    """The Service may send the call to any replica: a leader-election standby, which
    runs no kopf handler, judges as the leader does."""
    harness.start_operator("--leader-elect", "--leader-election-namespace", harness.namespace)

    async def leader() -> bool:
        return bool(harness.plane.kubectl("get", "lease", "podq-operator", "-n",
                                          harness.namespace, check=False).returncode == 0)
    await eventually(leader, what="the first replica to lead")
    standby = webhook.start_operator("--leader-elect", "--leader-election-namespace",
                                     harness.namespace)
    webhook.register("Fail")
    await webhook.wait_in_force()
    result = webhook.apply(cron("zone", timeZone="Mars/Olympus"))
    assert result.returncode != 0 and "spec.timeZone" in result.stderr, result.stderr
    assert webhook.apply(cron("fine", timeZone="Asia/Tokyo")).returncode == 0
    log = standby.tail(400)
    assert "waits for the lease" in log and "now leads" not in log, log


async def test_json_nested_9000_deep_is_refused_and_the_webhook_lives_on(
    webhook: Webhook, harness: Harness,
) -> None:
    """The API server accepts JSON nested 10,000 levels; the webhook decodes it with
    safejson (no RecursionError) and refuses it naming the field."""
    operator = webhook.start_operator()
    webhook.register("Fail")
    await webhook.wait_in_force()
    deep = '{"a":' * 8999 + "{}" + "}" * 8999
    head = json.dumps({"apiVersion": f"{GROUP}/{VERSION}", "kind": "Job",
                       "metadata": {"name": "deep"}, "spec": {"function": "noop"}})
    manifest = head[:-2] + ', "kwargs": ' + deep + "}}"
    result = harness.plane.kubectl("apply", "-n", harness.namespace, "-f", "-",
                                   input=manifest, check=False)
    assert result.returncode != 0, result.stdout
    assert "spec.kwargs" in result.stderr and "32 levels" in result.stderr, result.stderr[-2000:]
    assert operator.alive
    assert webhook.apply(job("after")).returncode == 0
