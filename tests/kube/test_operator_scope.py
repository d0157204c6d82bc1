"""Tenancy on the real API server and redis-server: a Job's key is scoped to its
namespace (docs/security.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kubernetes_asyncio import client
from operator_harness import (
    Harness,
    condition,
    eventually,
    status,
)
from test_metrics_and_status import scrape

from podq import Job
from podq.testing import free_port


def second_namespace(harness: Harness, api: client.ApiClient, logs: Path) -> Harness:
    """A Harness on another namespace of the same control plane and Redis."""
    other = f"{harness.namespace}-b"
    harness.plane.kubectl("create", "namespace", other)
    return Harness(harness.plane, other, harness.redis_url, logs, api)


async def test_same_spec_key_in_two_namespaces_never_meets(
        harness: Harness, kube_api: client.ApiClient, tmp_path: Path) -> None:
    b = second_namespace(harness, kube_api, tmp_path)
    try:
        harness.start_operator("--namespace", b.namespace)
        harness.start_worker(concurrency=4)
        await harness.create_job("long", "nap", key="shared", timeout=120,
                                 kwargs={"seconds": 60})
        running = await harness.wait_status("long", "active")
        assert status(running)["jobKey"] == f"{harness.namespace}/shared"
        # B's Job with A's key is B's own job: its own result, never A's state
        await b.create_job("same-key", "echo", key="shared", kwargs={"from": "b"})
        done = await b.wait_status("same-key", "complete")
        assert status(done)["jobKey"] == f"{b.namespace}/shared"
        assert status(done)["result"] == {"from": "b"}
        await b.delete_job("same-key")

        async def gone(name: str) -> bool:
            return await b.get_job(name) is None
        await eventually(lambda: gone("same-key"), within=30, what="B's Job deleted")
        # B's running job under A's key, then deleted: B's job is aborted, A's runs on
        await b.create_job("same-key-2", "nap", key="shared", timeout=120,
                           kwargs={"seconds": 60})
        await b.wait_status("same-key-2", "active")
        await b.delete_job("same-key-2")
        await eventually(lambda: gone("same-key-2"), within=30, what="B's Job deleted")
        mine = await harness.queue().job(f"{b.namespace}/shared")
        assert mine is not None and getattr(mine.status, "value", mine.status) in (
            "aborting", "aborted")
        job = await harness.queue().job(f"{harness.namespace}/shared")
        assert job is not None and getattr(job.status, "value", job.status) == "active"
        assert status(await harness.get_job("long"))["status"] == "active"
    finally:
        await harness.delete_job("long")
        await b.close()
        harness.plane.discard_namespace(b.namespace)


async def test_job_enqueued_under_the_old_key_form_keeps_it(harness: Harness) -> None:
    """Upgrade: a resource an older operator enqueued under its bare spec.key (status
    shows jobKey == spec.key) is followed there, not enqueued a second time."""
    queue = harness.queue()
    await queue.enqueue(Job("echo", kwargs={"old": True}, key="legacy"))
    await harness.create_job("old", "echo", key="legacy", kwargs={"old": True})
    await harness.custom.patch_namespaced_custom_object_status(
        "podq.dev", "v1alpha1", harness.namespace, "jobs", "old",
        {"status": {"status": "queued", "jobKey": "legacy", "queue": "default"}},
        _content_type="application/merge-patch+json")
    harness.start_operator()
    harness.start_worker()
    body = await harness.wait_status("old", "complete")
    assert status(body)["jobKey"] == "legacy"
    assert status(body)["result"] == {"old": True}
    assert await queue.job(f"{harness.namespace}/legacy") is None


async def test_status_key_naming_another_namespace_is_not_followed(harness: Harness) -> None:
    """A tenant who may write its Job's status (jobs/status) gives it spec.key and
    status.jobKey `victim/secret`, another namespace's job key, before the operator saw
    it: the old-form upgrade path must not lead there (no result read, no abort on
    delete)."""
    queue = harness.queue()
    victim = f"victim-{harness.namespace}/secret"
    await queue.enqueue(Job("echo", kwargs={"private": 1}, key=victim, scheduled=2_000_000_000))
    await harness.create_job("thief", "echo", key=victim, kwargs={"mine": 2})
    await harness.custom.patch_namespaced_custom_object_status(
        "podq.dev", "v1alpha1", harness.namespace, "jobs", "thief",
        {"status": {"status": "queued", "jobKey": victim, "queue": "default"}},
        _content_type="application/merge-patch+json")
    harness.start_operator()
    harness.start_worker()
    body = await harness.wait_status("thief", "complete")
    assert status(body)["jobKey"] == f"{harness.namespace}/{victim}"
    assert status(body)["result"] == {"mine": 2}
    await harness.delete_job("thief")

    async def gone() -> bool:
        return await harness.get_job("thief") is None
    await eventually(gone, within=30, what="the Job deleted")
    job = await queue.job(victim)
    assert job is not None and getattr(job.status, "value", job.status) == "queued"


async def test_queue_not_granted_to_the_namespace_is_refused_visibly(harness: Harness) -> None:
    """Queue access is explicit: a Job (or a CronJob's template) on a queue not granted
    to its namespace fails with QueueNotAllowed, a condition and an Event, and nothing
    reaches that queue; granted queues work."""
    ns = harness.namespace
    port = free_port()
    harness.start_operator("--allow-queue", f"default={ns}", "--allow-queue", "theirs=elsewhere",
                           "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    harness.start_worker()
    stray = await harness.create_job("stray", "echo", queue="theirs", kwargs={"x": 1})
    body = await harness.wait_status("stray", "failed")
    failed = next(c for c in status(body)["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "QueueNotAllowed"
    assert f"namespace {ns} may not use queue 'theirs'" in failed["message"]
    assert "spec.queue" in failed["message"] and "default" in failed["message"]

    async def warned() -> bool:
        return any(e.reason == "QueueNotAllowed" and e.type == "Warning"
                   for e in await harness.events("stray"))
    await eventually(warned, within=20, what="a QueueNotAllowed Event")
    theirs = harness.queue("theirs")
    assert await theirs.job(f"{ns}/stray/{stray['metadata']['uid']}") is None
    assert await theirs.count("queued") == 0
    # the operator wrote no key of that queue; one granted to nobody, it does not even
    # listen to (tenants choose queue names freely)
    assert await theirs.redis.keys("podq:{theirs}:*") == []
    await harness.create_job("nowhere", "echo", queue="nobodys")
    failed = condition(await harness.wait_status("nowhere", "failed"), "Failed")
    assert failed["reason"] == "QueueNotAllowed"
    assert await theirs.redis.keys("podq:{nobodys}:*") == []
    assert await theirs.redis.pubsub_channels("podq:{nobodys}:*") == []
    assert await theirs.redis.pubsub_shardchannels("podq:{nobodys}:*") == []
    # the refused Jobs count under no queue's name in the operator's metrics: not under
    # the queue another namespace was granted, nor one series per made-up name
    async def by_status() -> dict | None:
        samples = await asyncio.to_thread(scrape, port)
        series = {dict(labels)["queue"]: value for (name, labels), value in samples.items()
                  if name == "podq_operator_job_resources_by_status"}
        return series if series.get("_not_allowed") == 2 else None
    series = await eventually(by_status, within=30, what="2 refused Jobs in the metrics")
    assert set(series) == {"_not_allowed"}, series

    await harness.delete_job("stray")

    async def stray_gone() -> bool:
        return await harness.get_job("stray") is None
    await eventually(stray_gone, within=20, what="the refused Job deleted")
    assert await theirs.redis.keys("podq:{theirs}:*") == []

    await harness.create_job("granted", "echo", kwargs={"y": 2})
    assert status(await harness.wait_status("granted", "complete"))["result"] == {"y": 2}

    await harness.create("cronjobs", "stray-cron", {
        "schedule": "* * * * * *", "jobTemplate": {"spec": {"function": "echo",
                                                            "queue": "theirs"}}})

    async def stalled() -> dict | None:
        body = await harness.get("cronjobs", "stray-cron")
        conditions = (body or {}).get("status", {}).get("conditions") or ()
        return next((c for c in conditions if c["type"] == "Stalled"
                     and c["status"] == "True" and c["reason"] == "QueueNotAllowed"), None)
    stall = await eventually(stalled, within=30, what="the CronJob Stalled: QueueNotAllowed")
    assert "jobTemplate.spec.queue" in stall["message"]
    listed = await harness.custom.list_namespaced_custom_object(
        "podq.dev", "v1alpha1", ns, "jobs", label_selector="podq.dev/cronjob=stray-cron")
    assert listed["items"] == []

    async def cron_warned() -> bool:
        return any(e.reason == "QueueNotAllowed" for e in await harness.events("stray-cron"))
    await eventually(cron_warned, within=20, what="a QueueNotAllowed Event on the CronJob")
