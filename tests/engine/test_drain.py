"""`podq drain` / `podq resume` as processes, with a real worker and real Redis."""

from __future__ import annotations

import asyncio
import typing as t

from engine_helpers import Workers, wait_for
from ops_helpers import podq_async, podq_run
from ops_settings import RELEASE, hold, ok

from podq import Queue, Status
from podq.drain import is_paused, pause


def count_takes(queue: Queue) -> list[int]:
    """Count the worker's takes (each is one run of the take script): take() calls, and
    take_when_ready() calls, an idle worker's take that Redis runs once work is ready."""
    calls = [0]

    def counting(take: t.Callable[..., t.Awaitable[t.Any]]) -> t.Callable[..., t.Any]:
        async def counted(*args: t.Any, **kwargs: t.Any) -> t.Any:
            result = await take(*args, **kwargs)
            calls[0] += 1
            return result

        return counted

    queue.take = counting(queue.take)  # type: ignore[method-assign]
    queue.take_when_ready = counting(queue.take_when_ready)  # type: ignore[attr-defined]
    return calls


async def test_drain_waits_for_running_job_and_nothing_starts_until_resume(
    queue: Queue, workers: Workers, redis_url: str
) -> None:
    takes = count_takes(queue)
    await workers.start(queue, [hold, ok])
    running = await queue.enqueue("hold", key="running", name="running", timeout=60)
    assert running is not None
    await wait_for(lambda: queue.count("active"), 30)

    drain = await podq_async("drain", "test", "--redis-url", redis_url)
    assert drain.stdout is not None
    first = await asyncio.wait_for(drain.stdout.readline(), 20)
    assert b"1 active job" in first  # progress: the running job holds the drain
    assert await is_paused(queue)

    waiting = await queue.enqueue("ok", key="waiting")
    assert waiting is not None
    seen = takes[0]
    await wait_for(lambda: takes[0] >= seen + 2, 30)  # the worker tried to take, paused
    assert (await queue.job("waiting")).status is Status.QUEUED
    assert drain.returncode is None  # still draining: a job is active

    await queue.redis.sadd(RELEASE, "running")
    out, err = await asyncio.wait_for(drain.communicate(), 20)
    assert drain.returncode == 0, err
    assert b"drained" in out
    assert (await queue.job("running")).status is Status.COMPLETE
    seen = takes[0]
    await wait_for(lambda: takes[0] >= seen + 2, 30)  # a free worker, still paused
    assert (await queue.job("waiting")).status is Status.QUEUED
    assert await queue.count("queued") == 1

    code, out, err = await podq_run("info", "--redis-url", redis_url, "--queue", "test")
    assert code == 0 and "(paused)" in out, err

    code, out, err = await podq_run("resume", "test", "--redis-url", redis_url)
    assert code == 0 and "resumed" in out, err
    assert not await is_paused(queue)
    job = await queue.job("waiting")
    await job.refresh(until_complete=10)  # woken at once, not at the next idle poll
    assert job.status is Status.COMPLETE and job.result == "fine"


async def test_drain_times_out_while_a_job_runs_and_stays_paused(
    queue: Queue, workers: Workers, redis_url: str
) -> None:
    await workers.start(queue, [hold])
    await queue.enqueue("hold", key="stuck", name="stuck", timeout=60)
    await wait_for(lambda: queue.count("active"), 30)
    code, out, err = await podq_run("drain", "test", "--redis-url", redis_url,
                                    "--timeout", "0.5")
    assert code == 1
    assert "1 active job" in out and "not drained after 0.5s" in err
    assert await is_paused(queue)
    code, out, err = await podq_run("drain", "test", "--resume", "--redis-url", redis_url)
    assert code == 0 and "resumed" in out, err
    assert not await is_paused(queue)
    await queue.redis.sadd(RELEASE, "stuck")


async def test_drain_of_an_idle_queue_returns_at_once_and_resume_of_unpaused(
    queue: Queue, redis_url: str
) -> None:
    code, out, _ = await podq_run("drain", "test", "--redis-url", redis_url, "--timeout", "5")
    assert code == 0 and "0 active job" in out and "drained" in out
    await podq_run("resume", "test", "--redis-url", redis_url)
    code, out, _ = await podq_run("resume", "test", "--redis-url", redis_url)
    assert code == 0 and "was not paused" in out


async def test_paused_queue_gives_no_job_to_take(queue: Queue) -> None:
    await queue.enqueue("ok", key="a")
    await pause(queue)
    assert (await queue.take(5, "w"))[0] == []
    assert (await queue.job("a")).status is Status.QUEUED
