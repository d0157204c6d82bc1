"""The chart's PrometheusRule and Grafana dashboard: checked and unit-tested with the real
promtool (built from github.com/prometheus/prometheus by scripts/control-plane), and
every metric they read is one that podq exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from chart_helpers import find_binary
from prometheus_client import CollectorRegistry

from podq import Queue
from podq.metrics import WorkerMetrics
from podq.operator.access import OPEN_ACCESS
from podq.operator.metrics import OperatorCollector

HERE = Path(__file__).resolve().parent
ON = {"metrics": {"enabled": True, "prometheusRule": {"enabled": True},
                  "grafanaDashboard": {"enabled": True}},
      "workers": {"metrics": {"enabled": True}}}


@pytest.fixture(scope="module")
def promtool() -> str:
    try:
        return find_binary("promtool")
    except RuntimeError as err:
        pytest.fail(str(err), pytrace=False)


def run(promtool: str, *args: str, cwd: Path) -> str:
    result = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, [o["metadata"]["name"] for o in found]
    return found[0]


def test_off_by_default(render) -> None:
    kinds = {o["kind"] for o in render({})}
    assert "PrometheusRule" not in kinds
    assert not [o for o in render({}) if o["metadata"]["name"].endswith("-dashboard")]


def test_rules_pass_promtool_check_and_unit_tests(render, promtool: str,
                                                   tmp_path: Path) -> None:
    rule = one(render(ON), "PrometheusRule")
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} == {
        "PodqJobsWaitingTooLong", "PodqJobFailureRateHigh", "PodqQueueWithoutWorkers"}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    shutil.copy(HERE / "monitoring" / "alerts.test.yaml", tmp_path)
    out = run(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert "SUCCESS: 3 rules found" in out
    out = run(promtool, "test", "rules", "alerts.test.yaml", cwd=tmp_path)
    assert "SUCCESS" in out


def test_rules_over_unscraped_metrics_are_refused(render, render_error) -> None:
    """Alerts need the metrics they read: without the workers', PodqQueueWithoutWorkers
    would fire whenever a queue has work; without the operator's, it never would."""
    rule = {"prometheusRule": {"enabled": True}}
    error = render_error({"metrics": rule, "workers": {"metrics": {"enabled": True}}})
    assert "metrics.prometheusRule needs metrics.enabled" in error
    error = render_error({"metrics": {**rule, "enabled": True}})
    assert 'pool "default" has metrics.enabled false' in error
    error = render_error({**ON, "workers": {"metrics": {"enabled": True}, "pools": [
        {"name": "mail", "metrics": {"enabled": False}}]}})
    assert 'pool "mail" has metrics.enabled false' in error
    # no pool in this release (workers run elsewhere): the chart cannot tell, it renders
    assert one(render({**ON, "workers": {"enabled": False}}), "PrometheusRule")


