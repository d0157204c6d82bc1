"""Notifications on a real Redis Cluster (three primaries, a replica each): sharded
pub/sub on the shard that owns each queue's slot, nothing broadcast over the cluster
bus, and the change feed and wake channel kept through a failover and a slot migration
(Redis ends a shard channel's subscription when the slot leaves the node)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from podq import Job, Queue, Status
from podq.queue.notify import Change, Subscription
from podq.testing_cluster import LoopbackCluster


async def until(check: Callable[[], bool], what: str, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def next_change(sub: Subscription, key: str, deadline_s: float = 20.0) -> Change:
    """The next change of key on the feed (only the feed: no read of the job)."""
    async with asyncio.timeout(deadline_s):
        async for change in sub:
            if change.key == key:
                return change
    raise AssertionError("the change feed ended")


class Listened:
    """A queue's change feed and wake subscription, recorded."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.woken: list[tuple[str | None, str]] = []
        self.feed = queue.subscribe()
        self.wake = queue.subscribe_wake(lambda key, status: self.woken.append((key, status)))

    def resyncs(self) -> int:
        return self.woken.count((None, "resync"))

    async def check(self, key: str) -> None:
        """A job scheduled later (published on the wake channel too) and a ready one
        reach the feed, and the first the wake subscription, by notification alone."""
        later = await self.queue.enqueue(Job("noop", key=f"{key}-later",
                                             scheduled=int(time.time()) + 3600))
        ready = await self.queue.enqueue(Job("noop", key=key))
        assert later is not None and ready is not None
        assert await next_change(self.feed, f"{key}-later") == Change(f"{key}-later",
                                                                      Status.QUEUED)
        assert await next_change(self.feed, key) == Change(key, Status.QUEUED)
        await until(lambda: (f"{key}-later", "queued") in self.woken, f"{key}-later's wake")


@contextlib.asynccontextmanager
async def listening(url: str, names: list[str]) -> AsyncIterator[list[Listened]]:
    queues = [Queue.from_url(url, name=name) for name in names]
    subs = [Listened(q) for q in queues]
    try:
        for s in subs:
            await s.feed.start()
            await s.wake.start()
        yield subs
    finally:
        for s in subs:
            await s.feed.close()
            await s.wake.close()
        for q in queues:
            await q.disconnect()


def bus_counters(cluster: LoopbackCluster) -> tuple[int, int]:
    """(plain PUBLISH, shard PUBLISH) messages sent over the cluster bus, all nodes."""
    plain = shard = 0
    for port in cluster.procs:
        info = cluster.client(port).execute_command("CLUSTER", "INFO").decode()
        stats = dict(line.split(":", 1) for line in info.split() if ":" in line)
        plain += int(stats.get("cluster_stats_messages_publish_sent", 0))
        shard += int(stats.get("cluster_stats_messages_publishshard_sent", 0))
    return plain, shard


def shard_subscribers(cluster: LoopbackCluster, ports: list[int], channel: str) -> int:
    return sum(int(cluster.client(p).execute_command("PUBSUB", "SHARDNUMSUB", channel)[1])
               for p in ports)


def subscribed(cluster: LoopbackCluster, ports: list[int], listened: Listened) -> bool:
    """Both channels of the queue subscribed once, on these nodes."""
    keys = listened.queue.keys
    return all(shard_subscribers(cluster, ports, c) == 1 for c in (keys.changes, keys.wake))


async def test_notifications_stay_on_each_queue_s_shard(cluster: LoopbackCluster) -> None:
    spread = cluster.spread(3, "feed")
    async with listening(cluster.url, list(spread)) as subs:
        for s in subs:
            owner = spread[s.queue.name]
            for channel in (s.queue.keys.changes, s.queue.keys.wake):
                # subscribed to the shard channel on the slot's primary, not to a
                # plain channel anywhere
                assert shard_subscribers(cluster, [owner], channel) == 1
                assert not any(cluster.client(p).pubsub_numsub(channel)[0][1]
                               for p in cluster.procs)
        plain, shard = bus_counters(cluster)
        for s in subs:
            await s.check("first")
        # the primaries forwarded the messages to their replicas only (shard messages);
        # nothing was broadcast to every node
        after = bus_counters(cluster)
        assert after[0] == plain
        assert after[1] > shard


async def test_notifications_carry_on_after_a_failover_and_a_migration(
    cluster: LoopbackCluster,
) -> None:
    spread = cluster.spread(3, "moves")
    names = list(spread)
    async with listening(cluster.url, names) as subs:
        failed, migrated, _ = subs
        for s in subs:
            await s.check("before")

        # the primary of the first queue's slot fails over to its replica: the old
        # primary ends the subscriptions; they are made again, and resynced
        primary = spread[failed.queue.name]
        replica = cluster.replica_of(primary)
        resyncs = failed.resyncs()
        assert cluster.client(replica).execute_command("CLUSTER", "FAILOVER") in (b"OK", True)
        await asyncio.to_thread(cluster.wait_owner, failed.queue.keys.queued, replica, 30)
        await until(lambda: failed.resyncs() > resyncs, "a resubscription after the failover")
        # both channels subscribed again, on the new primary (messages sent meanwhile
        # are lost: the resync tells listeners to read the state again)
        await until(lambda: subscribed(cluster, [replica], failed), "both channels")
        await failed.check("after-failover")

        # the second queue's slot moves to the third queue's primary (resharding)
        target = spread[names[2]]
        resyncs = migrated.resyncs()
        assert await asyncio.to_thread(cluster.migrate_slot, migrated.queue.keys.queued,
                                       target) > 0
        await until(lambda: migrated.resyncs() > resyncs, "a resubscription after the move")
        await until(lambda: subscribed(cluster, [target], migrated), "both channels")
        await migrated.check("after-migration")
        for s in subs:  # the others were left alone and still work
            await s.check("at-last")
