"""Job dependencies (issue 14 part 3): `depends_on=[keys]`, on the real redis-server."""

from __future__ import annotations

import asyncio
import typing as t

import pytest
from engine_helpers import Workers, wait_for
from redis.exceptions import ResponseError

from podq import Job, Queue, Status


async def terminal(queue: Queue, keys: t.Iterable[str]) -> bool:
    jobs = await queue.jobs(keys)
    return all(j is not None and j.status in (Status.COMPLETE, Status.FAILED, Status.ABORTED)
               for j in jobs)


async def test_a_job_runs_after_its_dependencies_and_reads_their_results(
    queue: Queue, workers: Workers
) -> None:
    order: list[str] = []

    async def step(ctx: dict, n: int) -> int:
        order.append(ctx["job"].key)
        await asyncio.sleep(0.05)
        return n * 10

    async def total(ctx: dict) -> int:
        order.append(ctx["job"].key)
        return sum(ctx["dependencies"].values())

    a = await queue.enqueue("step", key="a", n=1)
    await queue.enqueue("step", key="b", n=2)
    c = await queue.enqueue("total", key="c", depends_on=[a, queue.job_id("b")])  # or a key
    assert c is not None and c.depends_on == ["a", "b"]
    await c.refresh()
    assert c.status is Status.QUEUED and c.blocked == "dependencies"
    counts = await queue.counts()
    assert (counts.blocked, counts.ready, counts.depth) == (1, 2, 2)
    await workers.start(queue, [("step", step), ("total", total)], concurrency=4)
    await c.refresh(until_complete=30)
    assert c.status is Status.COMPLETE and c.result == 30 and c.blocked is None
    assert order[-1] == "c" and sorted(order[:2]) == ["a", "b"]
    assert (await queue.counts()).incomplete == 0


async def test_a_failed_dependency_fails_its_dependents_down_the_graph(
    queue: Queue, workers: Workers
) -> None:
    ran: list[str] = []

    async def work(ctx: dict, fail: bool = False) -> None:
        ran.append(ctx["job"].key)
        if fail:
            raise RuntimeError("boom")

    await queue.enqueue("work", key="root", fail=True, retries=1)
    await queue.enqueue("work", key="child", depends_on=["root"])
    await queue.enqueue("work", key="grandchild", depends_on=["child"])
    await workers.start(queue, [("work", work)], concurrency=2)
    await wait_for(lambda: terminal(queue, ["root", "child", "grandchild"]), 30)
    child, grandchild = await queue.jobs(["child", "grandchild"])
    assert child.status is Status.FAILED and child.error.startswith("DependencyFailed:")
    assert "root" in child.error
    assert grandchild.status is Status.FAILED and "child" in grandchild.error
    assert ran == ["root"]  # the dependents never ran
    # a job enqueued after its dependency failed fails at once
    late = await queue.enqueue("work", key="late", depends_on=["root"])
    await late.refresh()
    assert late.status is Status.FAILED and late.error.startswith("DependencyFailed:")


async def test_aborting_a_dependency_fails_its_dependents(queue: Queue) -> None:
    first = await queue.enqueue("work", key="first", scheduled=10**10)  # never due here
    then = await queue.enqueue("work", key="then", depends_on=["first"])
    await queue.abort(first, "no longer wanted")
    await then.refresh()
    assert then.status is Status.FAILED and "aborted" in then.error
    assert (await queue.counts()).blocked == 0


async def test_unknown_and_self_dependencies_are_refused(queue: Queue) -> None:
    with pytest.raises(ResponseError, match="unknown job nope"):
        await queue.enqueue("work", key="x", depends_on=["nope"])
    assert await queue.job("x") is None
    with pytest.raises(ResponseError, match="itself"):
        await queue.enqueue("work", key="y", depends_on=["y"])
    with pytest.raises(ValueError, match="depends_on"):
        await queue.enqueue("work", key="z", depends_on=[3])


async def test_a_1000_job_dag_runs_every_job_after_its_dependencies(
    queue: Queue, workers: Workers
) -> None:
    finished: dict[str, int] = {}
    tick = iter(range(10**9))

    async def node(ctx: dict) -> int:
        job = ctx["job"]
        for dep in job.depends_on or ():
            assert dep in finished, (job.key, dep)  # every dependency ended first
        finished[job.key] = next(tick)
        return len(job.depends_on or ())

    jobs = []
    for i in range(1000):  # node i depends on up to 3 earlier ones: a layered DAG
        deps = sorted({f"n{d}" for d in (i // 2, i // 3, i - 1) if 0 <= d < i})
        jobs.append(Job("node", key=f"n{i}", depends_on=deps or None))
    enqueued = await queue.enqueue_many(jobs)
    assert len(enqueued) == 1000
    assert (await queue.counts()).blocked == 999
    for _ in range(3):
        await workers.start(queue, [("node", node)], concurrency=8)

    async def done() -> bool:
        return (await queue.counts()).incomplete == 0

    await wait_for(done, 120)
    stored = await queue.jobs(j.key for j in jobs)
    assert all(j.status is Status.COMPLETE for j in stored)
    assert len(finished) == 1000


async def test_a_key_enqueued_again_waits_only_on_its_new_dependencies(queue: Queue) -> None:
    # a Job resource with a spec.key, deleted and made again with another spec.after,
    # is this: the first job of the key aborted, a new one under it with other ones
    for key in ("old", "new", "other"):
        await queue.enqueue("work", key=key, scheduled=10**10)  # never due here
    first = await queue.enqueue("work", key="then", depends_on=["old"])
    await queue.abort(first, "deleted", ttl=0)  # no abort marker: enqueued again at once
    again = await queue.enqueue("work", key="then", depends_on=["new", "other"])
    assert again is not None
    await queue.abort(await queue.job("old"), "no longer wanted", ttl=0)
    await again.refresh()
    assert again.status is Status.QUEUED and again.blocked == "dependencies"  # not failed
    await queue.enqueue("work", key="old", scheduled=10**10)
    for key in ("old", "new"):  # "old" is nothing it waits on
        await queue.finish(await queue.job(key), Status.COMPLETE)
    await again.refresh()
    assert again.status is Status.QUEUED and (await queue.counts()).blocked == 1
    await queue.finish(await queue.job("other"), Status.COMPLETE)
    await again.refresh()
    assert again.status is Status.QUEUED and again.blocked is None
    assert (await queue.counts()).ready == 1


async def test_a_waiting_job_written_back_by_a_client_waits_no_more(queue: Queue) -> None:
    await queue.enqueue("work", key="dep", scheduled=10**10)  # never due here
    done = await queue.enqueue("work", key="done", depends_on=["dep"])
    again = await queue.enqueue("work", key="again", depends_on=["dep"])
    await done.finish(Status.COMPLETE, result=1)  # a client's finish (unguarded)
    await again.retry("run it now")  # and retry: ready at once
    counts = await queue.counts()
    assert (counts.blocked, counts.ready) == (0, 1)
    assert not await queue.redis.exists(queue.keys.waiting)
    stored = await queue.jobs(["done", "again"])
    assert [j.blocked for j in stored] == [None, None]
    assert [j.status for j in stored] == [Status.COMPLETE, Status.QUEUED]
    # enqueued again under its key, it waits only on what it names now
    await queue.enqueue("work", key="new", scheduled=10**10)
    await queue.enqueue("work", key="done", depends_on=["new"])
    await queue.finish(await queue.job("new"), Status.COMPLETE)
    ready = await queue.job("done")
    assert ready is not None and ready.status is Status.QUEUED and ready.blocked is None
    assert (await queue.counts()).ready == 2
