"""SAQ 0.26.4's Job and podq's side by side on one redis-server: Jobs built by hand
(by keyword and by position), enqueued, stored and loaded, pickled, round-tripped
through JSON, compared; job.queued across a retry. The documented differences
(docs/saq-compatibility.md: ready_since, the status as text) are asserted."""

from __future__ import annotations

import dataclasses
import importlib
import json
import pickle
import types
import typing as t

from engine_helpers import both, error

# what differs between two runs, not between SAQ and podq
VARYING = ("key", "queue", "queued", "ready_since", "attempts", "started", "touched",
           "completed", "worker_id", "error")


def comparable(d: dict[str, t.Any]) -> dict[str, t.Any]:
    return {k: (type(v).__name__ if k in VARYING else v) for k, v in d.items()}


async def test_jobs_built_stored_pickled_and_round_tripped(
    queues: dict[types.ModuleType, t.Any],
) -> None:
    async def scenario(lib: types.ModuleType, queue: t.Any) -> dict[str, t.Any]:
        job_module = importlib.import_module(f"{lib.__name__}.job")
        Job, Status = job_module.Job, job_module.Status
        out: dict[str, t.Any] = {}
        # by position, as SAQ's fields are declared (function ... scheduled)
        by_hand = Job("noop", {"a": 1}, queue, "by-hand", 3, 2, 2, 60, 1.5, True, 0)
        out["positional"] = comparable(by_hand.to_dict())
        await queue.enqueue(by_hand)
        out["enqueued"] = (by_hand.status, by_hand.queued > 0)
        stored = await queue.job("by-hand")
        out["stored"] = comparable(stored.to_dict())
        out["equal"] = (stored == by_hand, hash(stored) == hash(by_hand),
                        stored == Job("other", key="by-hand"), stored == Job("noop"))
        out["pickled"] = comparable(
            pickle.loads(pickle.dumps(dataclasses.replace(stored, queue=None))).to_dict())
        data = json.loads(json.dumps(stored.to_dict()))
        data.pop("queue")
        loaded = Job(**data, queue=queue)
        out["json"] = (loaded.to_dict() == stored.to_dict(), loaded.status is Status.QUEUED)
        # the status: equal to its text and its member in both; shown differently
        status = stored.to_dict()["status"]
        out["status"] = (status == "queued", status == Status.QUEUED, json.dumps(status),
                         type(status).__name__, str(stored.status), f"{stored.status}")
        # a field equal to its default but of another type
        typed = Job("noop", key="typed", timeout=10.0, retry_delay=5, retry_backoff=0.0)
        out["typed"] = typed.to_dict()
        await queue.enqueue(typed)
        stored = await queue.job("typed")
        out["typed stored"] = (stored.retry_backoff, stored.next_retry_delay())
        # queued is the first enqueue: a retry keeps it
        failing = await queue.enqueue("error", retries=2)
        enqueued_at = failing.queued
        worker = lib.Worker(queue, functions=[error])
        while await queue.count("queued"):  # the two jobs, and error's retry
            await worker.process()
        await failing.refresh()
        out["retried"] = (failing.status, failing.attempts, failing.queued == enqueued_at,
                          failing.duration("start") is not None)
        await worker.stop()
        return out

    on_saq, on_podq = await both(queues, scenario)
    assert on_saq["positional"] == {
        "function": "noop", "kwargs": {"a": 1}, "queue": "str", "key": "str",
        "timeout": 3, "heartbeat": 2, "retries": 2, "ttl": 60, "retry_delay": 1.5,
        "retry_backoff": True}
    assert on_saq["enqueued"] == ("queued", True)
    assert on_saq["status"] == (True, True, '"queued"', "Status", "Status.QUEUED",
                                "Status.QUEUED")
    assert on_saq["retried"] == ("failed", 2, True, True)
    # documented: podq's stored job has ready_since (its positions come after SAQ's
    # fields); the status is text in to_dict() and str() gives its value
    assert on_podq["stored"] == {**on_saq["stored"], "ready_since": "int"}
    assert on_podq["pickled"] == {**on_saq["pickled"], "ready_since": "int"}
    assert on_podq["status"] == (True, True, '"queued"', "str", "queued", "queued")
    # SAQ leaves out a field equal to its default whatever its type, so a backoff capped
    # at 0 s (retry_backoff=0.0) is stored as none (False: retry_delay); documented:
    # podq leaves out only a default of the default's type, and keeps the cap
    assert on_saq["typed"] == {"function": "noop", "key": "typed", "retry_delay": 5}
    assert on_podq["typed"] == {**on_saq["typed"], "timeout": 10.0, "retry_backoff": 0.0}
    assert on_saq["typed stored"] == (False, 5)
    assert on_podq["typed stored"] == (0.0, 0.0)
    same = ("positional", "enqueued", "equal", "json", "retried")
    assert {k: on_podq[k] for k in same} == {k: on_saq[k] for k in same}
