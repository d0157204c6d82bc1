"""podq on a real Redis Cluster: three primaries with a replica each, on loopback.

Queues named by one cluster URL (redis+cluster://) land on different shards; workers
and clients follow each queue's slot owner, through a failover (podq.queue.cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from engine_helpers import PODQ, command_calls, spent
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoPermissionError

from podq import Job, Queue, Status, Worker
from podq.queue import list_queues
from podq.queue.cluster import ForeignSlotError, client_for
from podq.queue.keys import acl_rules
from podq.testing_cluster import LoopbackCluster

TIMERS = {"schedule": 0.5, "worker_info": 0.2, "sweep": 0.3, "abort": 0.2}


async def test_a_key_of_another_slot_fails_clearly_and_leaves_the_queue_working(
    cluster: LoopbackCluster,
) -> None:
    (name, port), (_, other_port) = cluster.spread(2, "foreign").items()
    queue = Queue.from_url(cluster.url, name=name)
    try:
        other = next(f"k{i}" for i in range(1000) if cluster.owner(f"k{i}") == other_port)
        with pytest.raises(ForeignSlotError, match="client_for"):
            await queue.redis.incr(other)
        async with client_for(queue.redis, other) as right:
            assert await right.incr(other) == 1
        # the queue still talks to its own slot's primary
        job = await queue.enqueue("slow_add", a=1, b=2)
        assert job is not None
        assert cluster.client(port).zcard(f"podq:{{{name}}}:queued") == 1
    finally:
        await queue.disconnect()


async def test_a_redis_py_cluster_client_serves_as_a_queue_s_client(
    cluster: LoopbackCluster,
) -> None:
    (name, port), = cluster.spread(1, "given").items()
    seed = next(p for p in sorted(cluster.procs) if p != port)  # not the owner
    client = RedisCluster(host="127.0.0.1", port=seed, decode_responses=True)
    queue = Queue(client, name=name)
    worker = Worker(queue, [slow_add], concurrency=10, handle_signals=False, timers=TIMERS)
    task = asyncio.create_task(worker.start())
    try:
        assert await queue.apply("slow_add", a=1, b=2, timeout=30) == 3  # pub/sub works
        keys = [j.key for j in await queue.enqueue_many(
            [Job("slow_add", kwargs={"a": i, "b": 1}) for i in range(50)])]
        await wait_all_complete(queue, keys, 60)
        assert int(cluster.client(port).hget(f"podq:{{{name}}}:stats", "complete")) == 51
        assert name in await list_queues(queue.redis)
    finally:
        await worker.stop()
        await task
        await queue.disconnect()
    # the queue closed its own connections; the caller's client is still the caller's
    assert await client.set("after", "1") and await client.get("after") == "1"
    await client.aclose()


RAN: dict[str, Counter[str]] = {}  # queue -> job key -> runs of counted


async def counted(ctx: dict, i: int) -> int:
    RAN[ctx["job"].queue.name][ctx["job"].key] += 1
    await asyncio.sleep(0.01)
    return i


def error_replies(cluster: LoopbackCluster, port: int, code: str) -> int:
    """How many replies of this error code (ASK, MOVED, ...) the node has sent."""
    stats = cluster.client(port).info("errorstats")
    return int(stats.get(f"errorstat_{code}", {}).get("count", 0))


@pytest.mark.parametrize(("batch", "pace_s"), [(100_000, 1.0), (5, 0.05)],
                         ids=["one-migrate", "key-batches"])
async def test_a_queue_s_slot_migrated_mid_run_loses_no_job(
    cluster: LoopbackCluster, batch: int, pace_s: float,
) -> None:
    """Resharding: the queue's slot moves to another primary, all its keys in one
    MIGRATE (then 1 s before the hand-over) or 5 keys at a time (for about 4 s), while a
    worker runs its jobs and a client enqueues more. A command that meets a moved key
    (ASK, TRYAGAIN) waits; once the slot is handed over MOVED sends it to the new owner.
    The worker's liveness record (ttl 2 s here) may expire while its writes wait: its
    sweep waits for the records to be written again, so no job runs twice."""
    (name, source), = cluster.spread(1, f"moving{batch}-").items()
    target = next(port for _, _, port in cluster.slots() if port != source)
    key = f"podq:{{{name}}}:queued"
    ran = RAN[name] = Counter()
    queue = Queue.from_url(cluster.url, name=name)
    worker = Worker(queue, [counted], concurrency=10, handle_signals=False, timers=TIMERS)
    keys = [j.key for j in await queue.enqueue_many(
        [Job("counted", kwargs={"i": i}) for i in range(400)])]
    asks = error_replies(cluster, source, "ASK") + error_replies(cluster, source, "TRYAGAIN")
    task = asyncio.create_task(worker.start())
    try:
        await wait_complete_count(queue, 30, 30)
        migration = asyncio.create_task(asyncio.to_thread(
            cluster.migrate_slot, key, target, batch, pace_s))
        while not migration.done():  # a client enqueues while the slot moves
            job = await queue.enqueue("counted", i=-1)
            assert job is not None
            keys.append(job.key)
        assert await migration > 400
        met = error_replies(cluster, source, "ASK") + error_replies(cluster, source, "TRYAGAIN")
        assert met > asks, "no command met the migration"
        assert int((await queue.stats()).get("complete", 0)) < len(keys), "not mid-run"
        assert cluster.owner(key) == target
        assert await queue.apply("counted", i=7, timeout=30) == 7
        await wait_all_complete(queue, keys, 90)
        assert [k for k, n in ran.items() if n > 1] == [], "a job ran twice"
        assert set(keys) <= set(ran)
        stats = cluster.client(target).hget(f"podq:{{{name}}}:stats", "complete")
        assert int(stats or 0) >= len(keys)
        slot = cluster.client(source).cluster("KEYSLOT", key)
        assert cluster.client(source).cluster("COUNTKEYSINSLOT", slot) == 0
    finally:
        await worker.stop()
        await task
        await queue.disconnect()


async def test_a_queue_s_acl_user_works_on_a_cluster_and_only_there(
    cluster: LoopbackCluster,
) -> None:
    """ACL users are per node: the queue's user is created on every node (docs/security.md);
    the slot lookup (CLUSTER SLOTS) and the registry of queues need nothing more."""
    (name, _), (other, _) = cluster.spread(2, "acl").items()
    user = f"worker-{name}"
    for port in cluster.procs:
        cluster.client(port).execute_command("ACL", "SETUSER", user, "reset", "on", ">pw",
                                             *acl_rules(name))
    url = cluster.url.replace("redis+cluster://", f"redis+cluster://{user}:pw@")
    queue, foreign = Queue.from_url(url, name=name), Queue.from_url(url, name=other)
    worker = Worker(queue, [slow_add], handle_signals=False, timers=TIMERS)
    task = asyncio.create_task(worker.start())
    try:
        assert await queue.apply("slow_add", a=2, b=2, timeout=30) == 4
        assert name in await list_queues(queue.redis)
        with pytest.raises(NoPermissionError):
            await foreign.enqueue("slow_add", a=1, b=1)
    finally:
        await worker.stop()
        await task
        await queue.disconnect()
        await foreign.disconnect()
        for port in cluster.procs:
            cluster.client(port).execute_command("ACL", "DELUSER", user)


async def slow_add(ctx: dict, a: int, b: int) -> int:
    await asyncio.sleep(0.005)
    return a + b


async def wait_all_complete(queue: Queue, keys: list[str], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    pending = list(keys)
    while pending:
        jobs = await queue.jobs(pending)
        pending = [k for k, j in zip(pending, jobs, strict=True)
                   if j is None or j.status is not Status.COMPLETE]
        assert all(j is not None for j in jobs), "a job disappeared"
        if not pending:
            return
        assert time.monotonic() < deadline, f"{len(pending)} jobs never completed"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def serving(url: str, names: Iterable[str]) -> AsyncIterator[list[Queue]]:
    """A queue per name on url, each served by a worker of slow_add; all closed after."""
    queues = [Queue.from_url(url, name=name) for name in names]
    workers = [Worker(q, [slow_add], concurrency=20, handle_signals=False, timers=TIMERS)
               for q in queues]
    tasks = [asyncio.create_task(w.start()) for w in workers]
    try:
        yield queues
    finally:
        for w in workers:
            await w.stop()
        await asyncio.gather(*tasks)
        for q in queues:
            await q.disconnect()


async def test_queues_on_three_shards_all_complete(cluster: LoopbackCluster) -> None:
    spread = cluster.spread(3)
    assert len(set(spread.values())) == 3
    async with serving(cluster.url, spread) as queues:
        # apply waits on the queue's change feed: notifications work on each shard
        assert [await q.apply("slow_add", a=1, b=i, timeout=30) for i, q in
                enumerate(queues)] == [1, 2, 3]
        keys = {q.name: [j.key for j in await q.enqueue_many(
            [Job("slow_add", kwargs={"a": i, "b": 1}) for i in range(100)])] for q in queues}
        for q in queues:
            await wait_all_complete(q, keys[q.name], 60)
            # the queue's keys live on the primary that owns its slot, not elsewhere
            owner = cluster.client(spread[q.name])
            assert int(owner.hget(f"podq:{{{q.name}}}:stats", "complete") or 0) >= 100
        assert set(spread) <= set(await list_queues(queues[0].redis))


async def test_a_delayed_retry_and_waiting_since_are_one_script_call_on_each_shard(
    cluster: LoopbackCluster,
) -> None:
    """Each runs as one EVALSHA on its queue's primary (the job hashes they touch share
    the queue's hash tag): a delayed retry reads TIME only in write.lua, waiting_since
    reads it and every priority's head in waiting_since.lua."""
    spread = cluster.spread(3, "trips")
    queues = [Queue.from_url(cluster.url, name=name) for name in spread]
    try:
        for queue in queues:
            owner = cluster.client(spread[queue.name])
            await queue.enqueue_many([Job("f", key=f"p{p}", priority=p, retries=2,
                                          retry_delay=60) for p in (-2, 0, 3)])
            [job], _ = await queue.take(1, "w")
            await queue.waiting_since()  # loads its script
            before = command_calls(owner)
            assert await queue.retry(job, "later", expect=True)
            since = await queue.waiting_since()
            calls = spent(before, command_calls(owner))
            assert {c: calls.get(c, 0) for c in ("evalsha", "time")} == {"evalsha": 2, "time": 2}
            # the ready jobs left (p0, p3) wait since enqueue_many.lua stamped them
            assert since == (await queue.job("p3")).ready_since / 1000
            assert since == pytest.approx(time.time(), abs=30)
            score = await queue.redis.zscore(queue.keys.scheduled, job.key)
            assert (await queue.job(job.key)).scheduled == job.scheduled == score
    finally:
        for queue in queues:
            await queue.disconnect()


