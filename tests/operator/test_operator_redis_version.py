"""The operator's change listeners check the server's version each time they subscribe:
a Redis too old for podq halts the operator (podq.operator.queues.Halt), an outage is
retried. The old Redis is the real redis-server behind version_proxy.OldVersionProxy
(INFO reports 6.2.14); tests/kube/test_operator_old_redis.py runs `podq operator`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from podq import Queue, Status
from podq.errors import RedisVersionError
from podq.operator.queues import Halt, QueuePool
from podq.testing import RedisServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_helpers import wait_for
from version_proxy import OLD_VERSION, OldVersionProxy


async def test_a_listener_on_the_real_server_forwards_changes_and_does_not_halt(
    redis_url: str,
) -> None:
    pool, seen, sent = QueuePool(redis_url), [], []
    pool.callbacks.append(lambda name, key, status: seen.append((name, key, status)))
    queue = Queue.from_url(redis_url, name="default")

    async def a_change_arrived() -> bool:  # one job enqueued a try, until one is seen
        if not seen:
            sent.append((await queue.enqueue("noop", key=f"k{len(sent)}")).key)
        return bool(seen)
    try:
        pool.keep("default")
        await wait_for(a_change_arrived, 30, 0.1)
        name, key, status = seen[0]
        assert name == "default" and key in sent and status == Status.QUEUED.value
        assert (pool.halt.error, pool.halt.flag.is_set()) == (None, False)
    finally:
        await pool.close()
        await queue.disconnect()


async def test_a_listener_halts_on_an_old_redis(redis_server: RedisServer) -> None:
    halt = Halt()
    async with OldVersionProxy(redis_server.port) as proxy:
        pool = QueuePool(proxy.url, halt=halt)
        try:
            pool.keep("default")
            await asyncio.wait_for(halt.flag.wait(), 30)
        finally:
            await pool.close()
    assert isinstance(halt.error, RedisVersionError)
    assert str(halt.error).startswith(f"Redis {OLD_VERSION} is too old: podq needs Redis 7.0")
    assert proxy.infos == 1  # checked once; the listener ended instead of retrying
