"""Prometheus metrics of the operator, served as text on /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

PREFIX = "podq_operator_"


def render(memo: Any) -> str:
    lines = []
    counts = memo.mirror.counts
    lines.append(f"# HELP {PREFIX}status_syncs_total Job status syncs by outcome.")
    lines.append(f"# TYPE {PREFIX}status_syncs_total counter")
    for outcome, value in sorted(counts.items()):
        lines.append(f'{PREFIX}status_syncs_total{{outcome="{outcome}"}} {value}')
    lines.append(f"# HELP {PREFIX}job_resources Job resources the operator watches.")
    lines.append(f"# TYPE {PREFIX}job_resources gauge")
    lines.append(f"{PREFIX}job_resources {len(memo.registry)}")
    lines.append(f"# HELP {PREFIX}status_dirty Job resources waiting for a status sync.")
    lines.append(f"# TYPE {PREFIX}status_dirty gauge")
    lines.append(f"{PREFIX}status_dirty {len(memo.mirror.dirty)}")
    lines.append(f"# HELP {PREFIX}worker_deployments Autoscaled worker Deployments.")
    lines.append(f"# TYPE {PREFIX}worker_deployments gauge")
    lines.append(f"{PREFIX}worker_deployments {len(memo.autoscaler.deployments)}")
    return "\n".join(lines) + "\n"


async def serve_metrics(memo: Any, port: int) -> None:
    async def handle(_request: web.Request) -> web.Response:
        return web.Response(text=render(memo), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", port)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
