"""Flow control (issue 14): what the counts say of jobs waiting on a limit, at once and
without adding workers for them, on the real redis-server."""

from __future__ import annotations

import asyncio
import itertools
import json
import re

from engine_helpers import Workers, wait_for
from ops_helpers import podq_run

from podq import Job, Queue, Status
from podq.queue import QUEUE_CONCURRENCY_HELD, QUEUE_LIMIT, QUEUE_RATE_HELD, Limit


async def test_jobs_waiting_on_the_queue_rate_are_not_depth_and_run_in_order(
    queue: Queue, workers: Workers
) -> None:
    await queue.set_limits({QUEUE_LIMIT: Limit(rate=5, per=1.0)})  # one start per 200 ms
    jobs = await queue.enqueue_many([Job(("a", "b")[i % 2], key=f"j{i:02}") for i in range(12)])
    counts = await queue.counts()
    # idle: the rate lets one start now; the other eleven wait on it, in the ready queue
    assert (counts.ready, counts.rate_held, counts.depth) == (12, 11, 1)

    async def run(ctx: dict) -> str:
        await asyncio.sleep(0.01)
        return ctx["job"].key

    for _ in range(2):
        await workers.start(queue, [("a", run), ("b", run)], concurrency=6)
    samples = []

    async def all_done() -> bool:
        counts = await queue.counts()
        samples.append(counts)
        done = await queue.jobs(j.key for j in jobs)
        return all(j is not None and j.status is Status.COMPLETE for j in done)

    await wait_for(all_done, 60)
    # however many wait, the autoscaler sees the running ones plus what may start now
    assert all(c.depth <= c.active + 1 for c in samples), samples
    assert max(c.rate_held for c in samples) >= 5  # sampled while most still waited
    done = await queue.jobs(j.key for j in jobs)
    by_start = [j.key for j in sorted(done, key=lambda j: j.started)]
    assert by_start == [j.key for j in jobs]  # in their order
    starts = sorted(j.started for j in done)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 199, gaps  # within the rate (ms floored)
    assert (await queue.counts()).incomplete == 0


async def test_the_queue_rate_room_is_the_takes_own(queue: Queue) -> None:
    await queue.set_limits({QUEUE_LIMIT: Limit(rate=3, per=60, burst=3)})
    await queue.enqueue_many([Job("f", key=f"f{i}") for i in range(5)])
    assert (await queue.counts()).startable == 3  # idle: the whole burst
    taken, _ = await queue.take(2, "")
    counts = await queue.counts()
    assert len(taken) == 2 and counts.startable == 1  # what the next take may start
    assert (counts.ready, counts.rate_held, counts.depth) == (3, 2, 3)
    taken, _ = await queue.take(5, "")
    counts = await queue.counts()
    assert len(taken) == 1
    assert (counts.startable, counts.rate_held, counts.depth) == (0, 2, 3)
    await queue.set_limits({})  # no limit: every ready job is depth again
    assert (await queue.counts()).depth == 5


async def test_a_read_marks_the_ready_jobs_beyond_the_queue_limits_room(queue: Queue) -> None:
    keys = [f"f{i}" for i in range(5)]

    async def held() -> list[str | None]:
        found = await queue.jobs_or_errors(keys, queue_held=True)
        return [job.blocked for job in found]  # type: ignore[union-attr]

    await queue.enqueue_many([Job("f", key=k, priority=-i) for i, k in enumerate(keys)])
    assert await held() == [None] * 5  # no limit: nothing held
    await queue.set_limits({QUEUE_LIMIT: Limit(rate=3, per=60, burst=3)})
    # idle: the burst of three may start now, the ready queue's first three (priority)
    assert await held() == [QUEUE_RATE_HELD] * 2 + [None] * 3
    taken, _ = await queue.take(2, "")
    assert [j.key for j in taken] == ["f4", "f3"]
    found = await queue.jobs_or_errors(keys, queue_held=True)
    # one more may start (f2, first in line); f0 and f1 wait on the rate; the taken run
    assert [(j.status, j.blocked) for j in found] == [  # type: ignore[union-attr]
        (Status.QUEUED, QUEUE_RATE_HELD), (Status.QUEUED, QUEUE_RATE_HELD),
        (Status.QUEUED, None), (Status.ACTIVE, None), (Status.ACTIVE, None)]
    assert [j.blocked for j in await queue.jobs(keys)] == [None] * 5  # only when asked
    taken, _ = await queue.take(5, "")
    assert [j.key for j in taken] == ["f2"]
    assert await held() == [QUEUE_RATE_HELD] * 2 + [None] * 3
    # the queue's concurrency cap, three running: room for six more, then one, then none
    await queue.set_limits({QUEUE_LIMIT: Limit(concurrency=9)})
    assert await held() == [None] * 5
    await queue.set_limits({QUEUE_LIMIT: Limit(concurrency=4)})
    assert await held() == [QUEUE_CONCURRENCY_HELD] + [None] * 4  # f1 may run, not f0
    await queue.set_limits({QUEUE_LIMIT: Limit(concurrency=3)})
    assert await held() == [QUEUE_CONCURRENCY_HELD] * 2 + [None] * 3
    # both (the rate's state is the three starts': no room now): the cap says first
    await queue.set_limits({QUEUE_LIMIT: Limit(concurrency=4, rate=1, per=60)})
    assert await held() == [QUEUE_CONCURRENCY_HELD, QUEUE_RATE_HELD] + [None] * 3


