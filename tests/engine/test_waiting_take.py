"""An idle worker's take waits in Redis for work (Queue.take_when_ready): new jobs,
bulk enqueues and stop() reach idle workers at once, not at their idle poll."""

from __future__ import annotations

import asyncio
from typing import Any

from engine_helpers import FAST_TIMERS, Workers, wait_for

from podq import Queue, Status

# far beyond every deadline below: nothing here may wait for the idle poll
SLOW_POLL = {**FAST_TIMERS, "schedule": 120}
RELEASE = asyncio.Event()
STARTED: list[str] = []


async def hold(ctx: dict) -> str:
    STARTED.append(ctx["job"].worker_id)
    await RELEASE.wait()
    return "held"


async def quick(ctx: dict) -> str:
    return "quick"


async def test_idle_workers_start_new_jobs_and_stop_without_their_idle_poll(
    queue: Queue, workers: Workers
) -> None:
    RELEASE.clear()
    STARTED.clear()
    first = await workers.start(queue, [hold, quick], concurrency=1, timers=SLOW_POLL)
    second = await workers.start(queue, [hold, quick], concurrency=1, timers=SLOW_POLL)
    await asyncio.sleep(0.2)  # both idle, their takes waiting in Redis

    # two jobs enqueued in one turn (one pipeline): one token wakes one worker, whose
    # full take leaves a token for the other
    await asyncio.gather(queue.enqueue("hold", key="a"), queue.enqueue("hold", key="b"))
    await wait_for(lambda: len(STARTED) == 2, 10)
    assert sorted(STARTED) == sorted([first.id, second.id])
    RELEASE.set()

    async def all_done() -> bool:
        return await queue.count("incomplete") == 0

    await wait_for(all_done, 10)

    # a bulk enqueue leaves no token: the wake channel ends the waiting takes
    jobs = await queue.enqueue_many(["quick"] * 5)
    for job in jobs:
        await job.refresh(until_complete=10)
        assert job.status is Status.COMPLETE and job.result == "quick"

    # stop() ends the waiting take at once
    for worker in (first, second):
        await asyncio.wait_for(worker.stop(), 10)
    assert await queue.count("active") == 0


async def test_a_full_take_passes_the_token_on_to_the_next_idle_worker(
    queue: Queue, workers: Workers
) -> None:
    """Two jobs stored in one transaction leave one token (at most one waits); the
    worker it wakes takes one job, all its slot allows, and leaves a token for the
    other idle worker, which takes the second job at once."""
    RELEASE.clear()
    STARTED.clear()
    first = await workers.start(queue, [hold], concurrency=1, timers=SLOW_POLL)
    second = await workers.start(queue, [hold], concurrency=1, timers=SLOW_POLL)
    await asyncio.sleep(0.2)

    calls: list[tuple[Any, list[Any], list[Any]]] = []

    class Recorder:  # the enqueues' script calls, run below in one MULTI/EXEC
        def call(self, script: Any, keys: list[Any], args: list[Any]) -> asyncio.Future[int]:
            calls.append((script, keys, args))
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            done.set_result(1)
            return done

    batcher, queue._batcher = queue._batcher, Recorder()  # type: ignore[assignment]
    try:
        await queue.enqueue("hold", key="a")
        await queue.enqueue("hold", key="b")
    finally:
        queue._batcher = batcher
    await queue.redis.script_load(calls[0][0].script)
    async with queue.redis.pipeline(transaction=True) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        stored = await pipe.execute()
    # both enqueued: enqueue.lua answers with the ready_since it stamped (epoch ms)
    assert len(stored) == 2 and all(int(ready_since) > 0 for ready_since in stored), stored

    await wait_for(lambda: len(STARTED) == 2, 10)
    assert sorted(STARTED) == sorted([first.id, second.id])
    RELEASE.set()


async def test_a_burst_worker_takes_a_job_enqueued_while_another_runs(
    queue: Queue, workers: Workers
) -> None:
    RELEASE.clear()
    STARTED.clear()
    worker = await workers.start(queue, [hold, quick], concurrency=2, timers=SLOW_POLL,
                                 burst=True, dequeue_timeout=0.5)
    held = await queue.enqueue("hold", timeout=60)
    await wait_for(lambda: len(STARTED) == 1, 10)
    job = await queue.enqueue("quick")
    await job.refresh(until_complete=10)  # not at the idle poll, nor once "hold" ends
    assert job.status is Status.COMPLETE
    RELEASE.set()
    await held.refresh(until_complete=10)
    running = next(task for w, task in workers.running if w is worker)
    await asyncio.wait_for(running, 10)  # the queue is empty: the burst worker ends


async def test_a_waiting_take_after_redis_flushed_its_scripts_still_takes(
    queue: Queue, workers: Workers
) -> None:
    await workers.start(queue, [quick], timers=SLOW_POLL)
    await asyncio.sleep(0.2)
    await queue.redis.script_flush()  # the pipelined take.lua gets NOSCRIPT
    job = await queue.enqueue("quick")
    await job.refresh(until_complete=10)
    assert job.status is Status.COMPLETE and job.result == "quick"
