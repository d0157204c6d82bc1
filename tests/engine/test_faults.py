"""Engine faults on a real redis-server: workers killed, Redis flushed, replies lost,
stale runs, sync functions cancelled, clocks skewed. Each test breaks something and
asserts nothing was lost, nothing ran twice and nothing failed that should not have.

docs/reliability.md lists the guarantee each test proves.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import typing as t
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from engine_helpers import Workers, output, start_worker_process, wait_for
from fault_settings import RUNS

from podq import Job, Queue, Status, Worker
from podq.testing import free_port

FAULTS = "fault_settings.settings"


async def runs(queue: Queue) -> Counter[str]:
    """How many times each job key ran, from the fault_settings functions' record."""
    return Counter(r.decode().split(":")[1] for r in await queue.redis.lrange(RUNS, 0, -1))


# -- disruption is not failure ---------------------------------------------------------


async def test_a_job_that_kills_its_worker_every_time_ends_failed_worker_lost(
    redis_url: str, spawn: list
) -> None:
    queue = Queue.from_url(redis_url)
    try:
        job = await queue.enqueue("kills_its_worker", retries=1, timeout=0)
        # each worker dies running it; the next one's sweep finds the job orphaned and
        # puts it back without using up its attempt, until max_disruptions (3) is reached
        deadline = time.monotonic() + 60
        while (await queue.job(job.key)).status not in (Status.FAILED, Status.COMPLETE):
            assert len(spawn) <= 5 and time.monotonic() < deadline, [output(p) for p in spawn]
            if not spawn or spawn[-1].poll() is not None:
                start_worker_process(spawn, redis_url, "--max-disruptions", "3",
                                     settings=FAULTS)
            await asyncio.sleep(0.05)
        await job.refresh()
        assert job.status is Status.FAILED and job.error.startswith("WorkerLost:")
        assert job.disruptions == 3 and job.attempts == 1  # each run was attempt 1
        assert "lost (its liveness record expired)" in job.last_disruption
        assert (await runs(queue))[job.key] == 3  # it ran once per disruption, no more
        assert spawn[-1].poll() is None  # the worker that failed it is alive and well
    finally:
        await queue.disconnect()


# -- Redis lost its data ---------------------------------------------------------------


async def test_flushall_while_workers_run_sweeps_nothing_and_runs_nothing_twice(
    queue: Queue, workers: Workers
) -> None:
    ran: Counter[str] = Counter()

    async def work(ctx: dict, seconds: float) -> str:
        ran[ctx["job"].key] += 1
        await asyncio.sleep(seconds)
        return "done"

    # liveness is written every 2 s: after the flush, live workers have no record for
    # up to 2 s while their sweeps (every 0.3 s) look at the jobs they take meanwhile
    timers = {"schedule": 0.5, "worker_info": 2, "sweep": 0.3, "abort": 0.2}
    for _ in range(2):
        await workers.start(queue, [("work", work)], concurrency=4, timers=timers)
    before = await queue.enqueue_many(
        [Job("work", key=f"before-{i}", kwargs={"seconds": 0.8}, retries=1) for i in range(12)]
    )
    await wait_for(lambda: queue.count("active"), 30)
    await queue.redis.flushall()
    started_before_flush = set(ran)
    after = await queue.enqueue_many(
        [Job("work", key=f"after-{i}", kwargs={"seconds": 0.5}, retries=1) for i in range(16)]
    )
    for job in after:
        await job.refresh(until_complete=30)
        assert job.status is Status.COMPLETE and job.attempts == 1 and job.disruptions == 0
    assert all(ran[job.key] == 1 for job in after)  # taken after the flush: never swept
    for job in before:
        stored = await queue.job(job.key)
        if job.key in started_before_flush:
            # running when Redis lost it: its run wrote it back, complete, once
            await wait_for(lambda key=job.key: queue.job(key), 30)
            stored = await queue.job(job.key)
            assert stored.status is Status.COMPLETE and ran[job.key] == 1
        elif stored is None:
            assert ran[job.key] == 0  # queued when Redis lost it: gone, never run
    assert max(ran.values()) == 1  # nothing ran twice
    assert (await queue.stats())["disrupted"] == 0  # nothing was taken for lost


