"""A queue the operator opened for Job resources only (no autoscaled Deployment on it) is
released with its last Job resource: its Redis connections and change listener close,
counted on the server (CLIENT LIST of the operator's named connections, SHARDNUMSUB of
the queue's change channel). Tenants choose queue names freely: every name ever used
kept a connection pool and a listener open for good. Real operator, API server, workers
and redis-server; the last test runs the status writer's pass itself, held at a real
API read (an asyncio.Event) while its queue's last Job goes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio import client
from operator_harness import GROUP, VERSION, Harness, eventually, status
from test_autoscaler_queues import POOL_CLIENT, pool_connections, stop
from test_operator_autoscale import (  # the operator's connections by their CLIENT SETNAME
    OPERATOR_CLIENT,
    operator_connections,
    subscribers,
)

from podq.operator.kube import EventRecorder
from podq.operator.mirror import StatusMirror
from podq.operator.names import JOB_FINALIZER, job_key
from podq.operator.queues import QueuePool
from podq.operator.registry import JobRegistry


async def idle_operator(harness: Harness) -> int:
    """Start the operator; its connections once it listens to the default queue only."""
    harness.start_operator("--redis-url",
                           f"{harness.redis_url}?client_name={OPERATOR_CLIENT}")

    async def listening() -> bool:
        return await subscribers(harness, "default") == 1
    await eventually(listening, within=30, what="the default queue's listener")
    return await operator_connections(harness)


async def back_to(harness: Harness, baseline: int, queues: list[str], what: str) -> None:
    """Wait until no listener of `queues` is left and the operator's connections are
    down to `baseline`."""
    async def released() -> bool:
        return all([await subscribers(harness, q) == 0 for q in queues])
    await eventually(released, within=60, what=f"{what}: listeners closed")

    async def connections() -> bool:
        return await operator_connections(harness) <= baseline
    await eventually(connections, within=60, what=f"{what}: connections closed")


@pytest.mark.timeout(240)
async def test_a_queue_goes_with_its_last_job_resource_and_comes_back_with_the_next(
        harness: Harness) -> None:
    queue = "jobs-only"
    baseline = await idle_operator(harness)
    harness.start_worker(queue)
    await harness.wait_workers(1, queue)

    # two Jobs; the first is deleted by its ttl once complete: the second holds the queue
    await harness.create_job("by-ttl", "noop", queue=queue, ttlSecondsAfterFinished=1)
    await harness.create_job("kept", "noop", queue=queue)
    await harness.wait_status("kept", "complete")
    assert await subscribers(harness, queue) == 1
    opened = await operator_connections(harness)
    assert opened > baseline

    await eventually(lambda: gone(harness, "by-ttl"), within=30, what="the ttl deletion")
    assert await subscribers(harness, queue) == 1

    # the last Job resource deleted: the queue's listener and connections go
    await harness.delete_job("kept")
    await back_to(harness, baseline, [queue], "the last Job deleted")

    # a Job on that queue again: reopened, and it completes
    await harness.create_job("again", "noop", queue=queue)
    await harness.wait_status("again", "complete")
    assert await subscribers(harness, queue) == 1

    # deleted, and one created right after, while the queue is being released: it
    # completes all the same (its queue reopened, or kept); the last one, it then goes
    # by its ttl
    await harness.delete_job("again")
    await harness.create_job("right-after", "noop", queue=queue, ttlSecondsAfterFinished=5)
    await harness.wait_status("right-after", "complete")
    await eventually(lambda: gone(harness, "right-after"), within=30,
                     what="the ttl deletion")
    await back_to(harness, baseline, [queue], "the last Job deleted by its ttl")
    print(f"operator connections: {baseline} idle, {opened} with the queue,"
          f" {await operator_connections(harness)} after")


@pytest.mark.timeout(240)
async def test_jobs_on_many_queue_names_leave_nothing_open_once_deleted(
        harness: Harness) -> None:
    """20 queue names, a queued Job on each (no worker): once the Jobs are deleted, each
    job is aborted (the finalizer, before the release) and the operator holds no
    connection or listener for any of those queues."""
    queues = [f"tenant-q{n}" for n in range(20)]
    baseline = await idle_operator(harness)
    for queue in queues:
        await harness.create_job(queue, "noop", queue=queue)
    keys = {}
    for queue in queues:
        body = await harness.wait_job(queue, lambda b: bool(status(b).get("jobKey"))
                                      and status(b).get("status") == "queued",
                                      what=f"Job {queue} queued")
        keys[queue] = status(body)["jobKey"]

    async def all_listening() -> bool:
        return all([await subscribers(harness, q) == 1 for q in queues])
    await eventually(all_listening, within=60, what="a listener per queue")
    opened = await operator_connections(harness)
    assert opened >= baseline + len(queues)  # a listener's connection each at least

    for queue in queues:
        await harness.delete_job(queue)
    await back_to(harness, baseline, queues, "20 queues' Jobs deleted")
    for queue in queues:
        job = await harness.queue(queue).job(keys[queue])
        assert job is not None and job.status.value == "aborted", (queue, job)
    assert await subscribers(harness, "default") == 1
    print(f"operator connections: {baseline} idle, {opened} with 20 queues,"
          f" {await operator_connections(harness)} after")


class HeldCustom(client.CustomObjectsApi):
    """The real read of one Job resource (a pass reading back the arguments of a job
    Redis lost), held at its start until `go` is set."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api)
        self.reached, self.go = asyncio.Event(), asyncio.Event()

    async def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.set()
        await self.go.wait()
        return await super().get_namespaced_custom_object(*args, **kwargs)


