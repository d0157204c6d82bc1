"""The connections of a queue: a bounded pool whose callers wait for a free connection
instead of failing (redis-py's BlockingConnectionPool, with no wait limit).

redis-py's default pool raises `MaxConnectionsError` once more commands are in flight
than it has connections (100 by default in redis-py 8): 1,000 gathered enqueues on one
queue would fail. A podq queue never fails because it is busy: its callers queue up
for a connection. The pool starts at DEFAULT_MAX_CONNECTIONS, and a Worker grows it to
its concurrency plus a few (each running job may write back at once), unless the
size was chosen (`Queue.from_url(url, max_connections=N)`).
"""

from __future__ import annotations

import typing as t

from redis import asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from podq.queue import cluster
from podq.queue.keys import QUEUES_KEY

DEFAULT_MAX_CONNECTIONS = 50
# connections a Worker adds to its concurrency: take, liveness, aborts, sweep, metrics
WORKER_RESERVE = 5


def retry_policy() -> Retry:
    """Commands are retried on a dropped connection (3 times, backoff up to 1 s), so a
    Redis restart costs a retry rather than an error."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), 3)


def waiting_pool(
    url: str, max_connections: int | None = None, slot_key: str = QUEUES_KEY, **kwargs: t.Any
) -> BlockingConnectionPool:
    """A pool on the Redis at url whose callers wait (without limit) for a connection.

    On a cluster (redis+cluster://, podq.queue.cluster) its connections go to the
    primary that owns slot_key's slot (a queue passes one of its keys)."""
    if cluster.is_cluster_url(url):
        url, extra = cluster.pool_kwargs(url, slot_key)
        kwargs = {**extra, **kwargs}
    kwargs.setdefault("retry", retry_policy())
    return BlockingConnectionPool.from_url(
        url, max_connections=max_connections or DEFAULT_MAX_CONNECTIONS, timeout=None, **kwargs
    )


def waiting_client(redis: t.Any, slot_key: str = QUEUES_KEY) -> tuple[t.Any, bool]:
    """(a client whose callers wait for a connection, whether it is a new one).

    A client on a BlockingConnectionPool is itself. A client on a plain pool, which
    raises when it runs out, gets a twin on a waiting pool with the same connection
    settings and size; a redis-py RedisCluster client (no pub/sub, no multi-key scripts
    across its node pools) gets a twin on a waiting pool to the primary owning slot_key's
    slot on that cluster, as from a redis+cluster:// URL. The queue owns a twin and
    closes it; the caller keeps and closes the client it made."""
    if cluster.is_cluster_client(redis):
        twin = BlockingConnectionPool(max_connections=DEFAULT_MAX_CONNECTIONS, timeout=None,
                                      **cluster.client_pool_kwargs(redis, slot_key))
        return aioredis.Redis(connection_pool=twin), True
    pool = getattr(redis, "connection_pool", None)
    if not isinstance(pool, ConnectionPool) or isinstance(pool, BlockingConnectionPool):
        return redis, False
    twin = BlockingConnectionPool(
        connection_class=pool.connection_class,
        max_connections=pool.max_connections,
        timeout=None,
        **pool.connection_kwargs,
    )
    return aioredis.Redis(connection_pool=twin), True


def max_connections(redis: t.Any) -> int | None:
    """The size of the client's pool (None for a cluster client)."""
    pool = getattr(redis, "connection_pool", None)
    return pool.max_connections if isinstance(pool, ConnectionPool) else None


def grow(redis: t.Any, connections: int) -> None:
    """Let the client's waiting pool open up to `connections` (never shrinks it)."""
    pool = getattr(redis, "connection_pool", None)
    if isinstance(pool, BlockingConnectionPool) and pool.max_connections < connections:
        pool.max_connections = connections