# -- per-attempt tokens ----------------------------------------------------------------


async def test_a_stale_run_cannot_write_a_newer_attempt_of_the_same_worker(
    queue: Queue,
) -> None:
    await queue.enqueue("f", key="k", timeout=0)
    [stale], _ = await queue.take(1, "w")  # lease 0 and no liveness record: orphaned
    assert await wait_for(lambda: queue.sweep(lock=0.01), 30) == [queue.job_id("k")]
    [current], _ = await queue.take(1, "w")
    # same worker id, same attempt count (the disruption did not use one up): only the
    # attempt id tells the runs apart
    assert (stale.worker_id, stale.attempts) == (current.worker_id, current.attempts)
    assert stale.attempt_id != current.attempt_id
    await stale.update(progress=0.9)
    assert not await queue.finish(stale, Status.COMPLETE, result="stale", expect=True)
    assert not await queue.retry(stale, "stale", expect=True)
    stored = await queue.job("k")
    assert stored.status is Status.ACTIVE and stored.progress == 0.0
    assert stored.attempt_id == current.attempt_id
    assert await queue.finish(current, Status.COMPLETE, result="current", expect=True)
    assert (await queue.job("k")).result == "current"


async def test_the_same_key_taken_again_while_a_stale_run_ends_loses_no_slot(
    queue: Queue, workers: Workers
) -> None:
    release = asyncio.Event()
    seen: list[str] = []

    async def hold(ctx: dict) -> str:
        seen.append(ctx["job"].attempt_id)
        await release.wait()
        return ctx["job"].attempt_id

    worker = await workers.start(queue, [("hold", hold)], concurrency=2)
    job = await queue.enqueue("hold", key="k", timeout=0)
    await wait_for(lambda: len(seen) == 1, 30)
    first = await queue.job("k")
    # its run is taken for lost (as a sweep would after a partition): put back, and the
    # same worker takes it again while the first run still holds a slot
    assert await queue.disrupt(first, "test: taken for lost", "swept") is Status.QUEUED
    await wait_for(lambda: len(seen) == 2, 30)
    assert seen[0] != seen[1]
    await wait_for(lambda: worker.executing == 1, 30)  # the stale run was cancelled
    release.set()
    await job.refresh(until_complete=30)
    assert job.status is Status.COMPLETE and job.result == seen[1]
    await wait_for(lambda: worker.executing == 0 and not worker._runs, 30)
    # both slots are free again: two jobs run at once
    release.clear()
    seen.clear()
    await queue.enqueue_many([Job("hold", key=k, timeout=0) for k in ("a", "b")])
    await wait_for(lambda: len(seen) == 2, 30)
    release.set()


# -- scripts safe under client retries -------------------------------------------------


