"""A queue the operator opened for Job resources only (no autoscaled Deployment on it) is
released with its last Job resource: its Redis connections and change listener close,
counted on the server (CLIENT LIST of the operator's named connections, SHARDNUMSUB of
the queue's change channel). Tenants choose queue names freely: every name ever used
kept a connection pool and a listener open for good. Real operator, API server, workers
and redis-server."""

from __future__ import annotations

import pytest
from operator_harness import Harness, eventually, status
from test_operator_autoscale import (  # the operator's connections by their CLIENT SETNAME
    OPERATOR_CLIENT,
    operator_connections,
    subscribers,
)


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

    async def gone(name: str) -> bool:
        return await harness.get_job(name) is None
    await eventually(lambda: gone("by-ttl"), within=30, what="the ttl deletion")
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
    await eventually(lambda: gone("right-after"), within=30, what="the ttl deletion")
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
