"""Fix 9 on a real cluster-mode Redis: one node that owns every slot, so Redis applies
its cluster rules to every script (keys of one call must share a slot)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from podq import Job, Queue, Status, Worker
from podq.testing import wait_for_port
from podq.testing_cluster import cluster_port


@pytest.fixture
def cluster_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server not installed")
    port = cluster_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-config-file", str(tmp_path / "nodes.conf"), "--dir", str(tmp_path),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        client = redis.Redis(port=port)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 10
        while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "cluster did not come up"
            time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def add(ctx: dict, a: int, b: int) -> int:
    return a + b


async def test_fix9_every_script_runs_on_a_cluster_mode_redis(cluster_url: str) -> None:
    queue = Queue.from_url(cluster_url, name="emails")
    worker = Worker(queue, [add], handle_signals=False,
                    timers={"schedule": 0.5, "worker_info": 0.2, "sweep": 0.3, "abort": 0.2})
    task = asyncio.create_task(worker.start())
    try:
        assert await queue.apply("add", a=1, b=2, timeout=30) == 3
        jobs = await queue.enqueue_many([Job("add", kwargs={"a": i, "b": 1}) for i in range(20)])
        await jobs[-1].refresh(until_complete=30)
        later = await queue.enqueue("add", a=0, b=0, scheduled=time.time() + 60)
        await later.abort("not needed")
        assert (await queue.job(later.key)).status is Status.ABORTED
        assert await queue.sweep(lock=0.01) == []
        assert [w["id"] for w in await queue.workers()] == [worker.id]
    finally:
        await worker.stop()
        await task
        await queue.disconnect()


async def test_a_delayed_retry_and_waiting_since_run_in_one_script_each_on_a_cluster_node(
    cluster_url: str,
) -> None:
    """write.lua sets a delayed retry's due time in the job's hash, enqueue_many.lua
    each job's ready_since, and waiting_since.lua reads the hashes of the ready queue's
    heads: keys of the queue's slot, as the keys each call declares."""
    queue = Queue.from_url(cluster_url, name="emails")
    try:
        await queue.enqueue("add", key="r", a=1, b=2, retries=2, retry_delay=60)
        [job], _ = await queue.take(1, "w")
        assert await queue.retry(job, "later", expect=True)
        score = await queue.redis.zscore(queue.keys.scheduled, "r")
        assert (await queue.job("r")).scheduled == job.scheduled == score > time.time() + 50
        await queue.enqueue_many([Job("add", key=f"p{p}", priority=p) for p in (-3, 0, 4)])
        # since their enqueue: enqueue_many.lua stamped each on Redis's clock
        since = await queue.waiting_since()
        assert since == pytest.approx(time.time(), abs=30)
        assert {(await queue.job(f"p{p}")).ready_since for p in (-3, 0, 4)} == {since * 1000}
    finally:
        await queue.disconnect()
