"""`podq operator` on a Redis too old for podq: one critical log line naming the version,
and exit 69; a Redis outage before it is retried, not fatal. The old Redis is the real
redis-server behind version_proxy.OldVersionProxy (INFO reports 6.2.14), brought up
on the port the operator was given while it could not reach it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from operator_harness import Harness, eventually

from podq.testing import RedisServer, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from version_proxy import OLD_VERSION, OldVersionProxy

RETRY = "change listener of queue default failed"


async def test_the_operator_rides_out_an_outage_and_stops_on_an_old_redis(
    harness: Harness, redis_server: RedisServer,
) -> None:
    port = free_port()
    harness.redis_url = f"redis://127.0.0.1:{port}/0"  # nothing listens there yet
    operator = harness.start_operator()  # healthy without Redis

    async def retried_twice() -> bool:
        return operator.log.read_text(errors="replace").count(RETRY) >= 2
    await eventually(retried_twice, within=60, what="the listener retrying twice")
    assert operator.alive  # an outage is not fatal

    async with OldVersionProxy(redis_server.port, listen_port=port) as proxy:
        try:
            code = await asyncio.to_thread(operator.popen.wait, 60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"operator did not exit:\n{operator.tail()}") from None
    log = operator.log.read_text(errors="replace")
    assert code == 69, operator.tail()
    line = next((line for line in log.splitlines() if "the operator stops" in line), "")
    assert "CRITICAL" in line and (
        f"Redis {OLD_VERSION} is too old: podq needs Redis 7.0 or later (sharded pub/sub:"
        " SPUBLISH, SSUBSCRIBE); the operator stops") in line, operator.tail()
    assert proxy.infos >= 1


async def test_sigterm_stops_the_operator_at_once_despite_the_halt_flag(
    harness: Harness,
) -> None:
    """The halt flag is kopf's stop flag; kopf waits for its own waiter on it among the
    "hung" tasks for a fixed 5 s after the cleanup. A SIGTERM (every rollout, every
    test) must not pay that: the cleanup sets the flag (the exit took 5.2 s, now 0.3)."""
    operator = harness.start_operator()  # healthy: kopf's root tasks run
    operator.popen.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(operator.popen.wait, 4.5)  # kopf's wait: 5 s
    except subprocess.TimeoutExpired:
        raise AssertionError(f"operator still running 4.5 s after SIGTERM:\n{operator.tail()}"
                             ) from None
    assert code == 0, operator.tail()
