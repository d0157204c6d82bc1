"""`podq web` on a real Redis Cluster (three primaries, three replicas, on loopback),
named by one redis+cluster:// URL: it finds queues that live on different shards, its
pages load (with the jobs that finished before it started), and its event stream tells
of changes on every shard, through a failover of one queue's primary. The browser side
is the same as on one Redis (test_web_browser.py); this is HTTP level."""

from __future__ import annotations

import asyncio
import re

from test_web_http import get, read_events, session
from web_helpers import Workers, wait_for

from podq import Queue, Status
from podq.testing_cluster import LoopbackCluster
from podq.web import data


async def test_pages_and_live_changes_on_three_shards_through_a_failover(
    cluster: LoopbackCluster, dashboard,
) -> None:
    spread = cluster.spread(3, "web")
    queues = [Queue.from_url(cluster.url, name=name) for name in spread]
    workers = Workers()
    try:
        for q in queues:
            await q.enqueue("add", key=f"{q.name}-k1")
            early = await q.enqueue("add", key=f"{q.name}-early")
            await q.finish(early, Status.COMPLETE, result=1)  # before the dashboard
        # no --queue: the registry of queues (its own slot) names all three
        d = await dashboard(url=cluster.url)
        async with session() as s:
            for name in spread:  # its scan of each queue's shard found them
                async def listed(name: str = name) -> bool:
                    body = (await get(s, d.url + f"/queues/{name}/jobs?status=complete"))[1]
                    return f'data-key="{name}-early"' in body
                await wait_for(listed, 30)
            status, body, _ = await get(s, d.url + "/queues")
            assert status == 200
            for name in spread:
                assert f'id="queue-{name}"' in body
                assert re.search(rf'data-live="{name}:queued">1<', body)
            for name in spread:
                for path in (f"/queues/{name}/jobs", f"/queues/{name}/job?key={name}-k1"):
                    status, body, _ = await get(s, d.url + path)
                    assert status == 200 and f"{name}-k1" in body, path

            async with s.get(d.url + "/events") as stream:
                await read_events(stream, lambda e, _: e == "hello")
                for q in queues:  # a change on each shard reaches the browser
                    job = await q.job(f"{q.name}-k1")
                    await q.finish(job, Status.COMPLETE, result=1)
                    await read_events(stream, lambda e, data, q=q: e == "changes"
                                      and data["queue"] == q.name
                                      and [f"{q.name}-k1", "complete"] in data["jobs"])

                target = queues[0]
                key = target.keys.queued
                primary = cluster.owner(key)
                replica = cluster.replica_of(primary)
                assert cluster.client(replica).execute_command("CLUSTER", "FAILOVER") in (
                    b"OK", True)
                await asyncio.to_thread(cluster.wait_owner, key, replica, 30)
                # after the failover: a worker's run is told live, as before
                await workers.start(target, [add])
                job = await target.enqueue("add", key="after", kwargs={"a": 2})
                assert job is not None
                await read_events(stream, lambda e, data: e == "changes"
                                  and data["queue"] == target.name
                                  and ["after", "complete"] in data["jobs"], 30)

            # what the feed recorded lives with the queue, on its new primary
            status, body, _ = await get(s, d.url + f"/queues/{target.name}/jobs?status=complete")
            assert status == 200 and "after" in body and f"{target.name}-k1" in body
            status, body, _ = await get(s, d.url + f"/queues/{target.name}/job?key=after")
            assert re.search(r"</time> queued</li>.*</time> complete</li>", body, re.S)
            status, body, _ = await get(s, d.url + "/workers")
            assert status == 200 and target.name in body
    finally:
        await workers.stop_all()
        for q in queues:
            await q.disconnect()


async def add(ctx: dict, a: int = 1) -> int:
    return a + 1


async def test_the_workers_page_reads_each_node_s_clock_once(cluster: LoopbackCluster) -> None:
    """Liveness records expire on their own node's clock: one TIME per node a page."""
    spread = cluster.spread(3, "clock")
    first = next(iter(spread.values()))
    spread[next(f"clock-b{i}" for i in range(1000)  # a second queue on the first node
                if cluster.owner(f"podq:{{clock-b{i}}}:queued") == first)] = first
    queues = {name: Queue.from_url(cluster.url, name=name) for name in spread}
    try:
        for name, q in queues.items():
            await q.write_worker_info(f"worker-{name}", {"id": f"worker-{name}"}, ttl=60)
        nodes = {port: cluster.client(port) for port in set(spread.values())}
        before = {port: c.info("commandstats").get("cmdstat_time", {}).get("calls", 0)
                  for port, c in nodes.items()}
        rows = await data.workers(queues)
        after = {port: c.info("commandstats").get("cmdstat_time", {}).get("calls", 0)
                 for port, c in nodes.items()}
        assert {port: after[port] - before[port] for port in nodes} == dict.fromkeys(nodes, 1)
        assert {name: [w["id"] for w in found] for name, found in rows} == {
            name: [f"worker-{name}"] for name in spread}
    finally:
        for q in queues.values():
            await q.disconnect()
