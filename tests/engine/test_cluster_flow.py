"""Flow control (issue 14) on a real Redis Cluster of three primaries (the `cluster`
fixture of tests/conftest.py): concurrency and rate limits and dependencies hold for
queues on different shards, since every key a limit or a dependency touches is in its
queue's slot; a dependency across queues (two slots) is refused."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import pytest
from engine_helpers import Gauge, Workers, wait_for

from podq import Job, Queue, Status
from podq.queue import QUEUE_LIMIT, Limit
from podq.testing_cluster import LoopbackCluster


@pytest.fixture
async def queues(cluster: LoopbackCluster, request: pytest.FixtureRequest
                 ) -> AsyncIterator[list[Queue]]:
    """Two queues on different shards, named for the test (the cluster is not flushed)."""
    spread = cluster.spread(2, prefix=request.node.name[5:25] + "-")
    opened = [Queue.from_url(cluster.url, name=name) for name in spread]
    yield opened
    for queue in opened:
        await queue.disconnect()


async def all_complete(queue: Queue, jobs: list[Job]) -> bool:
    done = await queue.jobs(j.key for j in jobs)
    return all(j is not None and j.status is Status.COMPLETE for j in done)


async def test_a_concurrency_limit_holds_for_queues_on_two_shards(
    cluster: LoopbackCluster, queues: list[Queue], workers: Workers
) -> None:
    gauges = {q.name: Gauge() for q in queues}
    jobs = {}
    for queue in queues:
        await queue.set_limits({"charge": Limit(concurrency=2)})
        jobs[queue.name] = await queue.enqueue_many(
            [Job("charge", key=f"c{i}") for i in range(12)])
        for _ in range(2):
            await workers.start(queue, [gauges[queue.name].function("charge", 0.1)],
                                concurrency=4)
    limited_seen = dict.fromkeys(gauges, 0)

    async def done() -> bool:
        finished = True
        for queue in queues:
            counts = await queue.counts()
            limited_seen[queue.name] = max(limited_seen[queue.name], counts.limited)
            finished = finished and await all_complete(queue, jobs[queue.name])
        return finished

    await wait_for(done, 60)
    assert {g.most for g in gauges.values()} == {2}  # per queue, across its two workers
    assert all(limited_seen.values()), limited_seen  # jobs were parked on each shard
    for queue in queues:  # the limit and its slots live on the shard of the queue's slot
        owner = cluster.client(cluster.owner(queue.keys.queued))
        assert owner.hget(queue.keys.limits, "charge") == b"2,,,"
        assert owner.exists(queue.keys.slots("charge")) == 1
        assert (await queue.counts()).incomplete == 0


async def test_function_and_queue_rate_limits_hold_on_two_shards(
    queues: list[Queue], workers: Workers
) -> None:
    by_function, whole_queue = queues
    await by_function.set_limits({"send": Limit(rate=5, per=1.0)})
    await whole_queue.set_limits({QUEUE_LIMIT: Limit(rate=5, per=1.0)})
    jobs = {q.name: await q.enqueue_many([Job("send", key=f"s{i:02}") for i in range(8)])
            for q in queues}
    samples = []
    for queue in queues:
        await workers.start(queue, [Gauge().function("send", 0.01)], concurrency=4)

    async def done() -> bool:
        samples.append(await whole_queue.counts())
        return all([await all_complete(q, jobs[q.name]) for q in queues])

    await wait_for(done, 60)
    for queue in queues:
        stored = await queue.jobs(j.key for j in jobs[queue.name])
        starts = [j.started for j in sorted(stored, key=lambda j: j.key)]
        assert starts == sorted(starts)  # in their order
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert min(gaps) >= 199, (queue.name, gaps)  # 5 a second: one per 200 ms
    # the queue-wide rate: the waiting jobs were never depth for the autoscaler
    assert all(c.depth <= c.active + 1 for c in samples)
    assert max(c.rate_held for c in samples) > 0


async def test_dependencies_settle_on_each_shard_and_across_queues_are_refused(
    queues: list[Queue], workers: Workers
) -> None:
    async def step(ctx: dict, n: int, fail: bool = False) -> int:
        if fail:
            raise RuntimeError("boom")
        return n + sum(ctx.get("dependencies", {}).values())

    for queue in queues:
        await workers.start(queue, [("step", step)], concurrency=4)
    first, other = queues
    a = await first.enqueue("step", key="a", n=1, scheduled=time.time() + 0.3)
    b = await first.enqueue("step", key="b", n=2, depends_on=[a])
    c = await first.enqueue("step", key="c", n=3, depends_on=[a, b])
    assert b is not None and c is not None
    await c.refresh(until_complete=30)
    assert c.status is Status.COMPLETE and c.result == 3 + 1 + 3  # c's n + a + b (2 + 1)
    # a failure fails the dependents down the graph, on the other shard too
    root = await other.enqueue("step", key="root", n=0, fail=True, retries=1,
                               scheduled=time.time() + 0.3)
    child = await other.enqueue("step", key="child", n=0, depends_on=["root"])
    assert root is not None and child is not None
    await child.refresh(until_complete=30)
    assert child.status is Status.FAILED and child.error.startswith("DependencyFailed:")
    # a job of the other queue (another slot, here another shard) is refused, by Job or id
    for dependency in (a, first.job_id("a")):
        with pytest.raises(ValueError, match=r"depends_on: job 'a' is of queue"):
            await other.enqueue("step", key="cross", n=0, depends_on=[dependency])
    assert await other.job("cross") is None