async def test_no_queue_limit_leaves_the_counts_as_they_were(queue: Queue) -> None:
    await queue.set_limits({"other": Limit(rate=1, per=60)})
    await queue.enqueue_many([Job("f", key=f"f{i}") for i in range(4)])
    counts = await queue.counts()
    assert (counts.startable, counts.rate_held, counts.depth) == (None, 0, 4)


async def test_an_aborted_parked_job_leaves_the_limited_count_at_once(queue: Queue) -> None:
    await queue.set_limits({"charge": Limit(concurrency=1), "send": Limit(rate=1, per=60)})
    jobs = await queue.enqueue_many([Job("charge", key=f"c{i}") for i in range(3)]
                                    + [Job("send", key=f"s{i}") for i in range(2)])
    taken, _ = await queue.take(5, "")
    assert sorted(j.key for j in taken) == ["c0", "s0"]
    assert (await queue.counts()).limited == 3
    by_key = {j.key: j for j in jobs}

    await queue.abort(by_key["c1"], "no longer wanted")
    counts = await queue.counts()
    assert (counts.limited, counts.queued) == (2, 2)
    assert await queue.redis.zrange(queue.keys.parked("charge"), 0, -1) == [b"c2"]
    aborted = await queue.job("c1")
    assert aborted is not None and aborted.status is Status.ABORTED and aborted.blocked is None

    await queue.abort(by_key["s1"], "no longer wanted")  # the last one parked on send
    assert (await queue.counts()).limited == 1
    assert await queue.redis.smembers(queue.keys.limited) == {b"charge"}
    assert not await queue.redis.exists(queue.keys.parked("send"))

    # a client's (unguarded) finish of a parked job takes it out of its parked zset too
    parked = await queue.job("c2")
    assert parked is not None and parked.blocked == "concurrency"
    await queue.finish(parked, Status.FAILED, error="given up")
    assert (await queue.counts()).limited == 0
    assert not await queue.redis.exists(queue.keys.limited)
    failed = await queue.job("c2")
    assert failed is not None and failed.status is Status.FAILED and failed.blocked is None
    # and the takes that follow give out none of them
    for job in taken:
        await queue.finish(job, Status.COMPLETE)
    again, _ = await queue.take(5, "")
    assert again == []


async def test_info_jobs_and_iter_jobs_show_why_queued_jobs_wait(
    queue: Queue, redis_url: str
) -> None:
    await queue.set_limits({"charge": Limit(concurrency=1), "send": Limit(rate=1, per=60)})
    await queue.enqueue_many([Job("charge", key=f"c{i}") for i in range(3)]
                             + [Job("send", key=f"s{i}") for i in range(2)])
    await queue.enqueue("charge", key="d", depends_on=["c0"])
    taken, _ = await queue.take(10, "")
    assert sorted(j.key for j in taken) == ["c0", "s0"]
    why = {"c1": "concurrency", "c2": "concurrency", "s1": "rate", "d": "dependencies"}

    info = await queue.info(jobs=True, limit=20)
    assert (info["queued"], info["ready"], info["waiting"], info["active"]) == (4, 0, 1, 2)
    assert info["limited"] == {"charge": {"jobs": 2, "why": "concurrency"},
                               "send": {"jobs": 1, "why": "rate"}}
    listed = {j["key"]: j.get("blocked") for j in info["jobs"]}
    assert listed == {"c0": None, "s0": None, **why}  # the active ones, then the waiting
    assert {j.key: j.blocked async for j in queue.iter_jobs([Status.QUEUED])} == why

    code, out, err = await podq_run("info", "--redis-url", redis_url, "--queue", "test")
    assert code == 0, err
    assert ("queued 4 (ready 0, limited 3: charge 2 by concurrency, send 1 by rate; "
            "waiting for dependencies 1)") in out
    code, out, err = await podq_run("jobs", "--redis-url", redis_url, "--queue", "test",
                                    "--status", "queued", "--json")
    assert code == 0, err
    assert {j["key"]: j["blocked"] for j in json.loads(out)["jobs"]} == why
    code, out, err = await podq_run("jobs", "--redis-url", redis_url, "--queue", "test")
    assert code == 0, err
    assert re.search(r"\bs1\s+send\s+queued \(rate\)", out), out

    # the queue's own rate: the ready jobs beyond what it lets start now, under "*"
    await queue.set_limits({QUEUE_LIMIT: Limit(rate=1, per=60)})
    await queue.enqueue_many([Job("f", key=f"f{i}") for i in range(3)])
    code, out, err = await podq_run("info", "--redis-url", redis_url, "--queue", "test",
                                    "--json")
    assert code == 0, err
    [shown] = json.loads(out)
    assert shown["limited"]["*"] == {"jobs": 2, "why": "rate"}
    assert (shown["queued"], shown["ready"], shown["depth"]) == (7, 1, 3)
    # and each of them, as read: the first may start now, the others wait on the rate
    held = {"f0": None, "f1": QUEUE_RATE_HELD, "f2": QUEUE_RATE_HELD}
    code, out, err = await podq_run("jobs", "--redis-url", redis_url, "--queue", "test",
                                    "--status", "queued", "--json")
    assert code == 0, err
    assert {j["key"]: j["blocked"] for j in json.loads(out)["jobs"]} == {**why, **held}
    assert {j.key: j.blocked async for j in queue.iter_jobs([Status.QUEUED])} == {
        **why, **held}
    info = await queue.info(jobs=True, limit=20)
    assert {j["key"]: j.get("blocked") for j in info["jobs"]} == {
        "c0": None, "s0": None, **why, **held}