async def sleepy(ctx: dict, i: int) -> int:
    await asyncio.sleep(0.05)
    return i


async def wait_complete_count(queue: Queue, count: int, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while int((await queue.stats()).get("complete", 0)) < count:
        assert time.monotonic() < deadline, "jobs stopped completing"
        await asyncio.sleep(0.05)



async def run_through_failover(cluster: LoopbackCluster, name: str, fail_over) -> None:
    key = f"podq:{{{name}}}:queued"
    primary = cluster.owner(key)
    replica = cluster.replica_of(primary)
    queue = Queue.from_url(cluster.url, name=name)
    worker = Worker(queue, [sleepy], concurrency=10, handle_signals=False, timers=TIMERS)
    before = [j.key for j in await queue.enqueue_many(
        [Job("sleepy", kwargs={"i": i}) for i in range(300)])]
    # replicated before the primary goes (Redis replicates asynchronously: a write
    # acknowledged in the instant before a crash can be lost by Redis itself)
    assert cluster.client(primary).execute_command("WAIT", 1, 5000) >= 1
    task = asyncio.create_task(worker.start())
    try:
        await wait_complete_count(queue, 40, 30)
        # mid-run: most of the jobs are still to run when the primary goes
        assert int((await queue.stats()).get("complete", 0)) < 200
        fail_over(primary, replica)
        await asyncio.to_thread(cluster.wait_owner, key, replica, 30)
        # clients and notifications carry on against the new primary
        after = [j.key for j in await queue.enqueue_many(
            [Job("sleepy", kwargs={"i": i}) for i in range(50)])]
        assert await queue.apply("sleepy", i=7, timeout=30) == 7
        await wait_all_complete(queue, before + after, 90)
        assert cluster.client(replica).hlen(f"podq:{{{name}}}:job:{after[0]}") > 0
    finally:
        await worker.stop()
        await task
        await queue.disconnect()


async def test_a_cluster_failover_mid_run_loses_no_job(cluster: LoopbackCluster) -> None:
    def failover(primary: int, replica: int) -> None:
        assert cluster.client(replica).execute_command("CLUSTER", "FAILOVER") in (b"OK", True)

    await run_through_failover(cluster, "failover", failover)


async def test_a_killed_primary_mid_run_loses_no_replicated_job(
    cluster: LoopbackCluster,
) -> None:
    await run_through_failover(cluster, "killed", lambda primary, _: cluster.kill(primary))


async def test_a_tls_cluster_named_by_a_rediss_cluster_url(tmp_path: Path) -> None:
    """TLS everywhere (clients, replication, cluster bus): rediss+cluster:// with the
    CA in the URL; queues on two shards, notifications, and a failover."""
    with LoopbackCluster(tmp_path, tls=True) as tls:
        assert tls.url.startswith("rediss+cluster://")
        async with serving(tls.url, tls.spread(2, "tls")) as queues:
            assert [await q.apply("slow_add", a=1, b=i, timeout=10)
                    for i, q in enumerate(queues)] == [1, 2]
            first = queues[0]
            key = first.keys.queued
            primary = tls.owner(key)
            replica = tls.replica_of(primary)
            assert tls.client(replica).execute_command("CLUSTER", "FAILOVER") in (b"OK", True)
            await asyncio.to_thread(tls.wait_owner, key, replica, 30)
            keys = [j.key for j in await first.enqueue_many(
                [Job("slow_add", kwargs={"a": i, "b": 1}) for i in range(30)])]
            await wait_all_complete(first, keys, 60)
            assert tls.client(replica).hget(f"podq:{{{first.name}}}:stats", "complete")


def test_the_cli_takes_a_cluster_url_from_the_environment(cluster: LoopbackCluster) -> None:
    spread = cluster.spread(2)
    env = {**os.environ, "PODQ_REDIS_URL": cluster.url}

    def podq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PODQ, *args], env=env, capture_output=True, text=True,
                              timeout=60, check=False)

    for name in spread:
        r = podq("enqueue", "add", "--queue", name, "--no-check")
        assert r.returncode == 0, r.stderr
    r = podq("info", "--json")
    assert r.returncode == 0, r.stderr
    info = {q["name"]: q for q in json.loads(r.stdout)}
    assert {name: info[name]["queued"] for name in spread} == {name: 1 for name in spread}
    for name, port in spread.items():
        assert cluster.client(port).zcard(f"podq:{{{name}}}:queued") == 1
    r = podq("jobs", "--json")  # every queue, each on the primary of its slot
    assert r.returncode == 0, r.stderr
    # The cluster is shared by this module's tests: other tests' queues may be listed too.
    listed = [j["queue"] for j in json.loads(r.stdout)["jobs"] if j["queue"] in spread]
    assert sorted(listed) == sorted(spread)
