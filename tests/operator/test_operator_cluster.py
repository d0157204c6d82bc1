"""The operator's side of a Redis Cluster failover that loses writes: Redis replicates
asynchronously, so jobs enqueued on a primary that dies before its replica got them are
gone from the promoted replica. The operator's reconcile (StatusMirror: read the jobs of the
unfinished resources, enqueue those Redis lacks) puts them back, and workers run every
declared job."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from podq import Queue, Status, Worker
from podq.operator.isolation import read_jobs
from podq.operator.jobs import enqueue_jobs
from podq.operator.mirror import StatusMirror
from podq.operator.registry import JobRegistry, JobResource
from podq.testing_cluster import LoopbackCluster


def declare(registry: JobRegistry, name: str) -> JobResource:
    body = {"metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}"},
            "spec": {"function": "noop", "queue": "declared"}, "status": {}}
    return registry.observe(body)[0]


async def noop(ctx: dict) -> None:
    return None



async def test_declared_jobs_lost_in_a_failover_are_enqueued_again(tmp_path: Path) -> None:
    cluster = LoopbackCluster(tmp_path)
    cluster.start()
    queue = None
    try:
        key = "podq:{declared}:queued"
        primary = cluster.owner(key)
        replica = cluster.replica_of(primary)
        queue = Queue.from_url(cluster.url, name="declared")
        registry = JobRegistry()
        kept = [declare(registry, f"kept-{i}") for i in range(10)]
        outcomes = await enqueue_jobs(queue, kept)
        assert {o.action for o in outcomes.values()} == {"enqueued"}
        assert cluster.client(primary).execute_command("WAIT", 1, 5000) == 1
        # the replica stops hearing from its primary: what follows is on the primary only
        cluster.procs[replica].send_signal(signal.SIGSTOP)
        try:
            cluster.client(primary).execute_command("CLIENT", "KILL", "TYPE", "replica")
            lost = [declare(registry, f"lost-{i}") for i in range(20)]
            outcomes = await enqueue_jobs(queue, lost)
            assert {o.action for o in outcomes.values()} == {"enqueued"}
            cluster.kill(primary)
        finally:
            cluster.procs[replica].send_signal(signal.SIGCONT)
        await asyncio.to_thread(cluster.wait_owner, key, replica, 60)

        declared = kept + lost
        jobs = await read_jobs(queue, [r.key for r in declared])
        missing = [r for r, j in zip(declared, jobs, strict=True)
                   if StatusMirror._needs_enqueue(r, j)]
        assert {r.name for r in missing} == {r.name for r in lost}, "the failover lost them"
        outcomes = await enqueue_jobs(queue, missing)  # the reconcile's enqueue
        assert {o.action for o in outcomes.values()} == {"enqueued"}

        worker = Worker(queue, [noop], handle_signals=False,
                        timers={"schedule": 0.5, "worker_info": 0.2, "sweep": 0.3, "abort": 0.2})
        task = asyncio.create_task(worker.start())
        try:
            deadline = time.monotonic() + 60
            while True:
                jobs = await read_jobs(queue, [r.key for r in declared])
                if all(j is not None and j.status == Status.COMPLETE for j in jobs):
                    break
                assert time.monotonic() < deadline, "declared jobs did not all complete"
                await asyncio.sleep(0.1)
        finally:
            await worker.stop()
            await task
    finally:
        if queue is not None:
            await queue.disconnect()
        cluster.stop()
