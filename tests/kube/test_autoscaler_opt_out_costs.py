"""A Deployment that opts out of autoscaling loses the pod-deletion-cost annotations
podq wrote on its pods: they stayed, so its owner's scale-downs (or an HPA's) went on
keeping a pod marked busy long ago over idle ones. On the real API server: the
ReplicaSet controller makes the pods (Pending: no kubelet), the autoscaler marks them
through pods/status as a pass does, from workers' records of running jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client
from operator_harness import Harness, eventually
from test_operator_autoscale import COST, deployment, live_pods

from podq.operator.autoscaler import OPTED_OUT, Autoscaler
from podq.operator.kube import EventRecorder, KubeClients
from podq.operator.queues import QueuePool

QUEUE = "costs-q"


@pytest.fixture
async def autoscaler(harness: Harness, kube_api: client.ApiClient) -> AsyncIterator[Autoscaler]:
    pool = QueuePool(harness.redis_url)
    core = client.CoreV1Api(kube_api)
    kube = KubeClients(api=kube_api, custom=client.CustomObjectsApi(kube_api), core=core,
                       apps=client.AppsV1Api(kube_api),
                       autoscaling=client.AutoscalingV2Api(kube_api))
    try:
        yield Autoscaler(kube, pool, EventRecorder(core), stabilisation_s=0, owner_check_s=0)
    finally:
        await pool.close()


async def scaled_pods(harness: Harness, kube_api: client.ApiClient, autoscaler: Autoscaler,
                      sizes: dict[str, int]) -> dict[str, list[str]]:
    """Deployments autoscaled to a minimum of `sizes`, once their ReplicaSets made the
    pods: name -> its pods' names."""
    for name, size in sizes.items():
        created = await harness.apps.create_namespaced_deployment(harness.namespace, deployment(
            name, QUEUE, **{"podq.dev/min-replicas": str(size)}))
        autoscaler.observe(kube_api.sanitize_for_serialization(created))
    await autoscaler.autoscale_pass()
    pods: dict[str, list[str]] = {}
    for name, size in sizes.items():
        async def made(name: str = name, size: int = size) -> list[str] | None:
            live = await live_pods(harness, name)
            return sorted(live) if len(live) == size else None
        pods[name] = await eventually(made, within=60, what=f"{size} pods of {name}")
    return pods


async def costs(harness: Harness, app: str) -> dict[str, str | None]:
    return {name: annotations.get(COST)
            for name, annotations in (await live_pods(harness, app)).items()}


async def relabel(harness: Harness, kube_api: client.ApiClient, name: str,
                  queue: str | None) -> dict:
    patched = await harness.apps.patch_namespaced_deployment(
        name, harness.namespace, {"metadata": {"labels": {"podq.dev/queue": queue}}})
    return kube_api.sanitize_for_serialization(patched)


async def test_an_opt_out_removes_the_costs_podq_wrote_on_its_pods_only(
        harness: Harness, kube_api: client.ApiClient, autoscaler: Autoscaler) -> None:
    pods = await scaled_pods(harness, kube_api, autoscaler, {"leaving": 3, "staying": 1})
    busy, idle, overridden = pods["leaving"]
    leaving = autoscaler.deployments[(harness.namespace, "leaving")]
    assert await autoscaler.mark_pods(leaving, [{"hostname": busy, "active": ["job"]}]) == 3
    staying = autoscaler.deployments[(harness.namespace, "staying")]
    assert await autoscaler.mark_pods(staying, []) == 1
    assert await costs(harness, "leaving") == {busy: "1000", idle: "0", overridden: "0"}
    # the Deployment's owner sets one pod's cost: that one is theirs, not podq's
    harness.plane.kubectl("annotate", "--overwrite", "pod", overridden, "-n",
                          harness.namespace, f"{COST}=-7")

    cleared = await autoscaler.opt_out(await relabel(harness, kube_api, "leaving", None))
    assert cleared is not None
    assert (sorted(cleared.cleared), cleared.kept, cleared.failed) == (
        sorted([busy, idle]), (overridden,), "")
    assert await costs(harness, "leaving") == {busy: None, idle: None, overridden: "-7"}
    # the other Deployment of the queue is still autoscaled: its pod keeps its cost
    assert await costs(harness, "staying") == {pods["staying"][0]: "0"}
    [event] = [e for e in await harness.events("leaving") if e.reason == OPTED_OUT]
    assert "removed from 2 of its pods, 1 set by others kept" in event.message
    # later passes write none again on the opted-out Deployment's pods
    await autoscaler.autoscale_pass()
    assert await costs(harness, "leaving") == {busy: None, idle: None, overridden: "-7"}


async def test_relabelled_to_a_queue_granted_to_none_its_pods_lose_their_costs(
        harness: Harness, kube_api: client.ApiClient, autoscaler: Autoscaler) -> None:
    pods = await scaled_pods(harness, kube_api, autoscaler, {"moved": 2})
    await autoscaler.autoscale_pass()  # the pods exist now: marked idle
    assert await costs(harness, "moved") == dict.fromkeys(pods["moved"], "0")
    # one marked busy by an operator before this one, which gave no field manager of
    # its own (the API client's default, through pods/status too)
    await harness.core.patch_namespaced_pod_status(
        pods["moved"][0], harness.namespace, {"metadata": {"annotations": {COST: "1000"}}})

    cleared = await autoscaler.refuse(await relabel(harness, kube_api, "moved", "no-grant"))
    assert cleared is not None and sorted(cleared.cleared) == pods["moved"]
    assert await costs(harness, "moved") == dict.fromkeys(pods["moved"], None)
    # refused again (another event of that Deployment): it was not autoscaled then
    again = await harness.apps.read_namespaced_deployment("moved", harness.namespace)
    assert await autoscaler.refuse(kube_api.sanitize_for_serialization(again)) is None
