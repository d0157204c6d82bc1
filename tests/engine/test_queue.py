"""Queue rules and transitions on a real Redis, driven without a worker."""

from __future__ import annotations

import asyncio
import time

import pytest
from engine_helpers import wait_for
from redis.crc import key_slot

from podq import Job, Queue, Status
from podq.queue import JobError


async def test_enqueue_by_name_splits_job_fields_from_kwargs(queue: Queue) -> None:
    job = await queue.enqueue("add", a=1, b=2, retries=3, key="k1", timeout=5)
    assert job is not None
    assert job.kwargs == {"a": 1, "b": 2} and job.retries == 3 and job.timeout == 5
    assert job.status is Status.QUEUED and job.queue is queue
    assert abs(job.queued - time.time() * 1000) < 5000  # epoch milliseconds
    stored = await queue.job("k1")
    assert stored is not None and stored.to_dict() == job.to_dict()


async def test_enqueue_job_object_and_job_enqueue_method(queue: Queue) -> None:
    job = Job("f", key="obj", kwargs={"x": 1})
    assert await queue.enqueue(job) is job
    again = Job("f", key="obj", queue=queue, kwargs={"x": 2})
    await again.enqueue()  # duplicate: refreshed from the store
    assert again.kwargs == {"x": 1} and again.status is Status.QUEUED
    other = Queue(queue.redis, name="other")
    with pytest.raises(ValueError):
        await other.enqueue(job)


async def test_uniqueness_for_pending_keys_and_replacement_when_finished(queue: Queue) -> None:
    assert await queue.enqueue("f", key="u")
    assert await queue.enqueue("f", key="u") is None  # queued
    [job], _ = await queue.take(1, "w")
    assert await queue.enqueue("f", key="u") is None  # active
    await queue.abort(job, "stop", ttl=0)
    assert await queue.enqueue("f", key="u") is None  # aborting
    await queue.finish(job, Status.ABORTED, error="stop")
    replaced = await queue.enqueue("f", key="u", x=1)  # finished: replaced
    assert replaced is not None and (await queue.job("u")).kwargs == {"x": 1}
    assert await queue.enqueue("f", key="s", scheduled=time.time() + 60)
    assert await queue.enqueue("f", key="s") is None  # scheduled


async def test_non_json_kwargs_fail_at_enqueue_naming_the_problem(queue: Queue) -> None:
    with pytest.raises(TypeError, match=r"kwargs\['when'\].*set"):
        await queue.enqueue("f", when={1, 2})
    with pytest.raises(TypeError, match="kwargs"):
        await queue.enqueue_many([Job("f", kwargs={"x": object()})])
    assert await queue.count("incomplete") == 0


async def test_enqueue_many_is_one_round_trip_and_skips_duplicates(queue: Queue) -> None:
    await queue.enqueue("f", key="dup")
    jobs = [Job("f", key="dup"), Job("f", key="n1"), "g", {"function": "h", "key": "n2", "a": 1}]
    enqueued = await queue.enqueue_many(jobs)
    assert [j.function for j in enqueued] == ["f", "g", "h"]
    assert (await queue.job("n2")).kwargs == {"a": 1}
    assert await queue.count("queued") == 4
    many = await queue.enqueue_many([Job("f") for _ in range(450)])
    assert len(many) == 450 and await queue.count("queued") == 454


async def test_job_jobs_and_iter_jobs(queue: Queue) -> None:
    a = await queue.enqueue("f", key="a")
    await queue.enqueue("f", key="b")
    assert (await queue.job("a")) == a
    assert await queue.job("missing") is None
    found = await queue.jobs(["a", "missing", "b"])
    assert [j.key if j else None for j in found] == ["a", None, "b"]
    [taken], _ = await queue.take(1, "w")
    assert taken.key == "a"
    found = {j.key: j.status async for j in queue.iter_jobs()}
    assert found == {"a": Status.ACTIVE, "b": Status.QUEUED}
    assert [j.key async for j in queue.iter_jobs([Status.ACTIVE])] == ["a"]


