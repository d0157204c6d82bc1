"""Each CronJob slot fires at most once, whatever write fails: ticks driven by hand on the
real API server (no operator running, so nothing else ticks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from operator_harness import (
    GROUP,
    VERSION,
    Harness,
)

from podq.operator.cronjobs import CronMemory, tick
from podq.operator.kube import EventRecorder, patch_job_status
from podq.operator.names import LABEL_CRONJOB

EVERY_MINUTE = "* * * * *"


async def grant(api: client.ApiClient, user: str, namespace: str, rules: list[dict]) -> None:
    """Give `user` these rules in the namespace (and nothing else)."""
    rbac = client.RbacAuthorizationV1Api(api)
    await rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "cron-ticker"}, "rules": rules})
    await rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "cron-ticker"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "cron-ticker"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})


async def test_a_slot_fires_once_though_its_status_write_fails_and_history_is_zero(
    harness: Harness, kube_api: client.ApiClient, kube_api_unprivileged: client.ApiClient,
) -> None:
    """The writer may create Jobs but not write the CronJob's status (as when that patch
    fails); its child finishes and history limit 0 trims it. The slot must not fire
    again when ticks with full rights follow."""
    await grant(kube_api, harness.plane.unprivileged_user, harness.namespace, [
        {"apiGroups": [GROUP], "resources": ["jobs"],
         "verbs": ["get", "list", "create", "delete"]},
        {"apiGroups": [GROUP], "resources": ["cronjobs"], "verbs": ["get", "list"]},
    ])
    await harness.create("cronjobs", "once", {
        "schedule": EVERY_MINUTE, "successfulJobsHistoryLimit": 0,
        "jobTemplate": {"spec": {"function": "noop"}}})
    cron = await harness.get("cronjobs", "once")
    created = datetime.fromisoformat(cron["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    # a moment just after the first slot following creation: that slot is due
    slot = (created + timedelta(minutes=1)).replace(second=0, microsecond=0)
    now = slot + timedelta(seconds=1)
    events = EventRecorder(harness.core)
    restricted = client.CustomObjectsApi(kube_api_unprivileged)
    fired: set[str] = set()  # uids of every child ever seen

    async def seen() -> list[dict]:
        kids = await harness.list_jobs(label_selector=f"{LABEL_CRONJOB}=once")
        fired.update(k["metadata"]["uid"] for k in kids)
        return kids

    with pytest.raises(ApiException) as refused:
        await tick(restricted, events, cron, now, CronMemory())
    assert refused.value.status == 403
    await seen()
    for _ in range(3):  # the operator restarts (fresh memory) and ticks again
        cron = await harness.get("cronjobs", "once")
        await tick(harness.custom, events, cron, now, CronMemory())
        for kid in await seen():
            name = kid["metadata"]["name"]
            if kid["metadata"].get("deletionTimestamp"):  # trimmed: released, as the
                await release(harness, name)  # operator does once the job is finished
            elif (kid.get("status") or {}).get("status") != "complete":
                await patch_job_status(harness.custom, harness.namespace, name,
                                       {"status": "complete"})
    assert len(fired) == 1, f"slot {slot} fired {len(fired)} times"
    cron = await harness.get("cronjobs", "once")
    assert cron["status"]["lastScheduleTime"] == slot.astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    for kid in await harness.list_jobs():  # the Jobs carry our finalizer; no operator here
        await release(harness, kid["metadata"]["name"])


async def release(harness: Harness, name: str) -> None:
    await harness.custom.patch_namespaced_custom_object(
        GROUP, VERSION, harness.namespace, "jobs", name,
        [{"op": "remove", "path": "/metadata/finalizers"}],
        _content_type="application/json-patch+json")
