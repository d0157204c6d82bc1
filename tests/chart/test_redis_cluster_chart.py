"""The chart names a Redis Cluster as it names one Redis: `redis.url:
redis+cluster://node,node/0`. The URL it renders (password spliced in from a Secret)
is the one a worker, started with the rendered args and env as `podq worker`, serves
jobs through, and its liveness probe finds it, on a real 3-primary, 3-replica cluster
on loopback."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_helpers import ROOT
from test_redis_wiring import VENV_BIN, kubelet_env, one

from podq.queue import Queue
from podq.testing_cluster import LoopbackCluster

PASSWORD = "clusterPassw0rd"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LoopbackCluster]:
    nodes = LoopbackCluster(tmp_path / "cluster", password=PASSWORD)
    nodes.root.mkdir()
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def test_a_cluster_url_in_the_values_reaches_workers_and_operator(
    render, cluster: LoopbackCluster, tmp_path: Path
) -> None:
    objs = render({"redis": {"url": cluster.url,
                             "password": {"existingSecret": "redis-auth", "key": "password"}},
                   "workers": {"queue": "cluster-queue"}})
    secrets = {("redis-auth", "password"): PASSWORD}
    container = one(objs, "Deployment", "podq-worker")["spec"]["template"]["spec"][
        "containers"][0]
    env = kubelet_env(container, secrets)
    url = env["PODQ_REDIS_URL"]
    assert url == cluster.url.replace("redis+cluster://", f"redis+cluster://:{PASSWORD}@")
    operator = one(objs, "Deployment", "podq-operator")["spec"]["template"]["spec"][
        "containers"][0]
    assert kubelet_env(operator, secrets)["PODQ_REDIS_URL"] == url

    worker = subprocess.Popen(
        [str(VENV_BIN / "podq"), "worker", *container["args"]],
        env={**os.environ, **env, "HOME": str(tmp_path)}, cwd=ROOT / "worker_image")
    try:
        async def run() -> Any:
            queue = Queue.from_url(url, name="cluster-queue")
            try:
                job = await queue.enqueue("echo", kwargs={"message": "sharded"})
                assert job is not None
                await job.refresh(until_complete=60)
                return job
            finally:
                await queue.disconnect()

        job = asyncio.run(run())
        assert job.status == "complete" and job.result["message"] == "sharded"
        owner = cluster.client(cluster.owner("podq:{cluster-queue}:queued"))
        assert owner.hget("podq:{cluster-queue}:stats", "complete") == b"1"
        # the rendered liveness probe finds the worker's record on the queue's primary
        probe = container["livenessProbe"]["exec"]["command"]
        result = subprocess.run([str(VENV_BIN / "podq"), *probe[1:]],
                                env={**os.environ, **env, "HOME": str(tmp_path)},
                                cwd=ROOT / "worker_image", capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, result.stderr
    finally:
        worker.terminate()
        worker.wait(20)
