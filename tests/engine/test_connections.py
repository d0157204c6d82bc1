"""A queue never refuses a busy caller: callers beyond its pool wait for a connection,
on a real redis-server (issue 11, part 1)."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import typing as t
import warnings

import pytest
import redis.asyncio as aioredis
import saq
from engine_helpers import Workers, wait_for

import podq
from podq import Queue
from podq.queue.pool import DEFAULT_MAX_CONNECTIONS, WORKER_RESERVE


async def noop(ctx: dict[str, t.Any], **kwargs: t.Any) -> int:
    return 1


async def connected_clients(url: str) -> int:
    """Connections the redis-server has open now (one of them this probe's)."""
    probe = aioredis.from_url(url)
    try:
        return int((await probe.info("clients"))["connected_clients"])
    finally:
        await probe.aclose()


async def test_5000_gathered_enqueues_wait_for_connections_and_a_500_worker_runs_them(
    redis_url: str, workers: Workers
) -> None:
    queue = Queue.from_url(redis_url, name="burst")
    await queue.connect()
    try:
        baseline = await connected_clients(redis_url)
        jobs = await asyncio.gather(*(queue.enqueue("noop", i=i) for i in range(5000)))
        assert all(job is not None for job in jobs)
        assert await queue.count("queued") == 5000
        # the callers waited for the pool's connections rather than opening more
        assert await connected_clients(redis_url) - baseline <= DEFAULT_MAX_CONNECTIONS

        await workers.start(queue, [noop], concurrency=500)
        assert queue.redis.connection_pool.max_connections == 500 + WORKER_RESERVE

        async def all_complete() -> bool:
            return (await queue.stats())["complete"] == 5000

        await wait_for(all_complete, 120, step=0.1)
        assert await queue.count("incomplete") == 0
    finally:
        await queue.disconnect()


async def test_saq_benchmark_shape_1000_gathered_enqueues_pass_on_both(redis_url: str) -> None:
    """SAQ's own benchmark enqueues 1,000 jobs with asyncio.gather on one queue."""
    for lib in (saq, podq):
        queue = lib.Queue.from_url(redis_url, name=f"bench-{lib.__name__}")
        await queue.connect()
        try:
            jobs = await asyncio.gather(*(queue.enqueue("noop", i=i) for i in range(1000)))
            assert all(job is not None for job in jobs), lib.__name__
            assert await queue.count("queued") == 1000, lib.__name__
        finally:
            await queue.disconnect()


async def test_a_chosen_pool_size_bounds_the_connections_and_a_worker_keeps_it(
    redis_url: str, workers: Workers
) -> None:
    queue = Queue.from_url(redis_url, name="small", max_connections=3)
    await queue.connect()
    try:
        baseline = await connected_clients(redis_url)
        await asyncio.gather(*(queue.enqueue("noop", i=i) for i in range(300)))
        assert await connected_clients(redis_url) - baseline <= 3
        await workers.start(queue, [noop], concurrency=50)
        assert queue.redis.connection_pool.max_connections == 3

        async def all_complete() -> bool:
            return (await queue.stats())["complete"] == 300

        await wait_for(all_complete, 60, step=0.1)
    finally:
        await queue.disconnect()


async def test_a_client_on_a_plain_pool_gets_a_waiting_twin_and_keeps_its_own(
    redis_url: str,
) -> None:
    client = aioredis.from_url(redis_url, max_connections=5)
    queue = Queue(client, name="given")
    try:
        jobs = await asyncio.gather(*(queue.enqueue("noop", i=i) for i in range(500)))
        assert all(job is not None for job in jobs)
        assert queue.redis is not client
        assert queue.redis.connection_pool.max_connections == 5
        await queue.disconnect()
        # the caller's client is still the caller's to use and close
        assert await client.zcard(queue.keys.queued) == 500
    finally:
        await client.aclose()


async def test_a_queue_dropped_without_disconnect_leaves_no_pending_task(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its notification readers are cancelled when it is collected and end cleanly:
    no "Task was destroyed but it is pending", no coroutine ignoring GeneratorExit."""
    unraisable: list[t.Any] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append

    async def use_and_drop() -> None:
        queue = Queue.from_url(redis_url, name="dropped")
        await queue.enqueue("noop")
        async with queue.subscribe():
            pass  # the changes reader keeps running after the subscription
        await queue.subscribe_wake(lambda key, status: None).start()
        assert len(readers()) == 2

    def readers() -> list[asyncio.Task[t.Any]]:
        return [task for task in asyncio.all_tasks()
                if task.get_name().startswith("podq-notify-podq:{dropped}")]

    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"), warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... never awaited"
            await use_and_drop()
            gc.collect()
            await wait_for(lambda: not readers(), 30)
            gc.collect()
            await asyncio.sleep(0)
        assert "Task was destroyed" not in caplog.text
        assert unraisable == []
    finally:
        sys.unraisablehook = previous_hook
