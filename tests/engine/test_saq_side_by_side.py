"""The same scenario run on SAQ 0.26.4 and on podq, against one redis-server, with the
outcomes compared. Where podq fixes a SAQ defect on purpose, the documented difference
(docs/saq-compatibility.md) is asserted instead."""

from __future__ import annotations

import types
import typing as t
from collections.abc import AsyncIterator

import pytest
import saq

import podq


async def noop(ctx: dict[str, t.Any]) -> int:
    return 1


@pytest.fixture
async def queues(redis_url: str) -> AsyncIterator[dict[types.ModuleType, t.Any]]:
    """A queue named "test" of each library on the same Redis (their keys do not meet)."""
    made = {lib: lib.Queue.from_url(redis_url, name="test") for lib in (saq, podq)}
    for queue in made.values():
        await queue.connect()
    yield made
    for queue in made.values():
        await queue.disconnect()


async def both(
    queues: dict[types.ModuleType, t.Any],
    scenario: t.Callable[[types.ModuleType, t.Any], t.Awaitable[t.Any]],
) -> tuple[t.Any, t.Any]:
    return await scenario(saq, queues[saq]), await scenario(podq, queues[podq])


async def test_worker_accepts_poll_interval_and_burst_requires_a_dequeue_timeout(
    queues: dict[types.ModuleType, t.Any],
) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> tuple[str, ...]:
        outcome = []
        for kwargs in ({"poll_interval": 0.5}, {"burst": True},
                       {"burst": True, "dequeue_timeout": 0},
                       {"burst": True, "dequeue_timeout": 1}):
            try:
                lib.Worker(queue, functions=[noop], **kwargs)
                outcome.append("ok")
            except ValueError as e:
                assert "dequeue_timeout" in str(e)
                outcome.append("ValueError")
        return tuple(outcome)

    on_saq, on_podq = await both(queues, scenario)
    assert on_saq == on_podq == ("ok", "ValueError", "ValueError", "ok")


async def test_worker_info_and_the_worker_record_in_queue_info(
    queues: dict[types.ModuleType, t.Any],
) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> dict[str, t.Any]:
        worker = lib.Worker(queue, functions=[noop], metadata={"team": "a"})
        returned = await worker.worker_info()
        record = (await queue.info())["workers"][worker.id]
        for info in (returned, record):
            assert info["stats"]["uptime"] >= 0
        return {
            "returned": {k: returned[k] for k in ("queue_key", "metadata")},
            "record": {k: record[k] for k in ("queue_key", "metadata")},
            "stats": sorted(record["stats"]),
            "counts": {k: v for k, v in record["stats"].items() if k != "uptime"},
        }

    on_saq, on_podq = await both(queues, scenario)
    assert on_saq == on_podq
    assert on_podq["record"] == {"queue_key": "test", "metadata": {"team": "a"}}
    assert on_podq["stats"] == ["aborted", "complete", "failed", "retried", "uptime"]


async def test_worker_schedule_enqueues_cron_jobs(queues: dict[types.ModuleType, t.Any]) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> dict[str, t.Any]:
        # once a year: the job is scheduled, not due, whenever the test runs
        worker = lib.Worker(queue, functions=[noop],
                            cron_jobs=[lib.CronJob(noop, cron="0 0 1 1 *")])
        await worker.schedule()
        await worker.schedule()  # unique: still one
        job = await queue.job("cron:noop")
        return {"incomplete": await queue.count("incomplete"),
                "queued": await queue.count("queued"),
                "status": job.status, "function": job.function,
                "scheduled_in_future": job.scheduled > 0}

    on_saq, on_podq = await both(queues, scenario)
    assert on_saq == on_podq == {"incomplete": 1, "queued": 0, "status": "queued",
                                 "function": "noop", "scheduled_in_future": True}
