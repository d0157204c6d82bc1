"""A Redis Cluster that is down (CLUSTERDOWN: a slot without a live primary, so every
node refuses every command) for longer than the client's retries, on real redis-server
nodes: a worker's write-back waits it out."""

from __future__ import annotations

import asyncio
import logging
import signal

import pytest
from engine_helpers import wait_for

from podq import Queue, Status, Worker
from podq.testing_cluster import LoopbackCluster

TIMERS = {"schedule": 0.5, "worker_info": 0.2, "sweep": 0.3, "abort": 0.2}


def cluster_state(cluster: LoopbackCluster, port: int) -> bytes:
    return cluster.client(port).execute_command("CLUSTER", "INFO")


@pytest.mark.timeout(180)
async def test_a_write_back_waits_out_a_cluster_down_past_the_retries(
    cluster: LoopbackCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Another shard's primary dies and its replica cannot take over yet (stopped): the
    whole cluster refuses commands. The client's retries (about 15 s) run out while the
    job's write-back waits; it goes on as for an unreachable Redis, and the job completes
    once the replica took over (a ClusterDownError escaped before: the job task crashed
    and the job was never written back)."""
    caplog.set_level(logging.WARNING, logger="podq")
    (name, home), = cluster.spread(1, "down").items()
    victim = next(port for _, _, port in cluster.slots() if port != home)
    replica = cluster.replica_of(victim)
    gate = asyncio.Event()

    async def held(ctx: dict) -> str:
        await gate.wait()
        return "written"

    queue = Queue.from_url(cluster.url, name=name)
    worker = Worker(queue, [("held", held)], handle_signals=False, timers=TIMERS)
    task = asyncio.create_task(worker.start())
    stopped = cluster.procs[replica]
    try:
        job = await queue.enqueue("held")
        await wait_for(lambda: queue.count("active"), 30)
        # it takes over however long it was cut off from its primary (by default, not
        # after 10 node timeouts: the cluster would stay down)
        cluster.client(replica).config_set("cluster-replica-validity-factor", 0)
        stopped.send_signal(signal.SIGSTOP)  # no failover while it is stopped
        cluster.kill(victim)

        def down() -> bool:  # the queue's own node refuses: the cluster is down
            return b"cluster_state:fail" in cluster_state(cluster, home)

        await wait_for(lambda: asyncio.to_thread(down), 60)
        gate.set()  # the job ends; its write-back meets CLUSTERDOWN until the retries end

        def retries_ran_out() -> bool:
            return any(f"write back job {job.key}" in r.getMessage() or "crashed" in
                       r.getMessage() for r in caplog.records)

        await wait_for(retries_ran_out, 90)
        stopped.send_signal(signal.SIGCONT)  # the replica takes over: the cluster is up
        await job.refresh(until_complete=60)
        assert job.status is Status.COMPLETE and job.result == "written"
        assert job.attempts == 1 and job.disruptions == 0
        assert not [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()]
    finally:
        stopped.send_signal(signal.SIGCONT)
        await worker.stop()
        await asyncio.wait_for(task, 60)
        await queue.disconnect()