async def relay(directions: list[t.Any], writers: list[asyncio.StreamWriter]) -> None:
    """Run a proxy connection's two directions until one ends, then close both sides."""
    tasks = [asyncio.create_task(direction) for direction in directions]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for writer in writers:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class ReplyDroppingProxy:
    """A TCP proxy to Redis that, once armed with some bytes, forwards the next command
    containing them and then drops the connection instead of passing the reply on."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.listen_port = free_port()
        self.marker: bytes | None = None
        self.dropped = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ReplyDroppingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.listen_port}/0"

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.port)
        drop = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.marker is not None and self.marker in data:
                    self.marker = None
                    drop.set()
                redis_w.write(data)
                await redis_w.drain()

        async def downstream() -> None:
            while data := await redis_r.read(65536):
                if drop.is_set():  # the reply to the marked command: lost
                    self.dropped += 1
                    return
                client_w.write(data)
                await client_w.drain()

        await relay([upstream(), downstream()], [client_w, redis_w])


@pytest.fixture
async def proxy(redis_server: object) -> AsyncIterator[ReplyDroppingProxy]:
    async with ReplyDroppingProxy(redis_server.port) as p:  # type: ignore[attr-defined]
        yield p


async def test_a_take_resent_after_a_lost_reply_hands_out_the_same_jobs(
    redis_url: str, proxy: ReplyDroppingProxy
) -> None:
    queue = Queue.from_url(proxy.url, name="lossy")  # redis-py resends on a dropped link
    try:
        await queue.enqueue_many([Job("f", key=f"j{i}") for i in range(6)])
        proxy.marker = queue._scripts.take.sha.encode()
        jobs, _ = await queue.take(2, "w")
        assert proxy.dropped == 1  # the first reply was lost, the client sent it again
        assert len(jobs) == 2 and await queue.count("active") == 2  # none taken for nobody
        # a worker whose resends all failed sends the same request again later: same jobs
        again, _ = await queue.take(2, "w", request="r")
        assert await queue.take(2, "w", request="r") == (again, None)
        assert await queue.count("active") == 4
        # an enqueue resent after a lost reply reports the job enqueued (once)
        proxy.marker = queue._scripts.enqueue.sha.encode()
        assert await queue.enqueue("f", key="resent") is not None
        assert proxy.dropped == 2 and (await queue.stats())["enqueued"] == 7
    finally:
        await queue.disconnect()


async def test_a_late_copy_of_an_older_take_takes_nothing(queue: Queue) -> None:
    """Redis frozen (SIGSTOP) or unreachable: the client sends a take again on another
    connection; once Redis runs again the copies may run in either order. A copy of a
    request the worker has had its reply to, run after the worker's next take, must
    take nothing: its jobs would be active for a worker that never sees them."""
    await queue.enqueue_many([Job("f", key=f"j{i}", timeout=0) for i in range(6)])
    first, _ = await queue.take(2, "w", request="r1", previous="r0")
    second, _ = await queue.take(2, "w", request="r2", previous="r1")
    assert len(first) == len(second) == 2
    # the late copy of r1 (its record was dropped by r2), jobs still queued: none taken
    assert await queue.take(2, "w", request="r1", previous="r0") == ([], None)
    assert await queue.count("active") == 4 and await queue.count("queued") == 2
    # a late copy of a request that took no job, after the next one took some
    assert await queue.take(0, "v", request="e1", previous="e0") == ([], None)
    assert len((await queue.take(2, "v", request="e2", previous="e1"))[0]) == 2
    await queue.enqueue_many([Job("f", key=f"k{i}", timeout=0) for i in range(2)])
    assert await queue.take(2, "v", request="e1", previous="e0") == ([], None)
    # the same request sent again while it is still the last: its jobs, once
    again, _ = await queue.take(2, "w", request="r3", previous="r2")
    assert await queue.take(2, "w", request="r3", previous="r2") == (again, None)
    assert len(again) == 2 and await queue.count("active") == 8


async def test_an_aborted_job_taken_for_a_worker_that_never_received_it_is_written_back(
    queue: Queue, workers: Workers
) -> None:
    """A take that ran in Redis for a live worker whose reply never reached it: no run
    writes its jobs back, so an abort (a user's, or a sweep's of a stuck job) left them
    aborting for good. The worker writes back a job it never received: aborted, or put
    back as a disruption when a sweep found it stuck (its function never ran)."""
    release = asyncio.Event()
    ran: Counter[str] = Counter()

    async def hold(ctx: dict) -> str:
        ran[ctx["job"].key] += 1
        await release.wait()
        return "ran"

    worker = await workers.start(queue, [("hold", hold)], concurrency=1)
    await queue.enqueue("hold", key="busy", timeout=0)
    await wait_for(lambda: ran["busy"] == 1, 30)  # its one slot is taken
    await queue.enqueue_many([Job("hold", key="user", timeout=0),
                              Job("hold", key="stuck", timeout=1, retries=1)])
    lost, _ = await queue.take(2, worker.id)  # as the late take did: for it, unseen
    assert {job.key for job in lost} == {"user", "stuck"}
    await (await queue.job("user")).abort("user abort")

    async def status(key: str, wanted: Status) -> bool:
        return (await queue.job(key)).status is wanted

    await wait_for(lambda: status("user", Status.ABORTED), 30)
    # "stuck" passes its timeout: the sweep asks its worker to abort it, which writes it
    # back unused (a disruption), and runs it once its slot is free
    await wait_for(lambda: status("stuck", Status.QUEUED), 30)
    stuck = await queue.job("stuck")
    assert stuck.disruptions == 1 and stuck.attempts == 0
    assert "never received" in stuck.last_disruption
    release.set()
    await wait_for(lambda: status("stuck", Status.COMPLETE), 30)
    assert ran == Counter({"busy": 1, "stuck": 1})  # "user" never ran


# -- sync functions: no write-back while the thread runs -------------------------------


class Gates:
    """A sync function that blocks its thread until the test opens its run's gate, and
    notes (epoch ms) when each run's thread ended."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gates: dict[str, threading.Event] = {}
        self.ended_ms: dict[str, int] = {}

    def gate(self, run: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(run, threading.Event())

    def blocks(self, ctx: dict) -> str:
        run = f"{ctx['job'].key}:{ctx['job'].attempts}"
        self.gate(run).wait(30)
        self.ended_ms[run] = int(time.time() * 1000)
        return "side effect done"


async def _started(worker: Worker, queue: Queue, key: str) -> Job:
    await wait_for(lambda: any(r.job.key == key for r in worker._runs.values()), 5)
    return await queue.job(key)


async def test_an_aborted_sync_function_is_aborted_once_its_thread_ended(
    queue: Queue, workers: Workers
) -> None:
    gates = Gates()
    worker = await workers.start(queue, [("blocks", gates.blocks)])
    job = await queue.enqueue("blocks", key="k", timeout=0)
    await _started(worker, queue, "k")
    await job.abort("user abort")
    await wait_for(lambda: any(r.abort_error for r in worker._runs.values()), 30)
    assert (await queue.job("k")).status is Status.ABORTING  # its thread still runs
    gates.gate("k:1").set()
    await job.refresh(until_complete=30)
    # aborted, not complete, and only after the function's side effects were done
    assert job.status is Status.ABORTED and job.error == "user abort"
    assert job.completed >= gates.ended_ms["k:1"]


async def test_a_timed_out_sync_function_is_retried_once_its_thread_ended(
    queue: Queue, workers: Workers
) -> None:
    gates = Gates()
    worker = await workers.start(queue, [("blocks", gates.blocks)])
    job = await queue.enqueue("blocks", key="k", timeout=1, retries=2)
    started = (await _started(worker, queue, "k")).started

    async def past_timeout() -> bool:
        seconds, micros = await queue.redis.time()
        return seconds * 1000 + micros // 1000 - started > 1500

    await wait_for(past_timeout, 30)
    assert (await queue.job("k")).status is Status.ACTIVE  # its thread still runs
    gates.gate("k:1").set()
    gates.gate("k:2").set()
    await job.refresh(until_complete=30)
    assert job.status is Status.COMPLETE and job.attempts == 2
    assert "k:1" in gates.ended_ms and "k:2" in gates.ended_ms
    # the retry (attempt 2) started only after attempt 1's thread had ended
    assert job.started >= gates.ended_ms["k:1"]


async def test_a_drained_sync_function_is_put_back_once_its_thread_ended(
    queue: Queue, workers: Workers
) -> None:
    gates = Gates()
    worker = await workers.start(queue, [("blocks", gates.blocks)], shutdown_grace_period_s=0.1)
    await queue.enqueue("blocks", key="k", timeout=0)
    await _started(worker, queue, "k")
    stopping = asyncio.create_task(worker.stop())
    await wait_for(lambda: worker._draining, 30)
    await wait_for(lambda: all(r.task.cancelling() for r in worker._runs.values()), 30)
    assert (await queue.job("k")).status is Status.ACTIVE  # past its grace, thread runs
    gates.gate("k:1").set()
    await asyncio.wait_for(stopping, 30)
    back = await queue.job("k")
    assert back.status is Status.QUEUED and back.error == "cancelled"
    assert back.attempts == 0 and back.disruptions == 1  # a disruption, not an attempt
    assert back.touched >= gates.ended_ms["k:1"]


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
