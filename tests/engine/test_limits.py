"""Flow control (issue 14): concurrency limits per function and per queue, enforced by
take.lua across every worker, on the real redis-server."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time

import pytest
from engine_helpers import Gauge, Workers, output, start_worker_process, wait_for
from fault_settings import RUNS

from podq import Job, Queue, Status
from podq.queue import QUEUE_LIMIT, Limit


def test_a_limit_is_checked_and_round_trips() -> None:
    assert Limit.decode(Limit(concurrency=3).encode()) == Limit(concurrency=3)
    assert Limit.decode(Limit(rate=100, per=60).encode()) == Limit(rate=100, per=60)
    for bad in ({}, {"concurrency": 0}, {"rate": -1}, {"rate": 1, "per": 0},
                {"concurrency": 1.5}):
        with pytest.raises(ValueError):
            Limit(**bad)


async def test_limits_are_stored_in_redis_for_every_client(queue: Queue, redis_url: str) -> None:
    await queue.set_limits({"charge_card": Limit(concurrency=3), QUEUE_LIMIT: Limit(rate=5)})
    other = Queue.from_url(redis_url, name="test")
    try:
        assert await other.limits() == {
            "charge_card": Limit(concurrency=3), QUEUE_LIMIT: Limit(rate=5)}
        await other.set_limits({})
        assert await queue.limits() == {}
    finally:
        await other.disconnect()


async def test_many_workers_never_run_more_than_the_function_limit(
    queue: Queue, workers: Workers
) -> None:
    charge, other = Gauge(), Gauge()
    functions = [charge.function("charge_card", 0.15), other.function("other", 0.3)]
    await queue.set_limits({"charge_card": Limit(concurrency=3)})
    jobs = await queue.enqueue_many(
        [Job("charge_card", key=f"c{i}") for i in range(24)]
        + [Job("other", key=f"o{i}") for i in range(8)]
    )
    limited_seen = 0
    for _ in range(4):
        await workers.start(queue, functions, concurrency=5)

    async def all_done() -> bool:
        nonlocal limited_seen
        limited_seen = max(limited_seen, (await queue.counts()).limited)
        done = await queue.jobs(j.key for j in jobs)
        return all(j is not None and j.status is Status.COMPLETE for j in done)

    await wait_for(all_done, 60)
    assert charge.most == 3  # reached, never exceeded, across 4 workers of 5 slots each
    assert other.most >= 4  # the limit holds back only its own function
    assert limited_seen > 0  # charge_card jobs waited, parked, and none failed
    counts = await queue.counts()
    assert counts.limited == 0 and counts.incomplete == 0


async def test_the_queue_limit_caps_every_function_together(
    queue: Queue, workers: Workers
) -> None:
    gauge = Gauge()
    await queue.set_limits({QUEUE_LIMIT: Limit(concurrency=2)})
    a, b = gauge.function("a", 0.1), gauge.function("b", 0.1)
    jobs = await queue.enqueue_many([Job(("a", "b")[i % 2], key=f"j{i}") for i in range(12)])
    for _ in range(3):
        await workers.start(queue, [a, b], concurrency=4)

    async def all_done() -> bool:
        done = await queue.jobs(j.key for j in jobs)
        return all(j is not None and j.status is Status.COMPLETE for j in done)

    await wait_for(all_done, 60)
    assert gauge.most == 2


async def test_a_worker_limits_setting_applies_to_the_others(
    queue: Queue, workers: Workers
) -> None:
    gauge = Gauge()
    fn = gauge.function("charge_card", 0.1)
    await workers.start(queue, [fn], concurrency=4, limits={"charge_card": Limit(concurrency=1)})
    await workers.start(queue, [fn], concurrency=4)  # no limits of its own: Redis's apply
    jobs = await queue.enqueue_many([Job("charge_card", key=f"c{i}") for i in range(6)])

    async def all_done() -> bool:
        done = await queue.jobs(j.key for j in jobs)
        return all(j is not None and j.status is Status.COMPLETE for j in done)

    await wait_for(all_done, 60)
    assert gauge.most == 1


async def test_a_slot_held_by_a_sigkilled_worker_comes_back_through_the_sweep(
    queue: Queue, workers: Workers, redis_url: str, spawn: list
) -> None:
    await queue.set_limits({"runs_for": Limit(concurrency=1)})
    held = await queue.enqueue("runs_for", key="held", seconds=600, timeout=0)
    proc = start_worker_process(spawn, redis_url, "--queue", "test",
                                settings="fault_settings.settings")
    await wait_for(lambda: queue.redis.llen(RUNS), 20)  # it runs, holding the only slot
    waiting = await queue.enqueue("runs_for", key="waiting", seconds=0.01)

    async def parked() -> bool:
        return (await queue.counts()).limited == 1

    await wait_for(parked, 30)  # its take parked it: it waits on the limit
    await waiting.refresh()
    assert waiting.status is Status.QUEUED and waiting.blocked == "concurrency"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    killed = time.monotonic()

    gauge = Gauge()  # a live worker: its sweep finds "held" orphaned once its lease passed
    await workers.start(queue, [gauge.function("runs_for", 0.05)], concurrency=4)
    done = await queue.wait_for_terminal("waiting", timeout=30)
    assert done is not None and done.status is Status.COMPLETE, output(proc)
    # liveness ttl 1 s (fault_settings) + sweep every 0.3 s: well within 10 s on a
    # loaded machine
    assert time.monotonic() - killed < 10
    await held.refresh(until_complete=30)  # the swept job ran again, after or before
    assert held.status is Status.COMPLETE and held.disruptions == 1
    assert done.blocked is None  # cleared as it went back to the ready queue
    assert gauge.most == 1


async def test_jobs_parked_on_limits_since_removed_go_back_in_order(queue: Queue) -> None:
    # `--no-limits`, a chart's `limits: {}` or set_limits({}) deletes the limits hash;
    # the jobs parked on them go back to the ready queue, in their order, at the next take
    await queue.set_limits({"f": Limit(concurrency=1), "g": Limit(rate=1, per=60)})
    await queue.enqueue_many([Job(("f", "g")[i % 2], key=f"j{i}") for i in range(6)])
    first, _ = await queue.take(6, "")
    assert sorted(j.key for j in first) == ["j0", "j1"]
    assert (await queue.counts()).limited == 4
    await queue.set_limits({})
    rest, _ = await queue.take(6, "")
    assert [j.key for j in rest] == ["j2", "j3", "j4", "j5"]
    counts = await queue.counts()
    assert (counts.limited, counts.queued, counts.active) == (0, 0, 6)
    assert not await queue.redis.exists(queue.keys.limited)
    assert {j.blocked for j in rest} == {None}


# -- rate limits (issue 14 part 2) -------------------------------------------------------


async def started_ms(queue: Queue, jobs: list[Job]) -> list[int]:
    """When each job started, on Redis's clock (ms), in order."""
    return sorted(j.started for j in await queue.jobs(j.key for j in jobs))