async def test_count_kinds_depth_and_info(queue: Queue) -> None:
    await queue.enqueue_many([Job("f") for _ in range(3)])
    await queue.enqueue("f", scheduled=time.time() + 60)
    await queue.enqueue("f", scheduled=time.time() - 1)  # due: counts as queued
    await queue.take(1, "w")
    assert await queue.count("queued") == 3
    assert await queue.count("scheduled") == 1
    assert await queue.count("active") == 1
    assert await queue.count("incomplete") == 5
    assert await queue.depth() == 4  # jobs scheduled later do not count
    with pytest.raises(ValueError):
        await queue.count("bogus")
    info = await queue.info(jobs=True)
    assert info["name"] == "test" and info["queued"] == 3 and info["scheduled"] == 1
    assert len(info["jobs"]) == 5
    stats = await queue.stats()
    assert stats["enqueued"] == 5 and stats["active"] == 1


async def test_fix1_take_marks_active_in_the_same_atomic_step(queue: Queue) -> None:
    await queue.enqueue_many([Job("f", key=f"j{i}") for i in range(200)])

    async def taker(worker_id: str) -> list[Job]:
        got: list[Job] = []
        while True:
            jobs, _ = await queue.take(3, worker_id)
            if not jobs:
                return got
            got += jobs

    results = await asyncio.gather(*(taker(f"w{i}") for i in range(5)))
    keys = [j.key for r in results for j in r]
    assert sorted(keys) == sorted(f"j{i}" for i in range(200))  # each taken exactly once
    for i, taken in enumerate(results):
        for job in taken:
            assert job.status is Status.ACTIVE and job.worker_id == f"w{i}"
            assert job.attempts == 1 and job.started > 0
    # nothing is ever out of both queued and active: the stored state agrees
    assert await queue.count("queued") == 0 and await queue.count("active") == 200
    stored = await queue.jobs(keys)
    assert all(j.status is Status.ACTIVE and j.worker_id for j in stored)


async def test_fix8_priorities_lower_first_fifo_within_a_priority(queue: Queue) -> None:
    order = [("p5", 5), ("p1a", 1), ("p3", 3), ("p1b", 1), ("pm2", -2), ("p1c", 1), ("p0", 0)]
    for key, priority in order[:3]:
        await queue.enqueue("f", key=key, priority=priority)
    await queue.enqueue_many([Job("f", key=k, priority=p) for k, p in order[3:]])
    taken = []
    while True:
        jobs, _ = await queue.take(1, "w")
        if not jobs:
            break
        taken.append(jobs[0].key)
    assert taken == ["pm2", "p0", "p1a", "p1b", "p1c", "p3", "p5"]
    with pytest.raises(ValueError):
        await queue.enqueue("f", priority=10**6)


async def test_scheduled_job_becomes_ready_on_time(queue: Queue) -> None:
    # 3 s ahead: the checks before it must all run before it is due (0.6 s was a
    # window a loaded machine could outlast between the enqueue and the counts)
    at = time.time() + 3
    await queue.enqueue("f", key="later", scheduled=at)
    jobs, next_at = await queue.take(1, "w")
    assert jobs == [] and next_at == pytest.approx(at, abs=0.01)
    assert await queue.count("queued") == 0 and await queue.count("scheduled") == 1
    assert await queue.count("queued") == 0  # not before it is due
    await asyncio.sleep(max(0.0, at - time.time()) + 0.01)  # the clock reaching `at`
    assert await queue.count("queued") == 1
    jobs, next_at = await queue.take(1, "w")
    assert [j.key for j in jobs] == ["later"] and next_at is None


async def test_retry_with_delay_and_backoff(queue: Queue) -> None:
    # a retry_delay of 3 s: the checks that it waits all run within it (0.5 s was a
    # window a loaded machine could outlast)
    await queue.enqueue("f", key="r", retries=3, retry_delay=3)
    [job], _ = await queue.take(1, "w")
    retried = time.time()
    await queue.retry(job, "oops")
    stored = await queue.job("r")
    assert stored.status is Status.QUEUED and stored.error == "oops" and stored.attempts == 1
    assert await queue.count("scheduled") == 1  # waits retry_delay
    assert (await queue.take(1, "w"))[0] == []
    async def taken() -> list[Job]:
        return (await queue.take(1, "w"))[0]

    [again] = await wait_for(taken, 30)
    assert time.time() - retried >= 2.99  # not before its delay (Redis TIME: ms)
    assert again.key == "r" and again.attempts == 2
    assert await queue.retry(again, "guarded", expect=True)  # still this attempt: written
    assert not await queue.retry(again, "stale", expect=True)  # no longer active: ignored
    assert (await queue.job("r")).error == "guarded"


