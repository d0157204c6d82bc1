"""The same scenario run on SAQ 0.26.4 and on podq, against one redis-server, with the
outcomes compared: the Queue (dequeue, schedule, from_url, a job taken with plain dequeue,
abort counts and the abort marker, worker_info, version, loop and utils). Where podq
fixes a SAQ defect on purpose, the documented difference (docs/saq-compatibility.md) is
asserted instead. The Worker's side: test_saq_side_by_side.py."""

from __future__ import annotations

import asyncio
import time
import types
import typing as t

import pytest
import saq
from engine_helpers import blocking, both, noop

import podq


async def test_dequeue_waits_for_a_job_and_leaves_the_attempt_to_the_caller(
    queues: dict[types.ModuleType, t.Any],
) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> dict[str, t.Any]:
        waiting = asyncio.create_task(queue.dequeue())  # timeout 0: until a job arrives
        done, _ = await asyncio.wait([waiting], timeout=0.5)
        out: dict[str, t.Any] = {"returned before a job came": bool(done)}
        job = await queue.enqueue("noop")
        got = await asyncio.wait_for(waiting, 30)
        out["got"] = (got.key == job.key, got.status, got.attempts, got.started, got.worker_id)
        stored = await queue.job(job.key)
        out["stored"] = (stored.status, stored.attempts)
        out["active"] = await queue.count("active")
        # what SAQ's Worker.process() does with it: count the attempt, run, finish
        got.started = int(time.time() * 1000)
        got.attempts += 1
        await got.update(status=lib.Status.ACTIVE)
        await got.finish(lib.Status.COMPLETE, result=1)
        await job.refresh()
        out["finished"] = (job.status, job.attempts, job.result)
        return out

    on_saq, on_podq = await both(queues, scenario)
    stored_saq, stored_podq = on_saq.pop("stored"), on_podq.pop("stored")
    assert on_saq == on_podq == {
        "returned before a job came": False,
        "got": (True, "queued", 0, 0, None),
        "active": 1,
        "finished": ("complete", 1, 1),
    }
    # documented deviation: podq's take is atomic (fix 1), the stored job is active with
    # its attempt counted at once; SAQ's stays queued until process() marks it
    assert stored_saq == ("queued", 0) and stored_podq == ("active", 1)


async def test_queue_schedule_returns_the_ids_it_moved(
    queues: dict[types.ModuleType, t.Any],
) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> dict[str, t.Any]:
        # 2-3 s ahead: the enqueue and the first count run before it is due (+1 could
        # leave a few ms, which a loaded machine outlasts)
        at = int(time.time()) + 3
        due = await queue.enqueue("noop", scheduled=at)
        later = await queue.enqueue("noop", scheduled=at + 3600)
        out: dict[str, t.Any] = {"queued before it is due": await queue.count("queued")}
        await asyncio.sleep(max(0.0, at + 0.05 - time.time()))  # the clock reaching `at`
        out["queued when due"] = await queue.count("queued")
        moved = await queue.schedule()
        out["moved"] = (moved == [due.id], [queue.job_key_from_id(i) == due.key for i in moved])
        out["queued after"] = await queue.count("queued")
        out["later"] = (await queue.job(later.key)).status
        return out

    on_saq, on_podq = await both(queues, scenario)
    when_due_saq, when_due_podq = on_saq.pop("queued when due"), on_podq.pop("queued when due")
    assert on_saq == on_podq == {"queued before it is due": 0, "moved": (True, [True]),
                                 "queued after": 1, "later": "queued"}
    # documented deviation: podq counts a due scheduled job as queued before any
    # schedule() (a worker takes it anyway); SAQ counts it once schedule() moved it
    assert (when_due_saq, when_due_podq) == (0, 1)


async def test_from_url_rejects_an_unknown_scheme() -> None:
    for lib in (saq, podq):
        with pytest.raises(lib.errors.InvalidUrlError, match="scheme://nowhere"):
            lib.Queue.from_url("scheme://nowhere")


