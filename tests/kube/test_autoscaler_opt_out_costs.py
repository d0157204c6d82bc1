"""A Deployment that opts out of autoscaling loses the pod-deletion-cost annotations
podq wrote on its pods: they stayed, so its owner's scale-downs (or an HPA's) went on
keeping a pod marked busy long ago over idle ones. On the real API server: the
ReplicaSet controller makes the pods (Pending: no kubelet), the autoscaler marks them
through pods/status as a pass does, from workers' records of running jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from operator_harness import Harness, eventually
from test_operator_autoscale import COST, deployment, live_pods

from podq.operator.autoscaler import OPTED_OUT, Autoscaler
from podq.operator.kube import EventRecorder, KubeClients
from podq.operator.queues import QueuePool

QUEUE = "costs-q"


class HeldCore(client.CoreV1Api):
    """The real pods/status patch; once armed, the next one is held at its start until
    `go` is set (a pass's cost write in flight), and from then on `calls` records when
    it landed and when pod lists began."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api)
        self.armed = False
        self.calls: list[str] = []
        self.reached, self.go = asyncio.Event(), asyncio.Event()

    def arm(self) -> None:
        self.armed, self.calls = True, []
        self.go.clear()

    async def list_namespaced_pod(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("list")
        return await super().list_namespaced_pod(*args, **kwargs)

    async def patch_namespaced_pod_status(self, *args: Any, **kwargs: Any) -> Any:
        if not self.armed:
            return await super().patch_namespaced_pod_status(*args, **kwargs)
        self.armed = False
        self.reached.set()
        await self.go.wait()
        result = await super().patch_namespaced_pod_status(*args, **kwargs)
        self.calls.append("written")
        return result


def autoscaler_as(api: client.ApiClient, events_api: client.ApiClient,
                  pool: QueuePool) -> Autoscaler:
    kube = KubeClients(api=api, custom=client.CustomObjectsApi(api), core=HeldCore(api),
                       apps=client.AppsV1Api(api), autoscaling=client.AutoscalingV2Api(api))
    return Autoscaler(kube, pool, EventRecorder(client.CoreV1Api(events_api)),
                      stabilisation_s=0, owner_check_s=0)


@pytest.fixture
async def autoscaler(harness: Harness, kube_api: client.ApiClient) -> AsyncIterator[Autoscaler]:
    pool = QueuePool(harness.redis_url)
    try:
        yield autoscaler_as(kube_api, kube_api, pool)
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


async def test_an_opt_out_while_a_pass_writes_a_cost_removes_it_once_written(
        harness: Harness, kube_api: client.ApiClient, autoscaler: Autoscaler) -> None:
    """The pass has sent a pod's cost when the opt-out arrives: opt_out() waits for that
    write, then takes it off (listed before it landed, the cost stayed for good)."""
    [pod] = (await scaled_pods(harness, kube_api, autoscaler, {"racing": 1}))["racing"]
    core = autoscaler.kube.core
    assert isinstance(core, HeldCore)
    passing = asyncio.create_task(autoscaler.autoscale_pass())
    core.arm()  # the pass lists the pods first, then writes the cost: held
    await asyncio.wait_for(core.reached.wait(), 30)
    core.calls.clear()
    opting_out = asyncio.create_task(
        autoscaler.opt_out(await relabel(harness, kube_api, "racing", None)))
    # one turn of the loop: opt_out runs up to its wait for the write (it does no I/O
    # before it)
    await asyncio.sleep(0)
    assert not opting_out.done()
    core.go.set()
    cleared = await asyncio.wait_for(opting_out, 30)
    await asyncio.wait_for(passing, 30)
    assert core.calls == ["written", "list"]  # the opt-out's list: once the write landed
    assert cleared is not None and cleared.cleared == (pod,)
    assert await costs(harness, "racing") == {pod: None}


async def test_an_opt_out_without_rights_on_pods_stands_and_says_so(
        harness: Harness, kube_api: client.ApiClient,
        kube_api_unprivileged: client.ApiClient) -> None:
    """As the control plane's unprivileged user (no rights): the Deployment is no longer
    autoscaled all the same, and its Event says the costs could not be removed."""
    pool = QueuePool(harness.redis_url)
    try:
        autoscaler = autoscaler_as(kube_api_unprivileged, kube_api, pool)
        created = await harness.apps.create_namespaced_deployment(
            harness.namespace, deployment("unpermitted", QUEUE))
        autoscaler.observe(kube_api.sanitize_for_serialization(created))
        cleared = await autoscaler.opt_out(await relabel(harness, kube_api, "unpermitted",
                                                         None))
    finally:
        await pool.close()
    assert cleared is not None and cleared.failed.startswith("Forbidden: ")
    assert autoscaler.deployments == {}
    [event] = [e for e in await harness.events("unpermitted") if e.reason == OPTED_OUT]
    assert f"its pods' {COST} could not be removed (Forbidden: " in event.message