async def test_a_queue_whose_last_job_goes_during_a_status_pass_is_released_after_it(
        harness: Harness, kube_api: client.ApiClient) -> None:
    """The status writer's pass holds the queue (it has read it and is reading the Job's
    arguments back from the API server: Redis lost its job) when the Job is deleted: the
    queue is not closed under the pass, which ends normally, and goes after it."""
    queue = "lost-q"
    pool = QueuePool(f"{harness.redis_url}?client_name={POOL_CLIENT}")
    registry = JobRegistry()
    custom = HeldCustom(kube_api)
    events = EventRecorder(client.CoreV1Api(kube_api))
    mirror = StatusMirror(custom=custom, events=events, pool=pool, registry=registry)
    pool.users.append(registry.uses)
    releases = asyncio.create_task(pool.run_releases())
    try:
        created = await harness.custom.create_namespaced_custom_object(
            GROUP, VERSION, harness.namespace, "jobs", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "Job",
                "metadata": {"name": "lost", "finalizers": [JOB_FINALIZER]},
                "spec": {"function": "noop", "queue": queue, "kwargs": {"n": 1}}})
        meta = created["metadata"]
        key = job_key(harness.namespace, "lost", meta["uid"], None, None)
        body = await harness.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, harness.namespace, "jobs", "lost",
            {"status": {"status": "queued", "jobKey": key}},
            _content_type="application/merge-patch+json")
        resource, _ = registry.observe(body)
        assert resource.arguments_dropped  # enqueued once: its kwargs are read back

        passing = asyncio.create_task(mirror._dispatch([resource.uid]))
        await asyncio.wait_for(custom.reached.wait(), 30)
        assert pool.names() == [queue]
        # deleted meanwhile (our finalizer removed by hand): the watch handler's calls
        await harness.custom.patch_namespaced_custom_object(
            GROUP, VERSION, harness.namespace, "jobs", "lost",
            [{"op": "remove", "path": "/metadata/finalizers"}],
            _content_type="application/json-patch+json")
        await harness.delete_job("lost")
        await eventually(lambda: gone(harness, "lost"), within=30, what="the Job gone")
        mirror.forget(resource.uid)
        await mirror.finalizer.gone(resource.uid)
        await pool.release_unused()  # what the release task runs: left for after the pass
        assert pool.names() == [queue] and pool.unused == {queue}

        custom.go.set()
        started = await asyncio.wait_for(passing, 30)
        # the pass ended normally: the Job gone, its job is not enqueued again
        assert await asyncio.gather(*started) == ["missing"]
        assert await harness.queue(queue).job(key) is None

        async def released() -> bool:
            return not pool.names() and await pool_connections(harness) == 0
        await eventually(released, within=30, what="the queue released after the pass")
        assert await subscribers(harness, queue) == 0
    finally:
        custom.go.set()
        await stop(releases, events, mirror, pool)


async def gone(harness: Harness, name: str) -> bool:
    return await harness.get_job(name) is None