async def test_fix3_retrying_a_scheduled_job_never_readies_it_twice(queue: Queue) -> None:
    await queue.enqueue("f", key="s", scheduled=time.time() - 0.01, retries=5)
    [job], _ = await queue.take(1, "w")
    await queue.retry(job, "again")
    await queue.retry(job, "and again")  # retry() on a queued job: still one entry
    assert await queue.count("queued") == 1 and await queue.count("incomplete") == 1
    first, _ = await queue.take(5, "w")
    second, _ = await queue.take(5, "w")
    assert [j.key for j in first] == ["s"] and second == []
    # a job scheduled in the future and retried stays scheduled, once
    await queue.enqueue("f", key="future", scheduled=time.time() + 60)
    future = await queue.job("future")
    await queue.retry(future, None)
    assert await queue.count("scheduled") == 1 and await queue.count("queued") == 0


async def test_finish_applies_ttl_rules(queue: Queue) -> None:
    for key, ttl in (("keep", 0), ("expire", 30), ("delete", -1)):
        await queue.enqueue("f", key=key, ttl=ttl)
    jobs, _ = await queue.take(3, "w")
    for job in jobs:
        await queue.finish(job, Status.COMPLETE, result={"ok": job.key})
    assert await queue.redis.pttl(queue.job_id("keep")) == -1
    assert 0 < await queue.redis.pttl(queue.job_id("expire")) <= 30_000
    assert await queue.job("delete") is None
    kept = await queue.job("keep")
    assert kept.status is Status.COMPLETE and kept.result == {"ok": "keep"}
    assert kept.progress == 1.0 and kept.completed >= kept.started > 0
    assert await queue.count("incomplete") == 0


async def test_abort_queued_job(queue: Queue) -> None:
    job = await queue.enqueue("f", key="a")
    await queue.abort(job, "not needed")
    stored = await queue.job("a")
    assert stored.status is Status.ABORTED and stored.error == "not needed"
    assert job.status is Status.ABORTED
    assert await queue.count("incomplete") == 0


async def test_fix2_aborting_a_scheduled_job_finishes_it_as_aborted(queue: Queue) -> None:
    job = await queue.enqueue("f", key="later", scheduled=time.time() + 3600)
    await job.abort("changed my mind")
    stored = await queue.job("later")
    assert stored.status is Status.ABORTED and stored.error == "changed my mind"
    assert await queue.count("scheduled") == 0 and await queue.count("incomplete") == 0


async def test_abort_active_job_becomes_aborting(queue: Queue) -> None:
    await queue.enqueue("f", key="run")
    [job], _ = await queue.take(1, "w")
    await queue.abort(job, "stop it")
    stored = await queue.job("run")
    assert stored.status is Status.ABORTING and stored.error == "stop it"
    assert await queue.count("active") == 1


async def test_abort_marker_blocks_reenqueue_while_it_lives(queue: Queue) -> None:
    job = await queue.enqueue("f", key="m")
    # a 3 s marker: the refused enqueue runs within it (0.4 s was a window a loaded
    # machine could outlast); then it expires and an enqueue is taken again
    await queue.abort(job, "x", ttl=3)
    assert await queue.enqueue("f", key="m") is None
    assert 0 < await queue.redis.pttl(queue.abort_id("m")) <= 3000
    assert await wait_for(lambda: queue.enqueue("f", key="m"), 30) is not None


async def test_fix4_abort_marker_is_scoped_to_its_queue(queue: Queue) -> None:
    other = Queue(queue.redis, name="other")
    job = await queue.enqueue("f", key="same")
    await queue.abort(job, "x", ttl=60)
    assert await queue.enqueue("f", key="same") is None
    assert await other.enqueue("f", key="same") is not None
    assert await queue.redis.exists(queue.abort_id("same"))
    assert not await queue.redis.exists(other.abort_id("same"))


