"""Every `podq` command that talks to Redis refuses a Redis older than 7.0 before it
does anything, with one message naming the version, exit 69; `podq web` too. The old
Redis is the real redis-server behind version_proxy.OldVersionProxy (INFO reports
6.2.14, all else is the server's own), so without the check the commands would run."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from engine_helpers import HERE, PODQ
from redis import asyncio as aioredis
from version_proxy import OLD_VERSION, OldVersionProxy

from podq.cli import main as cli_main
from podq.cli_common import EXIT_REDIS_TOO_OLD
from podq.testing import RedisServer, free_port

SETTINGS = "podq_test_settings.settings"
TOO_OLD = (f"Redis {OLD_VERSION} is too old: podq needs Redis 7.0 or later (sharded pub/sub:"
           " SPUBLISH, SSUBSCRIBE)")

# each command that reaches Redis, run in-process (main()); worker, worker-health and
# web below, as processes
COMMANDS = [
    ["info"], ["info", "--queue", "q", "--json"], ["jobs", "--queue", "q"],
    ["status", "k1", "--queue", "q"], ["enqueue", "add", "--queue", "q", "--key", "k2"],
    ["drain", "q", "--timeout", "1"], ["drain", "q", "--resume"], ["resume", "q"],
    ["abort", "k1", "--queue", "q"], ["retry", "k1", "--queue", "q"],
]


def podq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODQ, *args], cwd=HERE, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PODQ_REDIS_URL": ""})


async def keys_and_commands(redis_url: str) -> tuple[list[bytes], dict[str, int]]:
    """The keys in the real Redis, and the commands it ran since CONFIG RESETSTAT but
    INFO and the connections' own handshake (HELLO, CLIENT SETINFO)."""
    client = aioredis.from_url(redis_url)
    try:
        stats = await client.info("commandstats")
        ran = {k: v["calls"] for k, v in stats.items() if k not in (
            "cmdstat_info", "cmdstat_hello", "cmdstat_config|resetstat")
            and not k.startswith("cmdstat_client|")}
        return await client.keys("*"), ran
    finally:
        await client.aclose()


async def test_every_command_refuses_an_old_redis_before_doing_anything(
    redis_url: str, redis_server: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    client = aioredis.from_url(redis_url)
    await client.config_resetstat()
    await client.aclose()
    async with OldVersionProxy(redis_server.port) as proxy:
        for command in COMMANDS:
            code = await asyncio.to_thread(cli_main, [*command, "--redis-url", proxy.url])
            err = capsys.readouterr().err
            assert (code, err) == (EXIT_REDIS_TOO_OLD, f"podq: error: {TOO_OLD}\n"), command
        for command in (["worker", SETTINGS], ["worker-health", SETTINGS]):
            r = await asyncio.to_thread(podq, *command, "--redis-url", proxy.url)
            assert (r.returncode, r.stderr) == (69, f"podq: error: {TOO_OLD}\n"), command
        assert proxy.infos == len(COMMANDS) + 2  # one INFO each, read through the proxy
    # nothing was written, read or run but INFO: no queue registered, no job, no worker
    assert await keys_and_commands(redis_url) == ([], {})


async def test_the_real_server_passes_the_same_check(redis_url: str) -> None:
    """The same commands on the real redis-server (7.0 or later) get past the check."""
    for command in (["info"], ["enqueue", "add", "--queue", "q", "--key", "k1"],
                    ["status", "k1", "--queue", "q"], ["abort", "k1", "--queue", "q"]):
        assert await asyncio.to_thread(cli_main, [*command, "--redis-url", redis_url]) == 0


async def test_podq_web_refuses_an_old_redis(redis_server: RedisServer) -> None:
    async with OldVersionProxy(redis_server.port) as proxy:
        r = await asyncio.to_thread(podq, "web", "--redis-url", proxy.url,
                                    "--port", str(free_port()))
    assert r.returncode == 69, r.stderr
    assert r.stderr.endswith(f"podq web: {TOO_OLD}\n"), r.stderr