async def test_a_job_taken_with_plain_dequeue_is_not_swept_as_a_dead_workers(
    queues: dict[types.ModuleType, t.Any],
) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> dict[str, t.Any]:
        job = await queue.enqueue("noop")  # retries=1: a sweep would end it
        got = await queue.dequeue()
        # a custom loop as SAQ's Worker.process(): its own worker id, no liveness record
        got.started = int(time.time() * 1000)
        got.attempts += 1
        got.worker_id = "my-loop"
        await got.update(status=lib.Status.ACTIVE)
        await got.update(progress=0.5, worker_id="my-loop")  # even when named
        out: dict[str, t.Any] = {"swept": await queue.sweep(lock=1)}
        await job.refresh()
        out["while taken"] = (job.status, job.attempts, job.worker_id)
        await got.finish(lib.Status.COMPLETE, result=1)
        await job.refresh()
        out["finished"] = (job.status, job.result, job.attempts)
        return out

    on_saq, on_podq = await both(queues, scenario)
    assert on_saq == {"swept": [], "while taken": ("active", 1, "my-loop"),
                      "finished": ("complete", 1, 1)}
    # documented deviation: on podq the worker id is the take's (its liveness record
    # vouches for the run), so one set by the caller is not stored
    assert on_podq == {**on_saq, "while taken": ("active", 1, None)}


async def test_abort_counts_and_the_abort_marker(queues: dict[types.ModuleType, t.Any]) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> dict[str, t.Any]:
        running, block = blocking()
        worker = lib.Worker(queue, functions=[block, noop])
        job = await queue.enqueue("block", key="running", timeout=0)
        processing = asyncio.create_task(worker.process())
        await asyncio.wait_for(running.wait(), 30)
        await job.abort("stop it")
        await job.refresh()
        out: dict[str, t.Any] = {"aborting": (job.status, await queue.count("active"),
                                              await queue.count("incomplete"))}
        await worker.abort(0)
        await asyncio.wait_for(processing, 30)
        await job.refresh()
        out["aborted"] = (job.status, await queue.count("active"))
        out["same key again, once the abort finished"] = (
            await queue.enqueue("noop", key="running") is not None)
        queued = await queue.enqueue("noop", key="queued")
        await queued.abort("not needed")
        await queued.refresh()
        out["queued job aborted"] = queued.status
        out["same key again, at once"] = await queue.enqueue("noop", key="queued") is not None
        out["job id"] = queued.id
        await worker.stop()
        return out

    on_saq, on_podq = await both(queues, scenario)
    assert on_saq == {
        "aborting": ("aborting", 0, 0),
        "aborted": ("aborted", 0),
        "same key again, once the abort finished": True,
        "queued job aborted": "aborted",
        "same key again, at once": True,
        "job id": "saq:job:test:queued",
    }
    # documented deviations (docs/saq-compatibility.md): an aborting job still runs, so
    # podq counts it active and incomplete; the abort marker lives its ttl (5 s), keeping
    # the key from being enqueued again meanwhile; job ids carry the queue's hash tag
    assert on_podq == {
        **on_saq,
        "aborting": ("aborting", 1, 1),
        "same key again, once the abort finished": False,
        "same key again, at once": False,
        "job id": "podq:{test}:job:queued",
    }


async def test_queue_worker_info_version_loop_and_utils(
    queues: dict[types.ModuleType, t.Any],
) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> dict[str, t.Any]:
        returned = await queue.worker_info("w1", "test", {"team": "a"}, ttl=30)
        record = (await queue.info())["workers"]["w1"]
        out: dict[str, t.Any] = {
            "returned": sorted(returned), "stats": sorted(returned["stats"]),
            "record": {k: record[k] for k in ("queue_key", "metadata")},
            "version": await queue.version(),
            "loop": queue.loop is asyncio.get_running_loop(),
            "millis": lib.utils.millis(1.5),
        }
        stubborn_started = asyncio.Event()

        async def stubborn() -> None:
            stubborn_started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)  # cleans up for a while, then ends

        tasks = [asyncio.create_task(asyncio.sleep(3600)), asyncio.create_task(stubborn())]
        await stubborn_started.wait()
        out["cancel_tasks, timeout 0"] = await lib.utils.cancel_tasks(tasks, 0)
        out["cancel_tasks, until done"] = await lib.utils.cancel_tasks(tasks, None)
        out["tasks done"] = [task.done() for task in tasks]
        return out

    on_saq, on_podq = await both(queues, scenario)
    timeout_0_saq, timeout_0_podq = (on_saq.pop("cancel_tasks, timeout 0"),
                                     on_podq.pop("cancel_tasks, timeout 0"))
    assert on_saq == on_podq
    assert on_podq["record"] == {"queue_key": "test", "metadata": {"team": "a"}}
    assert on_podq["returned"] == ["metadata", "queue_key", "stats"]
    assert on_podq["cancel_tasks, until done"] is True
    assert on_podq["tasks done"] == [True, True]
    # documented deviation: podq's cancel_tasks returns at its timeout (False: a task
    # still runs); SAQ's waits on past it until every task ended
    assert (timeout_0_saq, timeout_0_podq) == (True, False)