async def test_fix7_default_timeout_per_queue(redis_url: str) -> None:
    q = Queue.from_url(redis_url, name="slow", default_timeout=300)
    try:
        assert (await q.enqueue("f")).timeout == 300
        assert (await q.enqueue("f", timeout=5)).timeout == 5
        assert (await q.enqueue(Job("f", timeout=7))).timeout == 7
        assert (await q.enqueue(Job("f"))).timeout == 300
    finally:
        await q.disconnect()


async def test_fix9_keys_of_a_queue_share_a_hash_tag(queue: Queue) -> None:
    other = Queue(queue.redis, name="other")
    for q in (queue, other):
        await q.enqueue("f", key="a")
        await q.enqueue("f", key="b", scheduled=time.time() + 60)
        [job], _ = await q.take(1, "w1")
        await q.write_worker_info("w1", {"id": "w1"}, ttl=30)
        await q.abort(job, "x")
        await q.enqueue("f", key="c")
        [c], _ = await q.take(1, "w1")
        await q.finish(c, Status.COMPLETE)
        await q.sweep(lock=1)
    keys = [k.decode() for k in await queue.redis.keys("podq:{*")]
    assert keys
    slots: dict[str, set[int]] = {}
    for key in keys:
        name = key.split("{", 1)[1].split("}", 1)[0]
        slots.setdefault(name, set()).add(key_slot(key.encode()))
    assert set(slots) == {"test", "other"}
    assert all(len(s) == 1 for s in slots.values())  # one slot per queue
    assert slots["test"] != slots["other"]  # different queues spread over slots
    for q in (queue, other):  # the shard channels too (SPUBLISH in the scripts)
        assert {key_slot(c.encode()) for c in (q.keys.changes, q.keys.wake)} == slots[q.name]
    with pytest.raises(ValueError):
        Queue(queue.redis, name="bad{name}")


async def test_changes_yield_key_and_status_for_every_change(queue: Queue) -> None:
    seen: list[tuple[str, Status]] = []

    async def listen() -> None:
        async for change in queue.changes():
            seen.append((change.key, change.status))
            if change.status is Status.COMPLETE:
                return

    async with queue.subscribe() as sub:  # subscribe first, so nothing is missed
        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.05)
        job = await queue.enqueue("f", key="c")
        [job], _ = await queue.take(1, "w")
        await job.update(progress=0.5)
        await queue.finish(job, Status.COMPLETE)
        await asyncio.wait_for(listener, 30)
        got = [await asyncio.wait_for(sub.__anext__(), 30) for _ in range(4)]
    expected = [("c", Status.QUEUED), ("c", Status.ACTIVE), ("c", Status.ACTIVE),
                ("c", Status.COMPLETE)]
    assert seen == expected
    assert [(c.key, c.status) for c in got] == expected


async def test_update_sets_fields_touches_and_keeps_status(queue: Queue) -> None:
    await queue.enqueue("f", key="u")
    [job], _ = await queue.take(1, "w")
    before = job.touched
    await asyncio.sleep(0.01)
    await job.update(progress=0.25, meta={"step": 1})
    stored = await queue.job("u")
    assert stored.progress == 0.25 and stored.meta == {"step": 1}
    assert stored.touched > before and stored.status is Status.ACTIVE
    await job.update(status=Status.ABORTING)
    assert (await queue.job("u")).status is Status.ABORTING


async def test_refresh_reloads_and_waits_for_terminal_status(queue: Queue) -> None:
    job = await queue.enqueue("f", key="w")
    [taken], _ = await queue.take(1, "w")
    await job.refresh()
    assert job.status is Status.ACTIVE and job.attempts == 1
    with pytest.raises(TimeoutError):
        await job.refresh(until_complete=0.2)

    async def finish_later() -> None:
        await asyncio.sleep(0.2)
        await queue.finish(taken, Status.COMPLETE, result=42)

    task = asyncio.create_task(finish_later())
    started = time.monotonic()
    await job.refresh(until_complete=30)
    assert job.status is Status.COMPLETE and job.result == 42
    # woken by the notification: without one, the wait re-reads the job every 5 s
    assert time.monotonic() - started < 4.0
    await task
    gone = Job("f", key="nope", queue=queue)
    with pytest.raises(RuntimeError):
        await gone.refresh()


