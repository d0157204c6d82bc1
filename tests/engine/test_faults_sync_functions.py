"""Engine faults on a real redis-server: sync functions aborted, timed out or drained while
their thread runs. Each test asserts no outcome is written back before the thread ended.

docs/reliability.md lists the guarantee each test proves.
"""

from __future__ import annotations

import asyncio
import threading
import time

from engine_helpers import Workers, wait_for

from podq import Job, Queue, Status, Worker

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
