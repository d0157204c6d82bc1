"""The autoscaler on a real control plane: kube-controller-manager runs the Deployment
and ReplicaSet controllers (Pods stay Pending without a kubelet), and local worker
processes play the Pods, each reporting its Pod's name as hostname."""

from __future__ import annotations

import time

import pytest
from kubernetes_asyncio import client
from operator_harness import (
    Harness,
    Process,
    eventually,
)

from podq.queue.keys import QueueKeys

COST = "controller.kubernetes.io/pod-deletion-cost"


def deployment(name: str, queue: str, **annotations: str) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"podq.dev/queue": queue},
                     "annotations": annotations},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "automountServiceAccountToken": False,
                "containers": [{"name": "worker", "image": "podq-worker:test"}]}},
        },
    }


async def replicas(harness: Harness, name: str) -> int:
    scale = await harness.apps.read_namespaced_deployment_scale(name, harness.namespace)
    return scale.spec.replicas or 0


async def live_pods(harness: Harness, app: str) -> dict[str, dict]:
    pods = await harness.core.list_namespaced_pod(harness.namespace, label_selector=f"app={app}")
    return {p.metadata.name: (p.metadata.annotations or {}) for p in pods.items
            if not p.metadata.deletion_timestamp}


@pytest.mark.timeout(240)
async def test_scales_zero_to_n_to_zero_and_spares_busy_pods(harness: Harness) -> None:
    queue = "scaled"
    harness.start_operator()
    await harness.apps.create_namespaced_deployment(harness.namespace, deployment(
        "workers", queue, **{"podq.dev/max-replicas": "3", "podq.dev/concurrency": "2"}))

    # from zero: the first Job's enqueue notification scales the Deployment up
    started = time.monotonic()
    await harness.create_job("long", "nap", queue=queue, kwargs={"seconds": 120}, timeout=300)
    await eventually(lambda: replicas(harness, "workers"), within=60, what="scale from zero",
                     interval=0.05)
    from_zero_s = time.monotonic() - started
    # the docs' "within about a second", with margin for a loaded machine (the Job's
    # creation and the operator's enqueue are in it too; 3 s was too tight)
    assert from_zero_s < 6, f"scaled from zero after {from_zero_s:.2f}s"
    for index in range(4):
        await harness.create_job(f"short-{index}", "noop", queue=queue)

    async def three() -> bool:
        return await replicas(harness, "workers") == 3
    await eventually(three, within=20, what="3 replicas for 5 jobs at concurrency 2")

    # the ReplicaSet made Pods; a worker process plays each one
    pods = await eventually(lambda: _pods_exactly(harness, 3), within=30, what="3 pods")
    workers: dict[str, Process] = {
        name: harness.start_worker(queue, pod_name=name, concurrency=2) for name in pods}
    for index in range(4):
        await harness.wait_status(f"short-{index}", "complete", within=60)
    long_job = await harness.wait_status("long", "active", within=60)
    busy_worker = long_job["status"]["worker"]

    async def busy_pod_marked() -> str | None:
        marked = {n: a.get(COST) for n, a in (await live_pods(harness, "workers")).items()}
        busy = [n for n, cost in marked.items() if cost and int(cost) > 0]
        return busy[0] if len(busy) == 1 and all(c is not None for c in marked.values()) \
            else None
    busy = await eventually(busy_pod_marked, within=20, what="the busy pod's deletion cost")
    assert busy_worker.startswith(busy + ":")

    # depth is now 1 (the long job): after the stabilisation window, one replica, and
    # the ReplicaSet removes the idle pods, not the busy one
    async def one() -> bool:
        return await replicas(harness, "workers") == 1
    await eventually(one, within=30, what="scale down to 1")

    async def only_busy_left() -> bool:
        return list(await live_pods(harness, "workers")) == [busy]
    await eventually(only_busy_left, within=30, what="idle pods deleted first")
    for name, process in workers.items():
        if name != busy:
            process.stop()  # the kubelet would have stopped them
    assert (await harness.get_job("long"))["status"]["status"] == "active"

    # the last job goes: down to zero
    await harness.delete_job("long")

    async def zero() -> bool:
        return await replicas(harness, "workers") == 0
    await eventually(zero, within=30, what="scale down to 0")


