"""The autoscaler's domain functions on the real control plane and the real redis-server:
what it keeps per queue goes with the queue's last Deployment (unless Job resources still
need it), and a Deployment that opts out during a pass is not scaled by that pass after
opt_out() returned. The API calls are the real ones: a test only holds one of them back
(an asyncio.Event) to choose where the pass is when the opt-out arrives."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes_asyncio import client
from operator_harness import Harness, eventually
from test_operator_autoscale import deployment, replicas, subscribers

from podq.operator.autoscaler import OPTED_OUT, Autoscaler
from podq.operator.kube import EventRecorder, KubeClients
from podq.operator.mirror import StatusMirror
from podq.operator.queues import QueuePool
from podq.operator.registry import JobRegistry

POOL_CLIENT = "podq-autoscaler-test"  # CLIENT SETNAME of the pool's connections


class HeldApps(client.AppsV1Api):
    """The real scale patch, held at its start until `go` is set."""

    def __init__(self, api: client.ApiClient, order: list[str]) -> None:
        super().__init__(api)
        self.order = order
        self.reached, self.go = asyncio.Event(), asyncio.Event()
        self.go.set()

    async def patch_namespaced_deployment_scale(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.set()
        await self.go.wait()
        result = await super().patch_namespaced_deployment_scale(*args, **kwargs)
        self.order.append("patched")
        return result


class HeldAutoscaling(client.AutoscalingV2Api):
    """The real HPA list (the last API read of a pass before its patch), held likewise."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api)
        self.reached, self.go = asyncio.Event(), asyncio.Event()
        self.go.set()

    async def list_namespaced_horizontal_pod_autoscaler(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.set()
        await self.go.wait()
        return await super().list_namespaced_horizontal_pod_autoscaler(*args, **kwargs)


class RecordedCore(client.CoreV1Api):
    """Records the reason of each Event as it is posted; the real pod list (the pass's
    API read between its queue reads) held at its start until `go` is set: the first
    list only, so that an opt-out's own (taking podq's pod costs off) goes through."""

    def __init__(self, api: client.ApiClient, order: list[str]) -> None:
        super().__init__(api)
        self.order = order
        self.reached, self.go = asyncio.Event(), asyncio.Event()
        self.go.set()

    async def list_namespaced_pod(self, *args: Any, **kwargs: Any) -> Any:
        if not self.reached.is_set():
            self.reached.set()
            await self.go.wait()
        return await super().list_namespaced_pod(*args, **kwargs)

    async def create_namespaced_event(self, namespace: str, body: Any, **kwargs: Any) -> Any:
        self.order.append(body["reason"])
        return await super().create_namespaced_event(namespace, body, **kwargs)


@dataclass
class Rig:
    autoscaler: Autoscaler
    registry: JobRegistry
    mirror: StatusMirror  # finalizer.gone(): a Job deleted, as the watch handler says
    core: RecordedCore
    apps: HeldApps
    autoscaling: HeldAutoscaling
    order: list[str]  # patches and Events, as they happened


@pytest.fixture
async def rig(harness: Harness, kube_api: client.ApiClient) -> AsyncIterator[Rig]:
    """An Autoscaler on a pool whose Redis connections carry a name of their own, with
    the Job registry and the autoscaler as the pool's users and its release task
    running, as the operator's startup wires them."""
    pool = QueuePool(f"{harness.redis_url}?client_name={POOL_CLIENT}")
    registry = JobRegistry()
    order: list[str] = []
    core = RecordedCore(kube_api, order)
    apps, autoscaling = HeldApps(kube_api, order), HeldAutoscaling(kube_api)
    kube = KubeClients(api=kube_api, custom=client.CustomObjectsApi(kube_api),
                       core=core, apps=apps, autoscaling=autoscaling)
    events = EventRecorder(kube.core)
    scaler = Autoscaler(kube, pool, events, stabilisation_s=0, owner_check_s=0)
    mirror = StatusMirror(custom=kube.custom, events=events, pool=pool, registry=registry)
    pool.users.extend([registry.uses, scaler.uses])
    releases = asyncio.create_task(pool.run_releases())
    try:
        yield Rig(scaler, registry, mirror, core, apps, autoscaling, order)
    finally:
        await stop(releases, events, mirror, pool)


async def stop(releases: asyncio.Task[None], events: EventRecorder, mirror: StatusMirror,
               pool: QueuePool) -> None:
    """Stop the pool's release task, then close what the operator's cleanup closes."""
    releases.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await releases
    await events.close()
    await mirror.close()
    await pool.close()


async def opened(pool: QueuePool, names: list[str]) -> bool:
    """Whether exactly these queues are open and no release is pending."""
    return sorted(pool.names()) == names and not pool.unused


async def settled(pool: QueuePool) -> bool:
    return not pool.unused


async def pool_connections(harness: Harness) -> int:
    clients = await harness.queue().redis.client_list()
    return sum(1 for c in clients if c.get("name") == POOL_CLIENT)


async def create(harness: Harness, kube_api: client.ApiClient, name: str, queue: str,
                 **annotations: str) -> dict:
    created = await harness.apps.create_namespaced_deployment(
        harness.namespace, deployment(name, queue, **annotations))
    return kube_api.sanitize_for_serialization(created)


async def unlabel(harness: Harness, kube_api: client.ApiClient, name: str) -> dict:
    patched = await harness.apps.patch_namespaced_deployment(
        name, harness.namespace, {"metadata": {"labels": {"podq.dev/queue": None}}})
    return kube_api.sanitize_for_serialization(patched)


async def test_the_last_deployment_of_a_queue_takes_its_connections_unless_jobs_need_them(
        harness: Harness, kube_api: client.ApiClient, rig: Rig) -> None:
    autoscaler = rig.autoscaler
    """Counted on the server (CLIENT LIST, SHARDNUMSUB): the operator kept a connection
    pool and a subscription for a queue nobody autoscaled any more, for good."""
    registry = rig.registry
    pool = autoscaler.pool
    autoscaler.observe(await create(harness, kube_api, "solo", "solo-q"))
    autoscaler.observe(await create(harness, kube_api, "beside-jobs", "jobs-q"))
    job, _ = registry.observe(await harness.create_job("waiting", "noop", queue="jobs-q"))
    await autoscaler.autoscale_pass()

    async def both_subscribed() -> bool:
        return [await subscribers(harness, q) for q in ("solo-q", "jobs-q")] == [1, 1]
    await eventually(both_subscribed, within=30, what="both queues' listeners")
    before = await pool_connections(harness)

    # the last Deployment of solo-q opts out: its queue is closed, its series dropped by
    # the next pass
    assert await autoscaler.opt_out(await unlabel(harness, kube_api, "solo"))
    await eventually(lambda: opened(pool, ["jobs-q"]), within=30, what="solo-q released")
    await autoscaler.autoscale_pass()
    assert "solo-q" not in autoscaler.seen
    assert await subscribers(harness, "solo-q") == 0

    async def fewer() -> int | None:
        count = await pool_connections(harness)
        return count if count < before else None
    after_opt_out = await eventually(fewer, within=30, what="solo-q's connections closed")

    # the last Deployment of jobs-q is deleted: a Job resource still needs the queue
    await harness.apps.delete_namespaced_deployment("beside-jobs", harness.namespace)
    autoscaler.forget(harness.namespace, "beside-jobs")
    await autoscaler.autoscale_pass()
    await eventually(lambda: settled(pool), within=30, what="the release task idle")
    assert pool.names() == ["jobs-q"]
    assert await subscribers(harness, "jobs-q") == 1
    assert await pool_connections(harness) == after_opt_out

    # the Job resource gone too (deleted, as the watch handler reports it): released,
    # nothing left open
    await harness.custom.delete_namespaced_custom_object(
        "podq.dev", "v1alpha1", harness.namespace, "jobs", "waiting")
    await rig.mirror.finalizer.gone(job.uid)
    await eventually(lambda: opened(pool, []), within=30, what="jobs-q released")
    assert pool.unused == set()
    assert await subscribers(harness, "jobs-q") == 0

    async def none_left() -> bool:
        return await pool_connections(harness) == 0
    await eventually(none_left, within=30, what="every pool connection closed")
    print(f"pool connections: {before} with two queues, {after_opt_out} after the"
          f" opt-out, 0 once the Job went")


async def test_an_opt_out_while_a_pass_reads_stops_that_pass_from_scaling(
        harness: Harness, kube_api: client.ApiClient, rig: Rig) -> None:
    autoscaler = rig.autoscaler
    """The pass has read the queue and is reading the API when the opt-out arrives:
    once opt_out() has returned, the pass does not scale the Deployment."""
    held = rig.autoscaling
    autoscaler.observe(await create(harness, kube_api, "raced", "race-q",
                                    **{"podq.dev/min-replicas": "1"}))
    held.go.clear()
    passing = asyncio.create_task(autoscaler.autoscale_pass())
    await asyncio.wait_for(held.reached.wait(), 30)
    assert await autoscaler.opt_out(await unlabel(harness, kube_api, "raced"))
    held.go.set()
    await asyncio.wait_for(passing, 30)
    assert await replicas(harness, "raced") == 0
    assert "Scaled" not in rig.order
    assert autoscaler.desired == {}


async def test_an_opt_out_while_a_scale_is_sent_returns_after_it(
        harness: Harness, kube_api: client.ApiClient, rig: Rig) -> None:
    autoscaler = rig.autoscaler
    """The pass has sent its patch when the opt-out arrives: opt_out() waits for it, so
    the Deployment is scaled before the AutoscalingStopped Event, never after."""
    held, order = rig.apps, rig.order
    autoscaler.observe(await create(harness, kube_api, "sent", "sent-q",
                                    **{"podq.dev/min-replicas": "1"}))
    held.go.clear()
    passing = asyncio.create_task(autoscaler.autoscale_pass())
    await asyncio.wait_for(held.reached.wait(), 30)
    unlabelled = await unlabel(harness, kube_api, "sent")
    opting_out = asyncio.create_task(autoscaler.opt_out(unlabelled))
    # one turn of the loop: opt_out runs up to its first wait (no I/O of its own before
    # it waits for the patch; without that wait, it has begun to post its Event)
    await asyncio.sleep(0)
    held.go.set()
    assert await asyncio.wait_for(opting_out, 30)
    assert await replicas(harness, "sent") == 1  # scaled before opt_out returned
    await asyncio.wait_for(passing, 30)
    assert order == ["patched", "Scaled", OPTED_OUT]
    assert await replicas(harness, "sent") == 1


async def test_a_relabelled_deployment_takes_its_old_queue_along(
        harness: Harness, kube_api: client.ApiClient, rig: Rig) -> None:
    autoscaler = rig.autoscaler
    autoscaler.observe(await create(harness, kube_api, "moving", "old-q"))
    await autoscaler.autoscale_pass()
    assert autoscaler.pool.names() == ["old-q"]
    moved = await harness.apps.patch_namespaced_deployment(
        "moving", harness.namespace, {"metadata": {"labels": {"podq.dev/queue": "new-q"}}})
    autoscaler.observe(kube_api.sanitize_for_serialization(moved))
    await eventually(lambda: opened(autoscaler.pool, ["new-q"]), within=30,
                     what="old-q released")
    await autoscaler.autoscale_pass()
    assert sorted(autoscaler.seen) == ["new-q"]


async def test_a_queue_left_while_a_pass_reads_it_is_released_after_that_pass(
        harness: Harness, kube_api: client.ApiClient, rig: Rig) -> None:
    """The pass has read the queue's workers and is listing pods when the Deployment opts
    out and the queue's last Job resource is deleted: the queue is not closed under the
    pass (its reads after the pod list go on), and is closed once the pass is done."""
    autoscaler, pool, held = rig.autoscaler, rig.autoscaler.pool, rig.core
    autoscaler.observe(await create(harness, kube_api, "reader", "read-q"))
    job, _ = rig.registry.observe(await harness.create_job("reading", "noop", queue="read-q"))
    await harness.queue("read-q").enqueue("noop")  # a depth of 1 for the pass to read
    held.go.clear()
    reconciling = asyncio.create_task(
        autoscaler.reconcile(autoscaler.deployments[(harness.namespace, "reader")]))
    await asyncio.wait_for(held.reached.wait(), 30)
    assert await autoscaler.opt_out(await unlabel(harness, kube_api, "reader"))
    await harness.custom.delete_namespaced_custom_object(
        "podq.dev", "v1alpha1", harness.namespace, "jobs", "reading")
    await rig.mirror.finalizer.gone(job.uid)
    await pool.release_unused()  # what the release task runs: left for after the pass
    assert pool.names() == ["read-q"]
    assert pool.unused == {"read-q"}
    held.go.set()
    outcome = await asyncio.wait_for(reconciling, 30)
    assert outcome.reason == OPTED_OUT  # not scaled: opted out during the pass
    assert autoscaler.seen["read-q"] == (1, 0)  # read on the queue after the hold
    await eventually(lambda: opened(pool, []), within=30, what="read-q released")
    assert await subscribers(harness, "read-q") == 0

    async def none_left() -> bool:
        return await pool_connections(harness) == 0
    await eventually(none_left, within=30, what="every pool connection closed")
