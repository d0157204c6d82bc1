"""Redis Cluster: a queue talks to the primary that owns its slot, with a plain client.

Every key of a queue shares the hash tag `{name}` (podq.queue.keys), so the whole queue
lives in one slot: its Lua scripts, pipelines, blocking calls and pub/sub work on that
slot's primary exactly as on a lone Redis. A cluster is named by a URL listing one or
more of its nodes: `redis+cluster://[user:pass@]host:port[,host:port...]/0`
(`rediss+cluster://` with TLS). `Queue.from_url` builds a pool whose connections
connect to the current owner of the queue's slot (asked of the known nodes with
CLUSTER SLOTS) and look it up again:

- on MOVED (the slot's primary changed, e.g. a CLUSTER FAILOVER: the old primary, now
  a replica, redirects): the redirect names the new owner; the command is retried there;
- on a lost connection or CLUSTERDOWN (the primary died and the cluster is electing a
  replica): retried with backoff for about 15 s, resolving anew each time;
- on ASK or TRYAGAIN (the slot is being migrated by resharding and the command met a
  key already moved): retried with the same backoff, not sent to the importing node
  (ASKING holds for one command: a pipeline of them, or a retry, could act there on
  keys not moved yet); commands on keys not yet moved go on meanwhile, the others run
  on the new owner once the slot has moved. Liveness records may expire meanwhile:
  `held_back_at` tells a worker to wait before sweeping (podq.worker_upkeep).

Notifications use sharded pub/sub (SPUBLISH, SSUBSCRIBE: podq.queue.notify): a queue's
channels carry its hash tag, so their messages stay within the shard that owns its slot
(a plain PUBLISH crosses the cluster bus to every node). Redis ends such a subscription
when the slot leaves the node (`sunsubscribe`); the reader then subscribes again on
the owner that node names (`slot_left`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import typing as t
from urllib.parse import urlsplit, urlunsplit

from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
Address = tuple[str, int]
# a RedisCluster client's settings a queue's connections take over (and its ssl_*)
_COPIED = ("username", "password", "credential_provider", "client_name", "decode_responses",
           "encoding", "encoding_errors", "health_check_interval", "socket_timeout",
           "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
           "socket_read_size")
_PROBE_OWN = ("connection_class", "socket_timeout", "socket_connect_timeout")


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in SCHEMES


def split_url(url: str) -> tuple[str, list[Address]]:
    """(the URL of the first node as a plain redis:// or rediss:// URL, every node)."""
    parts = urlsplit(url)
    auth, _, hosts = parts.netloc.rpartition("@")
    seeds: list[Address] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"cluster node {item!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    netloc = (auth + "@" if auth else "") + hosts.split(",")[0].strip()
    plain = urlunsplit((SCHEMES[parts.scheme.lower()], netloc, parts.path, parts.query, ""))
    return plain, seeds


def retry_policy() -> Retry:
    """Commands are retried on a lost connection, a redirect, a cluster that is electing
    a new primary or a slot being migrated (about 15 s in all), resolving the slot's
    owner each time."""
    return Retry(
        ExponentialBackoff(cap=1.0, base=0.05),
        20,
        supported_errors=(
            RedisConnectionError, RedisTimeoutError, MovedError, ClusterDownError,
            TryAgainError, AskError,
        ),
    )


class SlotOwner:
    """The primary that owns one slot, as last learned from the cluster."""

    def __init__(self, seeds: list[Address], slot: int, probe: dict[str, t.Any]) -> None:
        self.known: list[Address] = list(seeds)
        self.slot = slot
        self.probe = probe  # connection settings (auth, TLS) for CLUSTER SLOTS
        self.address: Address | None = None
        self.scripts: list[str] = []  # Lua sources loaded on every new connection
        # time.monotonic() when a command last waited on the cluster (held_back_at)
        self.held_back_at = float("-inf")
        self._lock = asyncio.Lock()

    async def current(self) -> Address:
        if self.address is None:
            async with self._lock:
                if self.address is None:
                    self.address = await self._resolve()
        return self.address

    def forget(self, address: Address) -> None:
        """The owner at address could not be reached: resolve anew next time."""
        self.held_back_at = time.monotonic()
        if self.address == address:
            self.address = None

    def left(self, address: Address) -> None:
        """The node at address stopped serving the slot (it ended a subscription to a
        shard channel of it): resolve anew, asking that node first (it knows the new
        owner; another node may not have learned of the change yet)."""
        self.held_back_at = time.monotonic()
        self.address = None
        if address in self.known:
            self.known.remove(address)
        self.known.insert(0, address)

    def moved(self, host: str, port: int) -> None:
        self.held_back_at = time.monotonic()
        self.address = (host, int(port))
        if self.address not in self.known:
            self.known.append(self.address)

    async def _resolve(self) -> Address:
        errors = []
        for host, port in list(self.known):
            conn_class = self.probe.get("connection_class", Connection)
            kwargs = {k: v for k, v in self.probe.items() if k not in _PROBE_OWN}
            conn = conn_class(host=host, port=port, socket_connect_timeout=1.0,
                              socket_timeout=2.0, **kwargs)
            try:
                await conn.connect()
                await conn.send_command("CLUSTER", "SLOTS")
                reply = await conn.read_response()
            except Exception as e:  # a dead node: ask the next one
                errors.append(f"{host}:{port}: {e}")
                continue
            finally:
                await conn.disconnect()
            owner = self._learn(reply, host)
            if owner is not None:
                return owner
            errors.append(f"{host}:{port}: no primary serves slot {self.slot}")
        raise RedisConnectionError("no cluster node named the owner of slot "
                                   f"{self.slot}: {'; '.join(errors)}")

    def _learn(self, reply: t.Any, asked: str) -> Address | None:
        owner = None
        for start, end, primary, *replicas in reply:
            for node in (primary, *replicas):
                host = node[0].decode() if isinstance(node[0], bytes) else node[0]
                address = (host or asked, int(node[1]))
                if address not in self.known:
                    self.known.append(address)
            if int(start) <= self.slot <= int(end):
                host = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
                owner = (host or asked, int(primary[1]))
        return owner


class SlotMovedError(RedisConnectionError):
    """The slot moved (MOVED): the connection is dropped and the command, or the whole
    pipeline, retried on the new owner (nothing of the queue ran on the old one)."""


class SlotMigratingError(RedisConnectionError):
    """The slot is being migrated (resharding) and the command met a key already moved
    (ASK) or keys on both sides (TRYAGAIN): nothing of it ran. The connection is dropped
    and the command, or the whole pipeline, retried with backoff: commands on keys not
    yet moved go on at the old owner, the others once the slot has moved (MOVED)."""


class ClusterUnavailableError(RedisConnectionError):
    """The cluster said CLUSTERDOWN: a slot has no live primary (a primary failed and no
    replica has taken over yet; with full coverage required, every node refuses every
    command meanwhile). Nothing ran. Retried like a lost connection, and past the retry
    policy's budget the callers' handling of an unreachable Redis applies: a worker's
    write-back waits on (a ClusterDownError escaped it: its job task crashed, the job
    was left running in Redis until swept, then aborting with no run to end it)."""


class ForeignSlotError(ResponseError):
    """A command named a key outside the queue's slot: a queue's client serves only the
    keys of its own hash tag. Not retried; the queue's idea of its owner is unchanged."""


class _SlotOwnerConnection:
    """Connects to the owner of its SlotOwner's slot; learns from MOVED."""

    owner: SlotOwner

    async def _connect(self) -> None:
        address = await self.owner.current()
        self.host, self.port = address  # type: ignore[misc]
        try:
            await super()._connect()  # type: ignore[misc]
        except (TimeoutError, OSError):
            self.owner.forget(address)
            raise

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        await super().on_connect_check_health(check_health)  # type: ignore[misc]
        # a new owner may never have seen the queue's scripts: a pipeline retried
        # there would fail with NOSCRIPT
        for source in self.owner.scripts:
            await self.send_command("SCRIPT", "LOAD", source, check_health=False)  # type: ignore[attr-defined]
            await self.read_response()

    async def read_response(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except MovedError as e:
            if int(e.slot_id) != self.owner.slot:
                raise ForeignSlotError(
                    f"MOVED {e}: this client serves only the keys of slot {self.owner.slot} (its"
                    " queue's hash tag); for other keys on a cluster use"
                    " podq.queue.cluster.client_for(redis, key)") from e
            self.owner.moved(e.host, e.port)
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise SlotMovedError(f"slot {e.slot_id} moved to {e.host}:{e.port}") from e
        except (AskError, TryAgainError) as e:
            # the slot is migrating and this command meets a key that moved: it did not
            # run; it is retried (the pipeline with it) until the slot has moved
            self.owner.held_back_at = time.monotonic()
            raise SlotMigratingError(f"slot {self.owner.slot} is migrating ({e})") from e
        except RedisConnectionError:
            self.owner.forget((self.host, self.port))  # type: ignore[attr-defined]
            raise
        except ClusterDownError as e:
            self.owner.forget((self.host, self.port))  # type: ignore[attr-defined]
            raise ClusterUnavailableError(f"the cluster is down ({e})") from e


def _owner(redis: t.Any) -> SlotOwner | None:
    pool = getattr(redis, "connection_pool", None)
    owner = pool.connection_kwargs.get("owner") if pool is not None else None
    return owner if isinstance(owner, SlotOwner) else None


def server_of(redis: t.Any) -> t.Hashable:
    """Which server a client's commands reach, as far as known: on a cluster its slot
    owner's address (the owner itself until it is resolved); None off a cluster, where
    the clients of one URL reach one server."""
    owner = _owner(redis)
    return None if owner is None else owner.address or owner


def preload(redis: aioredis.Redis, sources: list[str]) -> None:
    """Load these Lua scripts on every connection to the slot's owner (no-op off a
    cluster)."""
    owner = _owner(redis)
    if owner is not None:
        owner.scripts = list(dict.fromkeys([*owner.scripts, *sources]))


def slot_left(redis: t.Any, host: str, port: int) -> None:
    """The node at host:port ended a subscription to a shard channel of this client's
    slot (Redis's `sunsubscribe` when the slot leaves a node: failover, resharding):
    the next connection goes to the slot's owner, as that node names it (no-op off a
    cluster). A subscription left on a demoted primary could miss messages until the
    new primary counts it among its replicas."""
    owner = _owner(redis)
    if owner is not None:
        owner.left((host, int(port)))


def held_back_at(redis: t.Any) -> float:
    """time.monotonic() when a command of this client last waited on the cluster: a
    failover, a lost node, its slot being migrated (-inf if never, or off a cluster).
    Redis-py's retries hide such waits from the caller, but liveness records may have
    expired meanwhile (podq.worker_upkeep waits before sweeping)."""
    owner = _owner(redis)
    return owner.held_back_at if owner is not None else float("-inf")


class SlotOwnerConnection(_SlotOwnerConnection, Connection):
    def __init__(self, *, owner: SlotOwner, **kwargs: t.Any) -> None:
        self.owner = owner
        super().__init__(**kwargs)


class SlotOwnerSSLConnection(_SlotOwnerConnection, SSLConnection):
    def __init__(self, *, owner: SlotOwner, **kwargs: t.Any) -> None:
        self.owner = owner
        super().__init__(**kwargs)


def pool_kwargs(url: str, slot_key: str) -> tuple[str, dict[str, t.Any]]:
    """(a plain URL, the extra settings of a pool) whose connections go to the primary
    that owns slot_key's slot on the cluster at url (redis+cluster://...)."""
    plain, seeds = split_url(url)
    probe = {k: v for k, v in parse_url(plain).items() if k not in ("host", "port")}
    return plain, _owner_kwargs(seeds, slot_key, probe, plain.startswith("rediss:"))


def _owner_kwargs(
    seeds: list[Address], slot_key: str, probe: dict[str, t.Any], tls: bool
) -> dict[str, t.Any]:
    if tls:
        probe = {**probe, "connection_class": SSLConnection}
    return {
        "connection_class": SlotOwnerSSLConnection if tls else SlotOwnerConnection,
        "owner": SlotOwner(seeds, key_slot(slot_key.encode()), probe),
        "retry": retry_policy(),
    }


def is_cluster_client(redis: t.Any) -> bool:
    return isinstance(redis, RedisCluster)


def client_pool_kwargs(redis: RedisCluster, slot_key: str) -> dict[str, t.Any]:
    """The settings of a pool whose connections go to the primary that owns slot_key's
    slot, on the cluster a redis-py RedisCluster client talks to: its nodes are the
    seeds; its credentials, TLS, timeouts and decoding are kept."""
    nodes = redis.nodes_manager
    seeds = list(dict.fromkeys(
        (n.host, int(n.port))
        for n in [*nodes.nodes_cache.values(), *nodes.startup_nodes.values()]))
    given = redis.connection_kwargs
    settings = {k: v for k, v in given.items() if k in _COPIED or k.startswith("ssl_")}
    tls = issubclass(given.get("connection_class", Connection), SSLConnection)
    host, port = seeds[0]
    return {"host": host, "port": port, **settings,
            **_owner_kwargs(seeds, slot_key, dict(settings), tls)}


@contextlib.asynccontextmanager
async def client_for(redis: aioredis.Redis, key: str) -> AsyncIterator[aioredis.Redis]:
    """redis itself; on a cluster, a client for the owner of key's slot (e.g. the queue
    registry, which lives outside every queue's slot), closed on exit."""
    owner = _owner(redis)
    if owner is None or owner.slot == key_slot(key.encode()):
        yield redis
        return
    pool = redis.connection_pool
    kwargs = {**pool.connection_kwargs,
              "owner": SlotOwner(owner.known, key_slot(key.encode()), owner.probe)}
    other = aioredis.Redis(connection_pool=ConnectionPool(
        connection_class=pool.connection_class, max_connections=4, **kwargs))
    try:
        yield other
    finally:
        await other.aclose(close_connection_pool=True)