async def test_a_rate_limit_spaces_the_starts_across_workers(
    queue: Queue, workers: Workers
) -> None:
    send, other = Gauge(), Gauge()
    await queue.set_limits({"send_email": Limit(rate=5, per=1.0)})
    sends = await queue.enqueue_many([Job("send_email", key=f"s{i}") for i in range(10)])
    others = await queue.enqueue_many([Job("other", key=f"o{i}") for i in range(4)])
    for _ in range(3):
        await workers.start(
            queue, [send.function("send_email", 0.01), other.function("other", 0.01)],
            concurrency=4)
    limited_seen = 0

    async def all_done() -> bool:
        nonlocal limited_seen
        limited_seen = max(limited_seen, (await queue.counts()).limited)
        done = await queue.jobs(j.key for j in sends + others)
        return all(j is not None and j.status is Status.COMPLETE for j in done)

    await wait_for(all_done, 60)
    starts = await started_ms(queue, sends)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 199, gaps  # 5 a second: one every 200 ms (ms floored)
    assert all(starts[i + 5] - starts[i] >= 999 for i in range(len(starts) - 5))
    assert limited_seen > 0
    assert (await queue.counts()).incomplete == 0


async def test_a_burst_starts_at_once_then_the_rate_spaces_the_rest(queue: Queue) -> None:
    await queue.set_limits({"f": Limit(rate=3, per=1.5, burst=3)})
    await queue.enqueue_many([Job("f", key=f"f{i}") for i in range(6)])
    first, next_at = await queue.take(6, "")
    assert len(first) == 3 and next_at is not None  # the burst; the rest wait
    assert (await queue.counts()).limited == 3
    taken = list(first)
    deadline = time.monotonic() + 20
    while len(taken) < 6:
        assert time.monotonic() < deadline
        jobs, next_at = await queue.take(6, "")
        taken += jobs
        if next_at is not None:  # when the rate has room again
            await asyncio.sleep(max(0.0, next_at - time.time()))
    starts = await started_ms(queue, taken)
    assert starts[2] - starts[0] < 500  # one take
    assert starts[3] - starts[0] >= 499 and starts[5] - starts[0] >= 1499