def test_rule_thresholds_come_from_values(render) -> None:
    rule = one(render({**ON, "metrics": {**ON["metrics"], "prometheusRule": {
        "enabled": True, "labels": {"release": "kube-prometheus"},
        "alertLabels": {"severity": "page", "team": "data"},
        "waiting": {"seconds": 60, "for": "1m"},
        "failureRate": {"ratio": 0.5, "window": "30m", "for": "2m"}}}}), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert rules["PodqJobsWaitingTooLong"]["expr"].endswith("> 60")
    assert rules["PodqJobsWaitingTooLong"]["for"] == "1m"
    assert "[30m]" in rules["PodqJobFailureRateHigh"]["expr"]
    assert rules["PodqJobFailureRateHigh"]["expr"].endswith("> 0.5")
    assert all(r["labels"] == {"severity": "page", "team": "data"} for r in rules.values())


def dashboard_of(objs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    config = next(o for o in objs if o["kind"] == "ConfigMap"
                  and o["metadata"]["name"].endswith("-dashboard"))
    return config, json.loads(config["data"]["podq.json"])


def test_dashboard_configmap_and_its_queries_parse(render, promtool: str,
                                                   tmp_path: Path) -> None:
    config, dashboard = dashboard_of(render(ON))
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["uid"] == "podq" and dashboard["panels"]
    exprs = dashboard_exprs(dashboard)
    # promtool parses PromQL of rules: each query as a recording rule, Grafana's
    # variables replaced by what they stand for
    rules = [{"record": f"podq:dashboard:{i}",
              "expr": e.replace("$__rate_interval", "5m").replace('"$queue"', '".*"')}
             for i, e in enumerate(exprs)]
    (tmp_path / "dashboard-rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run(promtool, "check", "rules", "dashboard-rules.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in out
    moved, _ = dashboard_of(render({**ON, "metrics": {**ON["metrics"], "grafanaDashboard": {
        "enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "Jobs"}}}}))
    assert moved["metadata"]["namespace"] == "monitoring"
    assert moved["metadata"]["annotations"] == {"grafana_folder": "Jobs"}


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def exported_names(redis_url: str) -> set[str]:
    """Every series name podq's worker and operator metrics produce."""
    registry = CollectorRegistry()
    worker = WorkerMetrics(Queue.from_url(redis_url, name="names"), ["f"], 1, lambda: 0)
    memo = SimpleNamespace(
        mirror=SimpleNamespace(counts={}, dirty=set()), registry=[],
        options=SimpleNamespace(queue_access=OPEN_ACCESS),
        autoscaler=SimpleNamespace(deployments={}, seen={}, decisions={}, desired={}))
    registry.register(OperatorCollector(memo))
    names = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "info": ("_info",), "gauge": ("",)}
    for family in [*worker.registry.collect(), *registry.collect()]:
        names |= {family.name + s for s in suffixes[family.type]}
    return names


def test_alerts_and_dashboard_read_only_metrics_podq_exports(render, redis_url: str) -> None:
    objs = render(ON)
    rule = one(objs, "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    exprs += dashboard_exprs(dashboard_of(objs)[1])
    used = {m for e in exprs for m in re.findall(r"\bpodq_[a-z_]+", e)}
    assert used, exprs
    assert used <= exported_names(redis_url), used - exported_names(redis_url)
    for name in ("podq_job_queue_wait_seconds_bucket", "podq_queue_waiting_seconds",
                 "podq_operator_job_resources_by_status"):
        assert name in used


def test_dashboard_groups_by_labels_its_metrics_have_and_keeps_objects_apart(
    render, redis_url: str,
) -> None:
    """Each `by (...)` of a dashboard query names labels its metric has, and a gauge of
    one Kubernetes object keeps every label naming it: two releases' `podq-worker`
    Deployments in two namespaces are two series, not one sum."""
    registry = CollectorRegistry()
    memo = SimpleNamespace(
        mirror=SimpleNamespace(counts={}, dirty=set()), registry=[],
        options=SimpleNamespace(queue_access=OPEN_ACCESS),
        autoscaler=SimpleNamespace(deployments={}, seen={"q": (1, 0)}, decisions={},
                                   desired={("a", "podq-worker"): 1}))
    registry.register(OperatorCollector(memo))
    worker = WorkerMetrics(Queue.from_url(redis_url, name="names"), ["f"], 1, lambda: 0)
    labels: dict[str, set[str]] = {  # the worker's metrics, by their declared labels
        metric._name: set(metric._labelnames) for metric in vars(worker).values()
        if hasattr(metric, "_labelnames")}
    for family in [*worker.registry.collect(), *registry.collect()]:  # the rest (the
        # operator's, the worker's info) by the labels of their samples
        labels.setdefault(family.name, set(getattr(family, "_labelnames", ())) | {
            label for sample in family.samples for label in sample.labels})
    exprs = dashboard_exprs(dashboard_of(render(ON))[1])
    checked = 0
    for expr in exprs:
        for by, name in re.findall(r"by \(([^)]*)\) \((?:rate\()?(podq_[a-z_]+)", expr):
            grouped = {label.strip() for label in by.split(",")} - {"le"}
            base = re.sub(r"_(total|bucket|info)$", "", name)
            assert grouped <= labels[base], (expr, grouped - labels[base])
            checked += 1
            if name == "podq_operator_desired_replicas":
                assert grouped >= {"namespace", "deployment"}, expr
    assert checked >= 10, exprs