async def test_finishing_or_retrying_a_queued_job_by_hand(
    queues: dict[types.ModuleType, t.Any],
) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> dict[str, t.Any]:
        runs: list[str] = []

        async def work(ctx: dict[str, t.Any]) -> str:
            runs.append(ctx["job"].key)
            return "ran"

        worker = lib.Worker(queue, functions=[("work", work)], dequeue_timeout=0.5)
        finished = await queue.enqueue("work")
        await queue.finish(finished, lib.Status.COMPLETE, result="by hand")
        retried = await queue.enqueue("work", retries=3)
        await queue.retry(retried, "again")
        out: dict[str, t.Any] = {"queued": await queue.count("queued")}
        while await worker.process():
            pass
        await finished.refresh()
        await retried.refresh()
        out["finished"] = (finished.status, finished.result, runs.count(finished.key))
        out["retried"] = (retried.status, retried.attempts, runs.count(retried.key))
        await worker.stop()
        return out

    on_saq, on_podq = await both(queues, scenario)
    # SAQ leaves a job finished by hand in the queue: a worker runs it and overwrites
    # its outcome (the retried one is queued once in both)
    assert on_saq == {"queued": 2, "finished": ("complete", "ran", 1),
                      "retried": ("complete", 1, 1)}
    # documented deviation: a job finished by hand leaves the queue and keeps its outcome
    assert on_podq == {"queued": 1, "finished": ("complete", "by hand", 0),
                       "retried": ("complete", 1, 1)}


async def test_a_stuck_job_swept_with_retries_left(
    queues: dict[types.ModuleType, t.Any],
) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> dict[str, t.Any]:
        _, block = blocking()  # never touches its job: its heartbeat lapses
        worker = lib.Worker(queue, functions=[block], timers={"sweep": 1})
        job = await queue.enqueue("block", heartbeat=1, timeout=0, retries=2)
        seen: list[str] = []  # the statuses its notifications carry
        listening = asyncio.create_task(
            queue.listen([job.key], lambda _key, status: seen.append(status) and False))
        started = asyncio.create_task(worker.start())
        deadline = time.monotonic() + 60
        while not (job.status == "aborted" and job.attempts == 2):
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.1)
            await job.refresh()
        await worker.stop()
        await asyncio.wait_for(started, 30)
        listening.cancel()
        aborted_at = seen.index("aborted")  # the first time a waiter sees it finished
        return {"in the end": (job.status, job.attempts, job.error),
                "queued again after aborted": "queued" in seen[aborted_at:]}

    on_saq, on_podq = await both(queues, scenario)
    # SAQ finishes the swept job as aborted, then queues it again for its retry: a
    # waiter (refresh(until_complete=), apply) can see it finished after one attempt
    assert on_saq == {"in the end": ("aborted", 2, "swept"), "queued again after aborted": True}
    # documented deviation: podq goes from aborting to queued; aborted is final
    assert on_podq == {**on_saq, "queued again after aborted": False}


async def test_the_aborted_count_of_a_workers_stats(
    queues: dict[types.ModuleType, t.Any],
) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> dict[str, int]:
        running, block = blocking()
        worker = lib.Worker(queue, functions=[block])
        job = await queue.enqueue("block", timeout=0)
        processing = asyncio.create_task(worker.process())
        await asyncio.wait_for(running.wait(), 30)
        await job.abort("stop it")
        await asyncio.wait_for(worker.abort(0), 30)
        await asyncio.wait_for(processing, 30)
        await job.refresh()
        assert job.status == "aborted"
        stats = dict((await worker.worker_info())["stats"])
        await worker.stop()
        return {k: stats[k] for k in ("complete", "failed", "retried", "aborted")}

    on_saq, on_podq = await both(queues, scenario)
    # SAQ finishes an aborted running job twice (Worker.abort, then process()), and
    # counts it twice
    assert on_saq == {"complete": 0, "failed": 0, "retried": 0, "aborted": 2}
    # documented deviation: one aborted job, counted once
    assert on_podq == {**on_saq, "aborted": 1}
