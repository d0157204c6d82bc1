"""Shared fixtures: a real redis-server per test session, a clean database per test; a
real Redis Cluster (3 primaries, 3 replicas on loopback) per test module that asks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from podq.testing import RedisServer
from podq.testing_cluster import LoopbackCluster


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    """The URL of a flushed Redis database; each test starts from empty."""
    client = aioredis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server.url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    """A Redis Cluster for one test module; `cluster.url` names it (redis+cluster://)."""
    with LoopbackCluster(Path(tmp_path_factory.mktemp("cluster"))) as nodes:
        yield nodes
