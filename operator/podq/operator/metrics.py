"""Prometheus metrics of the operator, served on /metrics (`--metrics-port`).

Everything is read from the operator's state at scrape time (a custom collector):
the status writer's counts, the registry, and what the autoscaler's last pass saw per
queue and decided per Deployment. No job keys in labels, and no queue names that only
a refused Job named.

A standby of leader election serves the same port with `podq_operator_leader 0` alone
(`standby_metrics`), so that every replica behind the metrics Service answers a scrape;
the leader's metrics say `podq_operator_leader 1`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

PREFIX = "podq_operator_"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# the queue label of Jobs refused QueueNotAllowed: another namespace's refused Jobs must
# not count under a team's queue (its dashboards, alerts), nor add a series per queue
# name a tenant makes up. Queue names begin with a letter or digit: no queue has it.
NOT_ALLOWED = "_not_allowed"


class OperatorCollector(Collector):
    """Reads the operator's memo (mirror, registry, autoscaler) on each scrape."""

    def __init__(self, memo: Any) -> None:
        self.memo = memo

    def collect(self) -> Iterator[Metric]:
        memo = self.memo
        yield leader_gauge(1)
        syncs = CounterMetricFamily(f"{PREFIX}status_syncs", "Job status syncs by outcome.",
                                    labels=["outcome"])
        for outcome, value in sorted(memo.mirror.counts.items()):
            syncs.add_metric([outcome], value)
        yield syncs
        yield GaugeMetricFamily(f"{PREFIX}job_resources", "Job resources the operator watches.",
                                value=len(memo.registry))
        by_status = GaugeMetricFamily(
            f"{PREFIX}job_resources_by_status", "Job resources the operator watches, by "
            "queue and status.status (`pending` before the first status); Jobs on a queue "
            f"their namespace may not use count under queue {NOT_ALLOWED}.",
            labels=["queue", "status"])
        access = memo.options.queue_access
        for (queue, status), value in sorted(Counter(
                (r.queue if access.allows(r.namespace, r.queue) else NOT_ALLOWED,
                 r.status.get("status") or "pending") for r in memo.registry).items()):
            by_status.add_metric([queue, status], value)
        yield by_status
        yield GaugeMetricFamily(f"{PREFIX}status_dirty",
                                "Job resources waiting for a status sync.",
                                value=len(memo.mirror.dirty))
        autoscaler = memo.autoscaler
        yield GaugeMetricFamily(f"{PREFIX}worker_deployments", "Autoscaled worker Deployments.",
                                value=len(autoscaler.deployments))
        depth = GaugeMetricFamily(
            f"{PREFIX}queue_depth", "Jobs queued-and-due plus active per queue, as the "
            "autoscaler last saw them (what it sizes workers for).", labels=["queue"])
        active = GaugeMetricFamily(
            f"{PREFIX}queue_active_jobs", "Active (running or aborting) jobs per queue, as "
            "the autoscaler last saw them.", labels=["queue"])
        for queue, (seen_depth, seen_active) in sorted(autoscaler.seen.items()):
            depth.add_metric([queue], seen_depth)
            active.add_metric([queue], seen_active)
        yield depth
        yield active
        decisions = CounterMetricFamily(
            f"{PREFIX}scaling_decisions", "Replica changes the autoscaler applied, by queue "
            "and direction (up, down).", labels=["queue", "direction"])
        for (queue, direction), value in sorted(autoscaler.decisions.items()):
            decisions.add_metric([queue, direction], value)
        yield decisions
        desired = GaugeMetricFamily(
            f"{PREFIX}desired_replicas", "Replicas the autoscaler wants per worker Deployment "
            "(after stabilisation).", labels=["namespace", "deployment"])
        for (namespace, name), value in sorted(autoscaler.desired.items()):
            desired.add_metric([namespace, name], value)
        yield desired


def registry_for(memo: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(OperatorCollector(memo))
    return registry


def render(memo: Any) -> str:
    """The metrics in Prometheus' text format."""
    return generate_latest(registry_for(memo)).decode()


def leader_gauge(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}leader", "1 on the replica that acts (holds the "
                             "Lease, or runs without leader election), 0 on a standby.",
                             value=value)


class _StandbyCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield leader_gauge(0)


@contextlib.asynccontextmanager
async def standby_metrics(host: str, port: int | None) -> AsyncIterator[None]:
    """While waiting for the Lease: /metrics with `podq_operator_leader 0` on the
    operator's metrics port (the leader's metrics take the port over once it leads)."""
    if port is None:
        yield
        return
    registry = CollectorRegistry()
    registry.register(_StandbyCollector())
    async with serving(host, port, "/metrics", _scrape(registry)):
        yield


async def serve_metrics(memo: Any, host: str, port: int) -> None:
    async with serving(host, port, "/metrics", _scrape(registry_for(memo))):
        await asyncio.Event().wait()


def _scrape(registry: CollectorRegistry) -> Handler:
    async def handle(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
    return handle


@contextlib.asynccontextmanager
async def serving(host: str | None, port: int | None, path: str,
                  handler: Handler) -> AsyncIterator[None]:
    """An HTTP server answering GET `path` with `handler`, while the block runs (the
    metrics endpoints, and the liveness probe of a standby: main.py)."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield
    finally:
        await runner.cleanup()
