"""The chart's `workers.limits` (docs/limits.md): rendered as `podq worker --limit`
arguments, read back by the real CLI parser; the schema refuses bad entries."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from podq.cli import build_parser
from podq.cli_worker import worker_limits
from podq.queue import QUEUE_LIMIT, Limit


def worker_args(objs: list[dict[str, Any]]) -> dict[str, argparse.Namespace]:
    return {o["metadata"]["name"]: build_parser().parse_args(
                ["worker", *o["spec"]["template"]["spec"]["containers"][0]["args"]])
            for o in objs
            if o["kind"] == "Deployment" and o["metadata"]["name"].startswith("podq-worker")}


def test_no_limits_by_default_leave_redis_alone(render) -> None:
    args = worker_args(render())["podq-worker"]
    assert args.limit is None and args.no_limits is False


def test_limits_become_worker_flags_per_pool(render) -> None:
    args = worker_args(render({"workers": {
        "limits": {"charge_card": {"concurrency": 3}, "send_email": {"rate": 100, "per": 60},
                   "*": {"concurrency": 50, "rate": 2000000, "per": 0.5, "burst": 4},
                   "hourly": {"rate": 7, "per": 3600}, "slow": {"rate": 1, "per": 1e8}},
        "pools": [{"name": "emails"},  # another queue: the default pool's limits are not its
                  {"name": "bulk", "limits": {"copy": {"rate": 5}}},
                  {"name": "cleared", "limits": {}}],
    }}))
    assert worker_limits(args["podq-worker"]) == {
        "charge_card": Limit(concurrency=3), "send_email": Limit(rate=100, per=60),
        QUEUE_LIMIT: Limit(concurrency=50, rate=2000000, per=0.5, burst=4),
        "hourly": Limit(rate=7, per=3600), "slow": Limit(rate=1, per=1e8)}
    assert args["podq-worker-emails"].limit is None
    assert not args["podq-worker-emails"].no_limits
    assert worker_limits(args["podq-worker-bulk"]) == {"copy": Limit(rate=5, per=60)}
    assert args["podq-worker-cleared"].no_limits and worker_limits(
        args["podq-worker-cleared"]) == {}


@pytest.mark.parametrize(("limits", "message"), [
    ({"a": {"concurrency": 0}}, "minimum"),
    ({"a": {"concurrency": "3"}}, "want integer"),
    ({"a": {"concurrency": 1.5}}, "want integer"),
    ({"a": {}}, "anyOf"),
    ({"a": {"per": 60}}, "anyOf"),
    ({"a": {"rate": 0}}, "minimum"),
    ({"a": {"rate": 5, "per": 0}}, "exclusiveMinimum"),
    ({"a": {"concurrency": 2, "burst": 3}}, "burst"),
    ({"a": {"concurrency": 2, "per": 3}}, "per"),
    ({"a": {"concurrency": 2, "parallel": 3}}, "'parallel' not allowed"),
    ({"a,b": {"concurrency": 1}}, "does not match pattern"),
    ({"a": "concurrency:3"}, "want object"),
])
def test_schema_refuses_bad_limits(render_error, limits, message) -> None:
    assert message in render_error({"workers": {"limits": limits}})
    assert message in render_error({"workers": {"pools": [{"name": "x", "limits": limits}]}})
