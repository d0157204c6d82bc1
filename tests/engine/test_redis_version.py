"""podq needs Redis 7.0 or later (sharded pub/sub): Queue.connect() reads INFO server
once and refuses an older or unreadable version with RedisVersionError."""

from __future__ import annotations

import pytest
from redis import Redis
from redis.asyncio.cluster import RedisCluster

from podq import Queue
from podq.errors import RedisVersionError
from podq.queue import list_queues
from podq.queue.redis import MIN_REDIS_VERSION, read_redis_version, redis_version
from podq.testing_cluster import LoopbackCluster


@pytest.mark.parametrize(("reported", "version"), [
    ("7.0.0", (7, 0, 0)), ("7.0.15", (7, 0, 15)), ("7.2.4", (7, 2, 4)), ("8.0.1", (8, 0, 1)),
    ("10.0.0", (10, 0, 0)), ("7.0", (7, 0)), ("7.4.0-rc1", (7, 4, 0)),
])
def test_versions_from_7_0_are_accepted(reported: str, version: tuple[int, ...]) -> None:
    assert redis_version(reported) == version


@pytest.mark.parametrize("reported", ["6.2.14", "6.9.242", "5.0.7", "2.8.0", "0.0.0"])
def test_older_versions_are_refused_naming_the_version_and_the_minimum(reported: str) -> None:
    with pytest.raises(RedisVersionError) as refused:
        redis_version(reported)
    assert str(refused.value).startswith(f"Redis {reported} is too old: podq needs Redis 7.0 ")


@pytest.mark.parametrize("reported", ["", "seven", "7", "v7.2.4", ".7.0", None, 7, b"7.2.4"])
def test_an_unreadable_version_is_refused_naming_what_was_reported(reported: object) -> None:
    with pytest.raises(RedisVersionError) as refused:
        redis_version(reported)
    assert str(refused.value) == (f"cannot read the Redis version {reported!r} (INFO server"
                                  " redis_version); podq needs Redis 7.0 or later")


@pytest.mark.parametrize(("reported", "version"), [
    ("7.0.0-rc1", (7, 0, 0)), ("8.2.0-m01", (8, 2, 0)), ("6.2.14", (6, 2, 14))])
def test_any_readable_version_is_read_whatever_follows_its_numbers(
    reported: str, version: tuple[int, ...]
) -> None:
    assert read_redis_version(reported) == version


async def test_queue_version_is_the_servers(redis_url: str) -> None:
    """Queue.version() (SAQ's) reads INFO with the same reader: a pre-release's version
    does not raise, as SAQ's int() of each dotted part does."""
    sync = Redis.from_url(redis_url)
    queue = Queue.from_url(redis_url, name="versioned")
    try:
        assert await queue.version() == read_redis_version(sync.info("server")["redis_version"])
    finally:
        await queue.disconnect()
        sync.close()


def info_calls(client: Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_info", {}).get("calls", 0))


async def test_connect_accepts_the_real_server_with_one_info(redis_url: str) -> None:
    sync = Redis.from_url(redis_url)
    queue = Queue.from_url(redis_url, name="versioned")
    try:
        server = sync.info("server")["redis_version"]
        assert redis_version(server) >= MIN_REDIS_VERSION
        before = info_calls(sync)
        await queue.connect()
        after_connect = info_calls(sync)
        for i in range(5):
            await queue.enqueue("f", key=f"k{i}")
        await queue.job("k0")
        # INFO server of connect (and this test's INFO commandstats); none per operation
        assert (after_connect - before, info_calls(sync) - after_connect) == (2, 1)
        assert await list_queues(queue.redis) == ["versioned"]
    finally:
        await queue.disconnect()
        sync.close()


async def test_connect_accepts_the_nodes_of_a_real_cluster(cluster: LoopbackCluster) -> None:
    """Each queue asks INFO of its own slot's primary: by a cluster URL, and through a
    redis-py RedisCluster client given to Queue."""
    spread = cluster.spread(3, "versioned")
    seed = min(cluster.procs)
    client = RedisCluster(host="127.0.0.1", port=seed)
    queues = [Queue.from_url(cluster.url, name=name) for name in spread]
    queues.append(Queue(client, name=next(iter(spread))))
    try:
        before = {port: info_calls(cluster.client(port)) for port in spread.values()}
        for queue in queues:
            await queue.connect()
        calls = {port: info_calls(cluster.client(port)) - n for port, n in before.items()}
        first = next(iter(spread.values()))
        # one INFO a connect (two on the first shard: two queues), one each of this test's
        assert calls == {port: 3 if port == first else 2 for port in spread.values()}
        assert set(spread) <= set(await list_queues(queues[0].redis))
    finally:
        for queue in queues:
            await queue.disconnect()
        await client.aclose()
