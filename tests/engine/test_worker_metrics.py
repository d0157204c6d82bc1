"""A real `podq worker --metrics-port` process against real Redis, scraped over HTTP."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from engine_helpers import Workers, command_calls, redis_clock_past, spent, wait_for
from ops_helpers import HERE, PODQ, Samples, podq_run, sample, scrape
from ops_settings import RELEASE, hold
from redis import Redis

from podq import Job, Queue, Status
from podq.metrics import WorkerMetrics
from podq.testing import free_port


@pytest.fixture
def metrics_worker(redis_url: str) -> Iterator[int]:
    """A worker process on queue "m" serving metrics; yields its metrics port."""
    port = free_port()
    proc = subprocess.Popen(
        [PODQ, "worker", "ops_settings.settings", "--redis-url", redis_url, "--queue", "m",
         "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        assert proc.stdout is not None
        print(proc.stdout.read())  # shown when the test failed


def scraped(port: int) -> Samples | None:
    try:
        return scrape(port)
    except OSError:
        return None


async def test_worker_metrics_count_outcomes_retries_durations_and_depth(
    redis_url: str, metrics_worker: int
) -> None:
    port = metrics_worker
    queue = Queue.from_url(redis_url, name="m")
    try:
        await wait_for(queue.workers, 20)
        first = await wait_for(lambda: scraped(port), 30)
        # known functions have their series from the start, at zero
        assert sample(first, "podq_jobs_finished_total", queue="m", function="ok",
                      outcome="complete") == 0
        info = {dict(labels).get("concurrency") for (name, labels) in first
                if name == "podq_worker_info"}
        assert info == {"4"}

        await queue.enqueue("ok", key="ok-1")
        await queue.enqueue("fail", key="fail-1", retries=1)
        await queue.enqueue("flaky", key="flaky-1", retries=2)
        await queue.enqueue("hold", key="hold-1", name="hold-1", timeout=60)
        await queue.enqueue("ok", key="later", scheduled=time.time() + 3600)
        for key, status in (("ok-1", Status.COMPLETE), ("fail-1", Status.FAILED),
                            ("flaky-1", Status.COMPLETE)):
            job = await queue.job(key)
            assert job is not None
            await job.refresh(until_complete=15)
            assert job.status is status, key

        def settled() -> Samples | None:
            s = scraped(port)
            # depth is read every few seconds: wait for a read after all the enqueues
            if not s or sample(s, "podq_queue_jobs", queue="m", state="active") != 1 or \
                    sample(s, "podq_queue_jobs", queue="m", state="scheduled") != 1:
                return None
            done = [sample(s, "podq_jobs_finished_total", queue="m", function=f, outcome=o)
                    for f, o in (("ok", "complete"), ("fail", "failed"), ("flaky", "complete"))]
            return s if done == [1, 1, 1] else None

        s = await wait_for(settled, 30)
        finished = {
            (f, o): sample(s, "podq_jobs_finished_total", queue="m", function=f, outcome=o)
            for f in ("ok", "fail", "flaky") for o in ("complete", "failed", "aborted")
        }
        assert finished == {
            ("ok", "complete"): 1, ("ok", "failed"): 0, ("ok", "aborted"): 0,
            ("fail", "complete"): 0, ("fail", "failed"): 1, ("fail", "aborted"): 0,
            ("flaky", "complete"): 1, ("flaky", "failed"): 0, ("flaky", "aborted"): 0,
        }
        assert sample(s, "podq_job_retries_total", queue="m", function="flaky") == 1
        assert sample(s, "podq_job_retries_total", queue="m", function="fail") == 0
        for function, outcome in (("ok", "complete"), ("fail", "failed"),
                                  ("flaky", "retried"), ("flaky", "complete")):
            labels = {"queue": "m", "function": function, "outcome": outcome}
            assert sample(s, "podq_job_duration_seconds_count", **labels) == 1
            assert sample(s, "podq_job_duration_seconds_bucket", le="+Inf", **labels) == 1
            total = sample(s, "podq_job_duration_seconds_sum", **labels)
            assert total is not None and 0 <= total < 10
        # one wait per attempt taken: flaky ran twice
        for function, attempts in (("ok", 1), ("fail", 1), ("flaky", 2), ("hold", 1)):
            labels = {"queue": "m", "function": function}
            assert sample(s, "podq_job_queue_wait_seconds_count", **labels) == attempts
            waited = sample(s, "podq_job_queue_wait_seconds_sum", **labels)
            assert waited is not None and 0 <= waited < 10 * attempts
        assert sample(s, "podq_jobs_running", queue="m") == 1  # hold-1
        assert sample(s, "podq_queue_jobs", queue="m", state="scheduled") == 1  # later
        assert sample(s, "podq_queue_jobs", queue="m", state="queued") == 0
        assert sample(s, "podq_queue_paused", queue="m") == 0
        assert not any("key" in dict(labels) or "job" in dict(labels) for _, labels in s)

        await queue.redis.sadd(RELEASE, "hold-1")

        def idle() -> Samples | None:
            s = scraped(port)
            if s and sample(s, "podq_jobs_running", queue="m") == 0 \
                    and sample(s, "podq_queue_jobs", queue="m", state="active") == 0:
                return s
            return None

        s = await wait_for(idle, 30)
        assert sample(s, "podq_jobs_finished_total", queue="m", function="hold",
                      outcome="complete") == 1
        held = sample(s, "podq_job_duration_seconds_count", queue="m", function="hold",
                      outcome="complete")
        assert held == 1
    finally:
        await queue.disconnect()


async def test_worker_exits_with_a_message_when_the_metrics_port_is_taken(
    redis_url: str,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await podq_run("worker", "ops_settings.settings", "--redis-url",
                                      redis_url, "--metrics-port", str(port),
                                      "--metrics-host", "127.0.0.1")
    assert code == 1, err
    assert f"cannot serve metrics on 127.0.0.1:{port}" in err and "Traceback" not in err


async def test_in_process_worker_counts_aborts_and_serves_on_a_chosen_port(
    queue: Queue, workers: Workers
) -> None:
    # port 0: any free port
    worker = await workers.start(queue, [hold], metrics_port=0, metrics_host="127.0.0.1")
    port = worker.metrics_port
    assert port
    job = await queue.enqueue("hold", key="doomed", name="doomed", timeout=60)
    await wait_for(lambda: queue.count("active"), 30)
    await queue.abort(job, "no longer wanted")
    await job.refresh(until_complete=10)
    assert job.status is Status.ABORTED

    def aborted() -> Samples | None:
        s = scraped(port)
        done = s and sample(s, "podq_jobs_finished_total", queue="test", function="hold",
                            outcome="aborted")
        return s if done == 1 else None

    s = await wait_for(aborted, 30)
    assert sample(s, "podq_jobs_finished_total", queue="test", function="hold",
                  outcome="complete") == 0
    assert sample(s, "podq_job_duration_seconds_count", queue="test", function="hold",
                  outcome="aborted") == 1
    await workers.stop_all()
    with pytest.raises(OSError):
        scrape(port)  # the server stops with the worker


async def test_worker_metrics_stand_alone_read_running_jobs_from_a_callable(
    queue: Queue,
) -> None:
    """WorkerMetrics needs no Worker: running jobs come from the callable it is given,
    read at each scrape; depth comes from the queue."""
    running = [0]
    metrics = WorkerMetrics(queue, ["b", "a"], 7, lambda: running[0])
    port = metrics.serve(0, addr="127.0.0.1")
    try:
        await queue.enqueue("a", key="old")
        enqueued_ms = await queue.redis_ms()  # Redis's clock, just after the enqueue
        await metrics.refresh()
        running[0] = 3
        samples = scrape(port)
        assert sample(samples, "podq_jobs_running", queue=queue.name) == 3
        assert sample(samples, "podq_queue_jobs", queue=queue.name, state="queued") == 1
        assert sample(samples, "podq_worker_info", queue=queue.name, concurrency="7",
                      functions="a,b", version=sample_version(samples)) == 1
        running[0] = 0
        assert sample(scrape(port), "podq_jobs_running", queue=queue.name) == 0

        # the next job's wait: the head of the ready queue, a plain backlog of one job,
        # since its enqueue on Redis's clock (as the script that enqueued it stamped it)
        await redis_clock_past(queue, enqueued_ms + 50)
        await metrics.refresh()
        waiting = sample(scrape(port), "podq_queue_waiting_seconds", queue=queue.name)
        assert waiting is not None and 0.05 <= waiting < 30
        assert await queue.waiting_since() == (await queue.job("old")).ready_since / 1000
        # this host's clock an hour ahead: the wait is still taken on Redis's clock
        real_time = time.time
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(time, "time", lambda: real_time() + 3600)
            await metrics.refresh()
        skewed = sample(scrape(port), "podq_queue_waiting_seconds", queue=queue.name)
        assert skewed is not None and waiting <= skewed < 30
    finally:
        metrics.close()


async def test_a_retried_attempt_waits_from_its_retry_not_from_the_first_enqueue(
    redis_url: str, metrics_worker: int
) -> None:
    """podq_job_queue_wait_seconds: the first attempt runs 2 s (Redis's clock) then fails
    and is retried at once; the second attempt's wait does not count the first's run."""
    port = metrics_worker
    queue = Queue.from_url(redis_url, name="m")
    try:
        await wait_for(queue.workers, 20)
        await wait_for(lambda: scraped(port), 30)
        job = await queue.enqueue("held_then_flaky", key="hf-1", name="hf-1", retries=2,
                                  timeout=60)
        active = await wait_for(lambda: _active(queue, "hf-1"), 30)
        await redis_clock_past(queue, active.started + 2000)
        await queue.redis.sadd(RELEASE, "hf-1")
        await job.refresh(until_complete=30)
        assert (job.status, job.attempts) == (Status.COMPLETE, 2)

        def waited() -> float | None:
            s = scraped(port)
            labels = {"queue": "m", "function": "held_then_flaky"}
            if not s or sample(s, "podq_job_queue_wait_seconds_count", **labels) != 2:
                return None
            return sample(s, "podq_job_queue_wait_seconds_sum", **labels)
        total = await wait_for(waited, 30)
        assert total is not None and 0 <= total < 2, total  # counted from queued: >= 2 s
    finally:
        await queue.disconnect()


async def _active(queue: Queue, key: str) -> Job | None:
    job = await queue.job(key)
    return job if job is not None and job.status is Status.ACTIVE else None


def sample_version(samples: Samples) -> str:
    return next(dict(labels)["version"] for (name, labels) in samples
                if name == "podq_worker_info")


async def test_waiting_since_is_the_oldest_due_job_whatever_its_priority(queue: Queue) -> None:
    """A newer job of a higher priority at the head of the ready queue does not hide an
    older one of a lower priority. Each job's wait counts from its enqueue (its
    `ready_since`, as enqueue.lua stamped it on Redis's clock), one after another."""
    assert await queue.waiting_since() is None
    ready = {}
    for key, priority in (("low-old", 5), ("mid", 0), ("low-new", 5), ("high-new", -5),
                          ("high", -5)):
        await queue.enqueue("a", key=key, priority=priority)
        ready[key] = (await queue.job(key)).ready_since
        await redis_clock_past(queue, ready[key])
    head = await queue.redis.zrange(queue.keys.queued, 0, 0)
    assert head == [b"high-new"]
    assert await queue.waiting_since() == ready["low-old"] / 1000
    await queue.redis.zrem(queue.keys.queued, "low-old")  # as if taken
    assert await queue.waiting_since() == ready["mid"] / 1000
    await queue.redis.zrem(queue.keys.queued, "mid")
    assert await queue.waiting_since() == ready["low-new"] / 1000
    await queue.enqueue("a", key="due", scheduled=time.time() + 3600)
    await queue.redis.zadd(queue.keys.scheduled, {"due": time.time() - 120})  # due since
    assert await queue.waiting_since() == pytest.approx(time.time() - 120, abs=30)


async def test_waiting_since_reads_every_priority_in_one_round_trip(
    queue: Queue, redis_url: str
) -> None:
    """One script call (waiting_since.lua) whatever the number of priorities in use
    (before: a round trip per priority, WAITING_PRIORITIES at most, and two more); its
    reads: Redis's clock, the due scheduled head, then per priority (the first 32
    looked at) its head's ready_since and the search for the next priority."""
    sync = Redis.from_url(redis_url)
    try:
        # p35 first (past the 32 priorities looked at), then p31, then the others
        ready = {}
        for key in ("p35", "p31"):
            await queue.enqueue("a", key=key, priority=int(key[1:]))
            ready[key] = (await queue.job(key)).ready_since
            await redis_clock_past(queue, ready[key])
        await queue.enqueue_many([Job("a", key=f"p{p}", priority=p) for p in range(40)
                                  if p not in (31, 35)])
        await queue.waiting_since()  # loads the script
        before = command_calls(sync)
        since = await queue.waiting_since()
        calls = spent(before, command_calls(sync))
        assert calls == {"evalsha": 1, "time": 1, "zrange": 1, "zrangebyscore": 1 + 32,
                         "hget": 32}
        assert since == ready["p31"] / 1000
    finally:
        sync.close()
