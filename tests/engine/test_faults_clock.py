"""Engine faults on a real redis-server: one clock. Worker clocks an hour behind or ahead,
a sweep Redis runs late (frozen), liveness records that expired while Redis was down.
Each test asserts no healthy job was aborted, delayed or taken for a dead worker's.

docs/reliability.md lists the guarantee each test proves.
"""

from __future__ import annotations

import asyncio
import typing as t
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from engine_helpers import (
    ReplyDroppingProxy,
    Workers,
    output,
    relay,
    start_worker_process,
    wait_for,
)
from fault_settings import FAULTS, runs

from podq import Job, Queue, Status

# -- one clock -------------------------------------------------------------------------


@pytest.fixture(params=[-3600, 3600], ids=["behind", "ahead"])
async def skewed(request: pytest.FixtureRequest, redis_url: str,
                 spawn: list) -> AsyncIterator[tuple[Queue, t.Any]]:
    """A queue, and a `podq worker` process whose clock is an hour behind or ahead,
    once it is listed (its record is indexed on Redis's clock)."""
    queue = Queue.from_url(redis_url)
    process = start_worker_process(
        spawn, redis_url, settings=FAULTS, env={"PODQ_TEST_CLOCK_SKEW_S": str(request.param)}
    )
    try:
        await wait_for(queue.workers, 30)
        yield queue, process
    finally:
        await queue.disconnect()


async def test_a_skewed_worker_clock_aborts_no_healthy_job(
    skewed: tuple[Queue, t.Any],
) -> None:
    queue, process = skewed

    async def sweep_with_the_right_clock() -> None:
        while True:
            await queue.sweep(lock=0.2, abort=0.5)
            await asyncio.sleep(0.3)

    sweeping = asyncio.create_task(sweep_with_the_right_clock())
    try:
        # margins a loaded machine cannot eat (timeout 3 s and heartbeat 1 s were 1 s
        # and 0.8 s over the runs), still nothing against a skew of an hour
        timed = await queue.enqueue("runs_for", seconds=2.0, timeout=10)
        beating = await queue.enqueue("beats", seconds=2.0, heartbeat=3, timeout=0)
        for job in (timed, beating):
            await job.refresh(until_complete=30)
            assert job.status is Status.COMPLETE, (job.error, output(process))
            assert job.attempts == 1 and job.disruptions == 0
        assert (await runs(queue)) == Counter({timed.key: 1, beating.key: 1})
    finally:
        sweeping.cancel()
        await asyncio.wait([sweeping])


async def test_a_skewed_worker_clock_delays_a_retry_by_its_retry_delay_on_redis_clock(
    skewed: tuple[Queue, t.Any],
) -> None:
    queue, process = skewed
    job = await queue.enqueue("fails_once", retries=2, retry_delay=3, timeout=0)

    async def waiting_to_retry() -> Job | None:
        stored = await queue.job(job.key)
        return stored if stored.status is Status.QUEUED and stored.attempts == 1 else None

    back = await wait_for(waiting_to_retry, 20)
    failed_s = back.touched / 1000  # Redis TIME, stamped by write.lua
    # due retry_delay after the failure on Redis's clock (the next attempt time the
    # operator shows), not on the worker's: an hour late, or due at once, before
    assert abs(back.scheduled - (failed_s + 3)) < 1, (back.scheduled, failed_s)
    await job.refresh(until_complete=20)
    assert job.status is Status.COMPLETE and job.attempts == 2, (job.error, output(process))
    assert job.started / 1000 >= failed_s + 3 - 0.05  # it did wait its delay
    assert (await runs(queue))[job.key] == 2


class CommandDelayingProxy(ReplyDroppingProxy):
    """A TCP proxy to Redis that holds each command containing `marker` for `delay`
    seconds before passing it on: a command sent as Redis froze (SIGSTOP), run when it
    woke up."""

    def __init__(self, port: int, marker: bytes, delay: float) -> None:
        super().__init__(port)
        self.marker, self.delay, self.delayed = marker, delay, 0

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                       hold: bool) -> None:
            while data := await source.read(65536):
                if hold and self.marker is not None and self.marker in data:
                    await asyncio.sleep(self.delay)
                    self.delayed += 1
                sink.write(data)
                await sink.drain()

        await relay([pipe(client_r, redis_w, True), pipe(redis_r, client_w, False)],
                    [client_w, redis_w])


async def test_a_sweep_run_late_takes_no_live_worker_for_dead(
    redis_server: object, queue: Queue, workers: Workers
) -> None:
    """Redis frozen (SIGSTOP) longer than the liveness ttl: a sweep sent as it froze runs
    the moment it wakes, before the live workers' records are written again. It must
    not take them for dead and put their running jobs back (the fault suite's
    redis-stopped-20s: 8 jobs ran twice, each on the worker that still ran it)."""
    marker = queue._scripts.sweep.sha.encode()
    async with CommandDelayingProxy(redis_server.port, marker, 2.0) as proxy:  # type: ignore[attr-defined]
        sweeping = Queue.from_url(proxy.url, name=queue.name)
        try:
            await queue.enqueue("f", key="k", timeout=0)
            [job], _ = await queue.take(1, "b", lease=0.5)  # worker b runs it
            await queue.write_worker_info("b", {"id": "b"}, ttl=1.0)
            # a worker whose sweeps reach Redis 2 s late; b's record expires meanwhile
            await workers.start(sweeping, [("f", lambda ctx: None)])
            await wait_for(lambda: proxy.delayed >= 2, 30)
            assert not await queue.redis.exists(queue.worker_key("b"))
            assert (await queue.stats())["disrupted"] == 0  # b was not taken for dead
            await queue.write_worker_info("b", {"id": "b"}, ttl=30)  # b writes again
            assert await queue.finish(job, Status.COMPLETE, result="once", expect=True)
        finally:
            await workers.stop_all()
            workers.running.clear()
            await sweeping.disconnect()


async def test_liveness_records_that_expired_while_redis_was_down_are_not_deaths() -> None:
    from podq.testing import RedisServer

    server = RedisServer().start()
    queue = Queue.from_url(server.url, name="restart")

    async def sweep_now() -> list[str]:
        await queue.redis.delete(queue.keys.sweep_lock)  # not held back by the last sweep
        return await queue.sweep(lock=1)

    try:
        # a lease of 3 s: the sweeps after the restart run within it (with 1 s, a slow
        # restart on a loaded machine could outlast it and the job was swept)
        await queue.enqueue("f", key="k", timeout=0)
        [job], _ = await queue.take(1, "w", lease=3.0)
        await queue.write_worker_info("w", {"id": "w"}, ttl=1.0)
        await queue.redis.save()
        server.stop()
        # the outage: longer than the worker's liveness ttl and the job's lease
        await asyncio.sleep(3.5)
        server.start()  # its data file back: the job, but the record expired meanwhile
        assert not await queue.redis.exists(queue.worker_key("w"))
        assert await sweep_now() == []  # Redis has not been up for a lease yet
        await queue.write_worker_info("w", {"id": "w"}, ttl=30)  # the worker is back
        assert await sweep_now() == []
        assert await queue.finish(job, Status.COMPLETE, result="once", expect=True)
        # had it not come back, its job would be recovered once Redis was up for a lease
        await queue.enqueue("f", key="gone", timeout=0)
        await queue.take(1, "never-back", lease=1.0)
        assert await wait_for(sweep_now, 30) == [queue.job_id("gone")]
        assert (await queue.job("gone")).disruptions == 1
    finally:
        await queue.disconnect()
        server.close()