async def test_listen_calls_back_until_truthy(queue: Queue) -> None:
    statuses: list[Status] = []

    def callback(key: str, status: Status) -> bool:
        statuses.append(status)
        return status is Status.COMPLETE

    await queue.enqueue("f", key="l")
    task = asyncio.create_task(queue.listen(["l"], callback, timeout=30))
    # its channel subscribed before the job changes (a fixed 0.1 s could be too short
    # on a loaded machine, and the ACTIVE change was then missed)
    await wait_for(lambda: queue._notifier.ready.is_set() and queue._notifier.callbacks, 30)
    [job], _ = await queue.take(1, "w")
    await queue.finish(job, Status.COMPLETE)
    await task
    assert statuses == [Status.ACTIVE, Status.COMPLETE]


async def test_listen_reads_the_jobs_again_after_a_resubscription(queue: Queue) -> None:
    """A change published while the subscription was down is not replayed by Redis:
    once subscribed again, listen gives each job's current status."""
    statuses: list[Status] = []

    def callback(key: str, status: Status) -> bool:
        statuses.append(status)
        return status is Status.ABORTED

    job = await queue.enqueue("f", key="missed")
    task = asyncio.create_task(queue.listen(["missed"], callback, timeout=15))

    async def subscribed() -> bool:
        [(_, count)] = await queue.redis.pubsub_shardnumsub(queue.keys.changes)
        return count == 1

    await wait_for(subscribed, 10)
    # Redis drops the subscription; the abort's message finds no subscriber (the
    # reader subscribes again 0.1 s later at the earliest)
    assert await queue.redis.client_kill_filter(_type="pubsub") == 1
    await queue.abort(job, "gone")
    await task
    assert statuses == [Status.ABORTED]


async def test_batch_aborts_its_jobs_when_an_exception_escapes(queue: Queue) -> None:
    with pytest.raises(RuntimeError):
        async with queue.batch():
            await queue.enqueue("f", key="b1")
            await queue.enqueue("f", key="b2")
            raise RuntimeError("boom")
    assert [j.status for j in await queue.jobs(["b1", "b2"])] == [Status.ABORTED] * 2
    async with queue.batch():
        await queue.enqueue("f", key="b3")
    assert (await queue.job("b3")).status is Status.QUEUED


async def test_map_and_apply_wait_on_notifications(queue: Queue) -> None:
    async def fake_worker() -> None:
        while True:
            jobs, _ = await queue.take(10, "w")
            for job in jobs:
                if job.function == "fail":
                    await queue.finish(job, Status.FAILED, error="bad")
                else:
                    await queue.finish(job, Status.COMPLETE, result=job.kwargs["a"] * 2)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(fake_worker())
    try:
        assert await queue.map("double", [{"a": 1}, {"a": 2}, {"a": 3}], timeout=30) == [2, 4, 6]
        assert await queue.apply("double", a=21, timeout=30) == 42
        with pytest.raises(JobError):
            await queue.apply("fail", timeout=30)
        results = await queue.map("fail", [{}], return_exceptions=True, timeout=30)
        assert isinstance(results[0], JobError)
    finally:
        task.cancel()


async def test_sweep_recovers_jobs_of_a_worker_without_liveness(queue: Queue) -> None:
    await queue.write_worker_info("alive", {"id": "alive"}, ttl=30)
    await queue.enqueue("f", key="mine", retries=2, timeout=0, heartbeat=0)
    await queue.enqueue("f", key="last", retries=1, timeout=0, heartbeat=0)
    await queue.enqueue("f", key="kept", timeout=0)
    await queue.take(2, "dead-worker")
    await queue.take(1, "alive")
    # (a job counts as orphaned once its lease, 0 ms here, has passed: in the same
    # millisecond as the take it has not; each sweep holds the lock for 10 ms)
    swept = await wait_for(lambda: queue.sweep(lock=0.01), 30)
    assert sorted(swept) == sorted([queue.job_id("mine"), queue.job_id("last")])
    mine, last, kept = await queue.jobs(["mine", "last", "kept"])
    # a lost worker is a disruption, not a failure: put back, the attempt not used up
    for job in (mine, last):
        assert job.status is Status.QUEUED and job.error == "swept" and job.attempts == 0
        assert job.disruptions == 1 and "dead-worker" in job.last_disruption
    assert kept.status is Status.ACTIVE