async def test_a_take_that_uses_the_last_start_says_when_the_rate_has_room_again(
    queue: Queue,
) -> None:
    await queue.set_limits({"h": Limit(rate=1, per=60)})
    await queue.enqueue(Job("h", key="h1"))
    jobs, next_at = await queue.take(5, "")
    assert [j.key for j in jobs] == ["h1"] and next_at is None  # nothing left to wait
    await queue.enqueue(Job("h", key="h2"))
    jobs, next_at = await queue.take(5, "")  # no room: h2 parked, as before
    # (+0.1: next_at is rounded up to Redis's ms, which may be ahead of time.time())
    assert jobs == [] and next_at is not None and 50 < next_at - time.time() <= 60.1
    # the queue's own rate (h's limit gone: h2 back in line, first): the take that gets
    # h2 uses the rate's last start while j1 waits, and says when it has room again
    await queue.set_limits({QUEUE_LIMIT: Limit(rate=1, per=30)})
    await queue.enqueue(Job("other", key="j1"))
    jobs, next_at = await queue.take(5, "")
    assert [j.key for j in jobs] == ["h2"]
    assert next_at is not None and 25 < next_at - time.time() <= 30.1


async def test_a_stream_under_the_queue_rate_starts_at_the_rate_not_at_the_poll(
    queue: Queue, workers: Workers
) -> None:
    await queue.set_limits({QUEUE_LIMIT: Limit(rate=5, per=1.0)})  # a start per 200 ms
    jobs = await queue.enqueue_many([Job("f", key=f"s{i}") for i in range(8)])
    # free slots left after each take: the worker waits for the rate's next start, which
    # the take that used the last one reports (else: until its next poll, 2 s here)
    await workers.start(queue, [Gauge().function("f", 0.01)], concurrency=4,
                        timers={"schedule": 2.0, "worker_info": 0.2, "sweep": 0.3,
                                "abort": 0.2})

    async def all_done() -> bool:
        done = await queue.jobs(j.key for j in jobs)
        return all(j is not None and j.status is Status.COMPLETE for j in done)

    await wait_for(all_done, 60)
    starts = await started_ms(queue, jobs)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 199, gaps
    # 7 gaps of 200 ms; one poll among them would add 2 s (generous: a loaded machine)
    assert starts[-1] - starts[0] < 3000, gaps


async def test_work_waiting_on_a_limit_is_not_depth_for_the_autoscaler(queue: Queue) -> None:
    await queue.set_limits({"slow": Limit(rate=1, per=60)})
    await queue.enqueue_many([Job("slow", key=f"s{i}") for i in range(5)])
    jobs, next_at = await queue.take(5, "")
    assert len(jobs) == 1 and next_at is not None and next_at - time.time() > 50
    counts = await queue.counts()
    assert (counts.limited, counts.queued, counts.active) == (4, 4, 1)
    assert {j.blocked for j in await queue.jobs(f"s{i}" for i in range(1, 5))} == {"rate"}
    assert jobs[0].blocked is None
    assert await queue.depth() == 1  # the running one; the four waiting add no workers

    await queue.set_limits({QUEUE_LIMIT: Limit(concurrency=2)})  # the queue's own cap
    await queue.enqueue_many([Job("fast", key=f"f{i}") for i in range(6)])
    jobs, _ = await queue.take(5, "")
    assert len(jobs) == 1  # with the active "slow" one: 2
    assert await queue.depth() == 2 and (await queue.counts()).ready > 2


async def test_a_queue_rate_limit_caps_every_function_together(queue: Queue) -> None:
    await queue.set_limits({QUEUE_LIMIT: Limit(rate=2, per=60, burst=2)})
    await queue.enqueue_many([Job(("a", "b")[i % 2], key=f"j{i}") for i in range(5)])
    jobs, _ = await queue.take(5, "")
    assert len(jobs) == 2
    jobs, next_at = await queue.take(5, "")
    assert jobs == [] and next_at is not None and next_at - time.time() > 20
