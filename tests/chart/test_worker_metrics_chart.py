"""The chart's worker metrics option: port, args the real CLI accepts, PodMonitor and
NetworkPolicy."""

from __future__ import annotations

from typing import Any

from podq.cli import build_parser

PEERS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def workers_of(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs
            if o["kind"] == kind and o["metadata"]["name"].startswith("podq-worker")}


def test_worker_metrics_off_by_default(render) -> None:
    objs = render({"networkPolicy": {"enabled": True}})
    container = workers_of(objs, "Deployment")["podq-worker"]["spec"]["template"]["spec"][
        "containers"][0]
    assert not any(a.startswith("--metrics-port") for a in container["args"])
    assert "ports" not in container
    assert not workers_of(objs, "PodMonitor")
    assert "ingress" not in workers_of(objs, "NetworkPolicy")["podq-worker"]["spec"]


def test_worker_metrics_port_podmonitor_and_network_policy(render) -> None:
    objs = render({
        "workers": {"metrics": {"enabled": True, "podMonitor": True},
                    "pools": [{"name": "emails", "metrics": {"port": 9200}},
                              {"name": "quiet", "metrics": {"enabled": False,
                                                            "podMonitor": False}}]},
        "networkPolicy": {"enabled": True, "metricsFrom": PEERS},
    })
    deployments = workers_of(objs, "Deployment")
    ports = {}
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = build_parser().parse_args(["worker", *container["args"]])
        ports[name] = args.metrics_port
        if args.metrics_port is not None:
            assert container["ports"] == [
                {"name": "metrics", "containerPort": args.metrics_port, "protocol": "TCP"}]
    # a pool's partial metrics override merges with the top-level one
    assert ports == {"podq-worker": 9100, "podq-worker-emails": 9200, "podq-worker-quiet": None}

    monitors = workers_of(objs, "PodMonitor")
    assert sorted(monitors) == ["podq-worker", "podq-worker-emails"]
    for name, monitor in monitors.items():
        assert monitor["spec"]["selector"] == deployments[name]["spec"]["selector"]
        assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics"}]

    policies = workers_of(objs, "NetworkPolicy")
    for name in ("podq-worker", "podq-worker-emails"):
        assert policies[name]["spec"]["ingress"] == [
            {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": PEERS}]
    assert "ingress" not in policies["podq-worker-quiet"]["spec"]


def test_worker_podmonitor_needs_metrics(render_error) -> None:
    message = render_error({"workers": {"metrics": {"podMonitor": True}}})
    assert "metrics.podMonitor needs metrics.enabled" in message


def test_worker_metrics_schema(render_error) -> None:
    assert "want integer" in render_error({"workers": {"metrics": {"port": "9100"}}})
    assert "'bogus'" in render_error({"workers": {"metrics": {"bogus": 1}}})
