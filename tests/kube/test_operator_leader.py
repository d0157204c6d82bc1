"""Two operator processes with Lease-based leader election on the real API server: one
acts, the standby takes over within 15 s of the leader's SIGKILL (default timings, as
the chart runs them), and nothing is lost or run twice across the handover."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request

import pytest
from kubernetes_asyncio.client import CoordinationV1Api
from kubernetes_asyncio.client.rest import ApiException
from operator_harness import (
    Harness,
    Process,
    eventually,
)

from podq.testing import free_port

LEASE = "podq-operator"
TAKEOVER_LIMIT_S = 15.0


def elected(harness: Harness) -> Process:
    return harness.start_operator("--leader-elect", "--leader-election-namespace",
                                  harness.namespace)


async def holder(harness: Harness) -> str | None:
    leases = CoordinationV1Api(harness.custom.api_client)
    try:
        lease = await leases.read_namespaced_lease(LEASE, harness.namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return lease.spec.holder_identity


async def leader_and_standby(harness: Harness) -> tuple[Process, Process, str]:
    first = elected(harness)
    leader_id = await eventually(lambda: holder(harness), within=30, what="a leader")
    second = elected(harness)  # healthy while standing by
    return first, second, leader_id


def runs_of(raw: dict) -> dict[str, int]:
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}


@pytest.mark.timeout(240)
async def test_standby_takes_over_within_15s_of_the_leaders_sigkill(harness: Harness) -> None:
    leader, standby, leader_id = await leader_and_standby(harness)
    harness.start_worker()
    count = 60
    for index in range(count):
        await harness.create_job(f"ha-{index:02d}", "count_run", kwargs={"seconds": 0.2})

    async def some_done() -> bool:
        jobs = await harness.list_jobs()
        return sum((j.get("status") or {}).get("status") == "complete" for j in jobs) >= 5
    await eventually(some_done, within=60, what="the first Jobs to complete")
    leader.kill()
    killed_at = time.monotonic()
    for index in range(count, count + 20):  # work that only the new leader can take
        await harness.create_job(f"ha-{index:02d}", "count_run")

    async def new_holder() -> str | None:
        current = await holder(harness)
        return current if current not in (None, leader_id) else None
    await eventually(new_holder, within=30, what="the standby to take the lease",
                     interval=0.05)
    took = time.monotonic() - killed_at
    assert took < TAKEOVER_LIMIT_S, f"takeover after {took:.1f}s"
    assert standby.alive

    async def all_done() -> bool:
        jobs = await harness.list_jobs()
        return len(jobs) == count + 20 and all(
            (j.get("status") or {}).get("status") == "complete" for j in jobs)
    await eventually(all_done, within=120, what="every Job to complete", interval=0.5)
    runs = runs_of(await harness.queue().redis.hgetall("podq-test:runs"))
    assert len(runs) == count + 20
    assert [k for k, v in runs.items() if v != 1] == [], "ran twice"


async def test_a_leader_stopped_gracefully_hands_over_at_once(harness: Harness) -> None:
    leader, standby, leader_id = await leader_and_standby(harness)
    harness.start_worker()
    leader.stop()  # SIGTERM: kopf stops, the lease is released
    # released before the leader exited: no longer its own as soon as it is gone (not
    # after the lease's 8 s; timed from the SIGTERM, a slow shutdown on a loaded machine
    # broke a 6 s bound)
    assert await holder(harness) != leader_id, "the stopped leader still holds the lease"
    assert "released the lease" in leader.log.read_text(errors="replace")

    async def new_holder() -> str | None:
        current = await holder(harness)
        return current if current not in (None, leader_id) else None
    await eventually(new_holder, within=30, what="the standby to take the lease",
                     interval=0.05)
    await harness.create_job("after", "noop")
    await harness.wait_status("after", "complete", within=30)
    assert standby.alive


def metrics_text(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


async def test_every_replica_answers_on_its_metrics_port(harness: Harness) -> None:
    """The chart's metrics Service (and a ServiceMonitor) reaches both replicas: the
    standby answers with podq_operator_leader 0 (it refused connections: a target down
    and a failed scrape half the time), the leader with 1 and every metric; after a
    handover the new leader serves them on the same port."""
    ports = [free_port(), free_port()]
    first = harness.start_operator("--leader-elect", "--leader-election-namespace",
                                   harness.namespace, "--metrics-port", str(ports[0]),
                                   "--metrics-host", "127.0.0.1")
    await eventually(lambda: holder(harness), within=30, what="a leader")
    harness.start_operator("--leader-elect", "--leader-election-namespace",
                           harness.namespace, "--metrics-port", str(ports[1]),
                           "--metrics-host", "127.0.0.1")

    async def scrape(port: int) -> str | None:
        return await asyncio.to_thread(metrics_text, port)
    leader = await eventually(lambda: scrape(ports[0]), what="the leader's metrics")
    assert "podq_operator_leader 1.0" in leader and "podq_operator_job_resources " in leader
    standby = await eventually(lambda: scrape(ports[1]), what="the standby's metrics")
    assert "podq_operator_leader 0.0" in standby
    assert "podq_operator_job_resources" not in standby  # it watches nothing yet

    first.stop()

    async def took_over() -> str | None:
        text = await scrape(ports[1])
        return text if text and "podq_operator_leader 1.0" in text else None
    after = await eventually(took_over, within=60, what="the new leader's metrics")
    assert "podq_operator_job_resources " in after


async def test_a_frozen_leader_that_wakes_up_after_losing_the_lease_exits(
    harness: Harness,
) -> None:
    """SIGSTOP the leader (a long GC pause, a frozen node): the standby takes over once
    the lease expires; when the old leader runs again it finds another holder and exits
    instead of acting beside the new one. Nothing runs twice."""
    leader, standby, leader_id = await leader_and_standby(harness)
    harness.start_worker()
    leader.popen.send_signal(signal.SIGSTOP)
    try:
        async def new_holder() -> str | None:
            current = await holder(harness)
            return current if current not in (None, leader_id) else None
        await eventually(new_holder, within=30, what="the standby to take the lease")
        for index in range(20):
            await harness.create_job(f"thaw-{index:02d}", "count_run")
    finally:
        leader.popen.send_signal(signal.SIGCONT)
    await eventually(lambda: _exited(leader), within=20, what="the old leader to exit")
    assert "leadership lost" in leader.log.read_text()  # exited on purpose, not crashed
    for index in range(20):
        await harness.wait_status(f"thaw-{index:02d}", "complete", within=60)
    runs = runs_of(await harness.queue().redis.hgetall("podq-test:runs"))
    assert len(runs) == 20 and set(runs.values()) == {1}
    assert standby.alive


async def _exited(process: Process) -> bool:
    return not process.alive
