"""The real operator and real workers on a real Redis Cluster (three primaries, three
replicas, on loopback), all named by one redis+cluster:// URL: Job resources on queues
spread over the shards complete with their status mirrored, through a primary's failover
with Jobs in flight. Each run of a job appends to a file (a side effect outside Redis), so
a test sees every run, even one whose record a failover lost."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from operator_harness import (
    Harness,
    eventually,
)

from podq.testing import ControlPlane
from podq.testing_cluster import LoopbackCluster

PER_QUEUE = 12


@pytest.fixture
async def harness(podq_crds: ControlPlane, namespace: str, cluster: LoopbackCluster,
                  kube_api: client.ApiClient, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(podq_crds, namespace, cluster.url, tmp_path, kube_api)
    try:
        yield h
    finally:
        await h.close()


def runs(path: Path) -> list[tuple[str, float]]:
    """(job key, when its run began) per run, from the file mark_run appends to."""
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines()]
    return [(key, float(at)) for key, at in lines]


def start(harness: Harness, spread: dict[str, int], runs_file: Path, *operator: str) -> None:
    harness.start_operator(*operator)
    for name in spread:
        harness.start_worker(name, concurrency=3, env={"PODQ_TEST_RUNS_FILE": str(runs_file)})


async def create_jobs(harness: Harness, spread: dict[str, int], tag: str, count: int,
                      seconds: float) -> list[str]:
    names = []
    for name in spread:
        for i in range(count):
            names.append(f"{name}-{tag}-{i}")
            await harness.create_job(names[-1], "mark_run", queue=name,
                                     kwargs={"seconds": seconds}, timeout=60)
    return names


async def all_complete(harness: Harness, names: list[str], within: float) -> list[dict]:
    async def probe() -> list[dict] | None:
        bodies = {b["metadata"]["name"]: b for b in await harness.list_jobs()}
        done = [bodies[n] for n in names
                if n in bodies and (bodies[n].get("status") or {}).get("status") == "complete"]
        return done if len(done) == len(names) else None
    return await eventually(probe, within=within, interval=0.5,
                            what=f"{len(names)} Jobs to be complete")


async def running(harness: Harness, queue: str, count: int) -> None:
    """Until `count` Jobs of queue are complete and some are active (mid-run)."""
    async def probe() -> bool:
        states = Counter((b.get("status") or {}).get("status")
                         for b in await harness.list_jobs() if b["spec"]["queue"] == queue)
        return states["complete"] >= count and states["active"] > 0
    await eventually(probe, within=60, interval=0.05, what=f"{queue} mid-run")


def check_status(bodies: list[dict], spread: dict[str, int], cluster: LoopbackCluster,
                 ) -> None:
    """The status mirrors Redis: the result is the job's key, one attempt, and the job's
    record lives on the primary that now owns its queue's slot."""
    for body in bodies:
        status = body["status"]
        assert status["result"] == status["jobKey"], body
        queue = body["spec"]["queue"]
        owner = cluster.client(cluster.owner(f"podq:{{{queue}}}:queued"))
        assert owner.hget(f"podq:{{{queue}}}:job:{status['jobKey']}", "status") == b"complete"
    assert {b["spec"]["queue"] for b in bodies} == set(spread)


async def through_failover(
    harness: Harness, cluster: LoopbackCluster, runs_file: Path, prefix: str,
    fail_over: Callable[[int, int], None], *operator: str,
) -> tuple[list[dict], list[tuple[str, float]], float]:
    """Workers on three queues on three shards, Jobs in flight on the first queue when
    fail_over(its primary, that primary's replica) runs, more Jobs after: (every Job's
    body once all are complete, the runs, when fail_over began)."""
    spread = cluster.spread(3, prefix)
    assert len(set(spread.values())) == 3
    start(harness, spread, runs_file, *operator)
    # 1 s runs: the target queue is mid-run (some complete, some active) for about 3 s,
    # long enough for the status mirror to show it on a loaded machine (0.4 s: 1.2 s)
    first = await create_jobs(harness, spread, "a", PER_QUEUE, 1.0)
    target = next(iter(spread))
    key = f"podq:{{{target}}}:queued"
    primary = cluster.owner(key)
    replica = cluster.replica_of(primary)
    await running(harness, target, 2)
    failed_at = time.time()
    fail_over(primary, replica)
    await asyncio.to_thread(cluster.wait_owner, key, replica, 30)
    second = await create_jobs(harness, spread, "b", 3, 0.0)
    bodies = await all_complete(harness, first + second, within=150)
    check_status(bodies, spread, cluster)
    seen = runs(runs_file)
    assert {k for k, _ in seen} == {b["status"]["jobKey"] for b in bodies}
    return bodies, seen, failed_at


@pytest.mark.timeout(240)
async def test_jobs_on_three_shards_complete_through_a_failover(
    harness: Harness, cluster: LoopbackCluster, tmp_path: Path,
) -> None:
    def graceful(primary: int, replica: int) -> None:
        # the replica catches up, then takes over: nothing is lost, nothing may run twice
        assert cluster.client(replica).execute_command("CLUSTER", "FAILOVER") in (b"OK", True)

    # no periodic reconcile: every status comes from the queues' change feeds, on each
    # shard, before and after the failover
    _, seen, _ = await through_failover(harness, cluster, tmp_path / "runs", "shard",
                                        graceful, "--reconcile-interval", "3600")
    counts = Counter(k for k, _ in seen)
    assert [k for k, n in counts.items() if n > 1] == [], "a job ran twice"


@pytest.mark.timeout(240)
async def test_a_killed_primary_loses_no_declared_job(
    harness: Harness, cluster: LoopbackCluster, tmp_path: Path,
) -> None:
    """SIGKILL of the primary with Jobs in flight. Redis replicates asynchronously, so
    the promoted replica may lack the last writes (a take, a finish): such a job runs
    again, the only cause allowed; every declared Job still ends complete."""
    _, seen, killed_at = await through_failover(
        harness, cluster, tmp_path / "runs", "killed", lambda primary, _: cluster.kill(primary))
    first_run: dict[str, float] = {}
    for k, at in seen:
        first_run.setdefault(k, at)
    twice = [k for k, n in Counter(k for k, _ in seen).items() if n > 1]
    # a job that ran again began its first run on the killed primary's watch, shortly
    # before the kill (its take or finish was among the writes not yet replicated)
    late = [k for k in twice if not killed_at - 5 < first_run[k] <= killed_at]
    assert late == [], "a job ran twice without a failover to blame"