async def _pods_exactly(harness: Harness, count: int) -> dict[str, dict] | None:
    pods = await live_pods(harness, "workers")
    return pods if len(pods) == count else None


async def test_leaves_deployments_owned_by_an_hpa_alone(harness: Harness) -> None:
    harness.start_operator()
    await harness.apps.create_namespaced_deployment(harness.namespace,
                                                    deployment("hpa-workers", "hpa-queue"))
    autoscaling = client.AutoscalingV2Api(harness.core.api_client)
    await autoscaling.create_namespaced_horizontal_pod_autoscaler(harness.namespace, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "hpa-workers"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": "hpa-workers"},
            "minReplicas": 1, "maxReplicas": 2,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
        },
    })
    await harness.create_job("wants-workers", "noop", queue="hpa-queue")

    async def left_alone() -> bool:
        events = await harness.events("hpa-workers")
        return any(e.reason == "ScalingLeftToOthers" for e in events)
    await eventually(left_alone, within=30, what="the operator to step aside")
    assert [e for e in await harness.events("hpa-workers") if e.reason == "Scaled"] == []


KEDA_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "scaledobjects.keda.sh"},
    "spec": {
        "group": "keda.sh", "scope": "Namespaced",
        "names": {"kind": "ScaledObject", "plural": "scaledobjects",
                  "singular": "scaledobject", "listKind": "ScaledObjectList"},
        "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {
            "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}


async def test_leaves_deployments_owned_by_a_keda_scaledobject_alone(harness: Harness) -> None:
    """KEDA's CRD (only its shape: no KEDA runs here) and a ScaledObject targeting the
    Deployment."""
    extensions = client.ApiextensionsV1Api(harness.core.api_client)
    try:
        await extensions.create_custom_resource_definition(KEDA_CRD)
    except client.ApiException as error:
        if error.status != 409:  # another test run created it
            raise
    harness.plane.kubectl("wait", "--for=condition=Established",
                          "crd/scaledobjects.keda.sh", "--timeout=60s")

    async def served() -> bool:
        return harness.plane.kubectl("get", "scaledobjects.keda.sh", "-n", harness.namespace,
                                     check=False).returncode == 0
    await eventually(served, within=60, what="the ScaledObject kind to be served")
    harness.start_operator()
    await harness.custom.create_namespaced_custom_object(
        "keda.sh", "v1alpha1", harness.namespace, "scaledobjects",
        {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
         "metadata": {"name": "keda-workers"},
         "spec": {"scaleTargetRef": {"name": "keda-workers"}}})
    await harness.apps.create_namespaced_deployment(harness.namespace,
                                                    deployment("keda-workers", "keda-queue"))
    await harness.create_job("wants-keda-workers", "noop", queue="keda-queue")

    async def left_alone() -> bool:
        events = await harness.events("keda-workers")
        return any(e.reason == "ScalingLeftToOthers" for e in events)
    await eventually(left_alone, within=30, what="the operator to step aside")
    assert await replicas(harness, "keda-workers") == 0


async def test_a_deployment_on_a_queue_granted_to_no_namespace_is_not_autoscaled(
        harness: Harness) -> None:
    """Anyone who may create a Deployment picks its podq.dev/queue label: one on a queue
    granted to nobody gets a Warning Event, is not scaled, and that queue gets no
    listener (each made-up name cost a connection, a subscription and metric series)."""
    harness.start_operator("--allow-queue", f"granted={harness.namespace}")
    await harness.apps.create_namespaced_deployment(
        harness.namespace, deployment("made-up", "made-up-queue", **{
            "podq.dev/min-replicas": "2"}))
    await harness.apps.create_namespaced_deployment(
        harness.namespace, deployment("granted", "granted", **{
            "podq.dev/min-replicas": "1"}))
    await eventually(lambda: _scaled_to(harness, "granted", 1), within=60,
                     what="the granted queue's Deployment scaled to its minimum")

    async def warned() -> bool:
        return any(e.reason == "QueueNotAllowed" and e.type == "Warning"
                   and "made-up-queue" in e.message
                   for e in await harness.events("made-up"))
    await eventually(warned, within=30, what="a QueueNotAllowed Event on the Deployment")
    assert await replicas(harness, "made-up") == 0
    redis = harness.queue("made-up-queue").redis
    assert await redis.pubsub_shardchannels("podq:{made-up-queue}:*") == []
    assert await redis.pubsub_shardchannels("podq:{granted}:*")


async def _scaled_to(harness: Harness, name: str, count: int) -> bool:
    return await replicas(harness, name) == count


async def test_a_deployment_whose_queue_label_is_removed_is_no_longer_autoscaled(
        harness: Harness) -> None:
    """Removing podq.dev/queue opts a Deployment out: once the operator says so (Event
    AutoscalingStopped) it never scales it again, while another Deployment of the queue
    still is (kopf's label filter passed no event for the removal: the operator went on
    scaling it)."""
    queue = "opt-out"
    harness.start_operator("--redis-url", f"{harness.redis_url}?client_name={OPERATOR_CLIENT}")
    scaling = {"podq.dev/max-replicas": "3", "podq.dev/concurrency": "1"}
    for name in ("kept", "opted-out"):
        await harness.apps.create_namespaced_deployment(
            harness.namespace, deployment(name, queue, **scaling))
    await harness.create_job("first", "noop", queue=queue)  # no worker runs: it stays queued
    for name in ("kept", "opted-out"):
        await eventually(lambda name=name: _scaled_to(harness, name, 1), within=60,
                         what=f"{name} scaled from zero")

    async def marked(name: str) -> bool:  # the ReplicaSet's pod, then a pass marks it
        pods = await live_pods(harness, name)
        return len(pods) == 1 and all(COST in a for a in pods.values())
    for name in ("kept", "opted-out"):
        await eventually(lambda name=name: marked(name), within=60,
                         what=f"{name}'s pod-deletion-cost")

    await harness.apps.patch_namespaced_deployment(
        "opted-out", harness.namespace, {"metadata": {"labels": {"podq.dev/queue": None}}})

    async def said_so() -> bool:
        return any(e.reason == "AutoscalingStopped" and e.type == "Normal"
                   for e in await harness.events("opted-out"))
    await eventually(said_so, within=30, what="an AutoscalingStopped Event")
    # the cost podq wrote is gone from its pod (it stayed, for scale-downs to go by)
    assert [COST in a for a in (await live_pods(harness, "opted-out")).values()] == [False]
    # two more jobs: one pass scales `kept` to 2, a later one to 3 (passes run one at a
    # time), so a pass that would have scaled `opted-out` too is over by then
    await harness.create_job("second", "noop", queue=queue)
    await eventually(lambda: _scaled_to(harness, "kept", 2), within=60, what="kept at 2")
    await harness.create_job("third", "noop", queue=queue)
    await eventually(lambda: _scaled_to(harness, "kept", 3), within=60, what="kept at 3")
    assert await replicas(harness, "opted-out") == 1
    assert [COST in a for a in (await live_pods(harness, "opted-out")).values()] == [False]

    # the last Deployment of the queue opts out too, then its Job resources go: nothing
    # needs the queue any more, so its listener and connections go (the default
    # queue's, kept for good, stay); they stayed while the operator ran
    before = await operator_connections(harness)
    await harness.apps.patch_namespaced_deployment(
        "kept", harness.namespace, {"metadata": {"labels": {"podq.dev/queue": None}}})
    for name in ("first", "second", "third"):
        await harness.delete_job(name)

    async def released() -> bool:
        return await subscribers(harness, queue) == 0
    await eventually(released, within=60, what="the queue's listener gone")
    assert await subscribers(harness, "default") == 1

    async def fewer() -> int | None:
        count = await operator_connections(harness)
        return count if count < before else None
    after = await eventually(fewer, within=30, what="the queue's connections closed")
    print(f"operator connections: {before} -> {after}")


OPERATOR_CLIENT = "podq-operator-under-test"


async def operator_connections(harness: Harness) -> int:
    clients = await harness.queue().redis.client_list()
    return sum(1 for c in clients if c.get("name") == OPERATOR_CLIENT)


async def subscribers(harness: Harness, queue: str) -> int:
    [(_, count)] = await harness.queue().redis.pubsub_shardnumsub(QueueKeys(queue).changes)
    return int(count)