async def test_a_job_losing_its_worker_every_time_ends_failed_worker_lost(redis_url: str) -> None:
    queue = Queue.from_url(redis_url, name="lossy", max_disruptions=3)
    try:
        await queue.enqueue("f", key="doomed", timeout=0)
        for run in range(1, 4):
            [job], _ = await queue.take(1, f"dies-{run}")
            assert job.attempts == 1  # every run is attempt 1: none was used up
            # (each sweep holds the sweep lock for 10 ms)
            assert await wait_for(lambda: queue.sweep(lock=0.01), 30) == [queue.job_id("doomed")]
        job = await queue.job("doomed")
        assert job.status is Status.FAILED and job.disruptions == 3
        assert job.error.startswith("WorkerLost:") and "dies-3" in job.error
        assert await queue.count("incomplete") == 0
        with pytest.raises(ValueError, match="max_disruptions"):
            Queue(queue.redis, name="x", max_disruptions=0)
    finally:
        await queue.disconnect()


async def test_sweep_asks_a_live_worker_to_abort_its_stuck_job(queue: Queue) -> None:
    await queue.write_worker_info("w", {"id": "w"}, ttl=30)
    # heartbeat 3 s: the first sweep runs within it (1 s was a window a loaded machine
    # could outlast); then sweeps until the heartbeat has passed
    await queue.enqueue("f", key="hb", heartbeat=3, timeout=0, retries=1)
    await queue.take(1, "w")
    assert await queue.sweep(lock=0.01, abort=0.1) == []
    assert await wait_for(lambda: queue.sweep(lock=0.01, abort=0.1), 30) == [queue.job_id("hb")]
    stored = await queue.job("hb")
    # its worker is alive: it cancels the run and writes it back, not the sweep
    assert stored.status is Status.ABORTING and stored.error == "swept"
    assert await queue.sweep(lock=0.01, abort=0.1) == []  # asked once


async def test_sweep_takes_over_a_stuck_job_taken_without_a_worker(queue: Queue) -> None:
    # heartbeat 3 s: the first sweep runs within it (1 s was a window a loaded machine
    # could outlast); then sweeps until the heartbeat has passed
    await queue.enqueue("f", key="hb", heartbeat=3, timeout=0, retries=1)
    job = await queue.dequeue()
    assert job.key == "hb" and not job.worker_id
    # no liveness record, but no worker either: not taken for a dead worker's job
    assert await queue.sweep(lock=0.01, abort=0.1) == []
    assert await wait_for(lambda: queue.sweep(lock=0.01, abort=0.1), 30) == [queue.job_id("hb")]
    stored = await queue.job("hb")
    assert stored.status is Status.ABORTED and stored.error == "swept"
    assert await queue.count("active") == 0


async def test_retry_puts_any_job_back_to_queued(queue: Queue) -> None:
    await queue.enqueue("f", key="done", ttl=0)
    [job], _ = await queue.take(1, "w")
    await queue.finish(job, Status.FAILED, error="bad")
    await job.retry("try again")
    stored = await queue.job("done")
    assert stored.status is Status.QUEUED and stored.error == "try again"
    assert stored.completed == 0 and stored.started == 0
    [again], _ = await queue.take(1, "w")
    assert again.key == "done" and again.attempts == 2
    assert await queue.redis.pttl(queue.job_id("done")) == -1  # pending jobs never expire


async def test_update_of_a_vanished_job_stores_nothing(queue: Queue) -> None:
    await queue.enqueue("f", key="gone", ttl=-1)
    [job], _ = await queue.take(1, "w")
    await queue.finish(job, Status.COMPLETE)
    await job.update(progress=0.5)
    assert await queue.job("gone") is None
