"""The chart as a chart repository serves it: `helm template` with no flags, NOTES.txt
without repository-relative paths, Artifact Hub metadata and icon, the generated README,
the operator's probes and extraObjects."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml
from chart_helpers import CHART, ROOT, check_notes, run_helm


def test_helm_template_works_with_no_flags(helm_bin: str) -> None:
    # helm's default Kubernetes version (stamped at build time from client-go) satisfies
    # the chart's kubeVersion: no --kube-version needed
    out = run_helm(helm_bin, "template", str(CHART)).stdout
    kinds = {doc["kind"] for doc in yaml.safe_load_all(out) if doc}
    assert {"Deployment", "CustomResourceDefinition"} <= kinds
    version = run_helm(helm_bin, "version", "--template", "{{ .Version }}").stdout
    assert re.fullmatch(r"v3\.\d+\.\d+", version), version


def test_helm_lint_is_clean(helm_bin: str) -> None:
    result = run_helm(helm_bin, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


def test_notes_template_links(helm_bin: str) -> None:
    # rendered by real installs in tests/kube/test_chart_crd_adoption.py; here its source
    source = (CHART / "templates" / "NOTES.txt").read_text()
    check_notes(source.replace("{{ .Chart.AppVersion }}", "0.1.0"))
    for crd in sorted(p.name for p in (ROOT / "crds").glob("*.yaml")):
        assert f"/crds/{crd}" in source


def test_artifact_hub_metadata_and_icon() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["icon"].startswith("https://")
    assert chart["icon"].endswith("/charts/podq/icon.svg")
    icon = (CHART / "icon.svg").read_text()
    assert icon.lstrip().startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in icon
    notes = chart["annotations"]
    images = {i["name"]: i["image"] for i in yaml.safe_load(notes["artifacthub.io/images"])}
    app = chart["appVersion"]
    embedded = values["redis"]["embedded"]["image"]
    assert images == {
        "operator": f"{values['operator']['image']['repository']}:{app}",
        "worker": f"{values['workers']['image']['repository']}:{app}",
        "redis": f"{embedded['repository']}:{embedded['tag']}",
    }
    crds = {c["name"] for c in yaml.safe_load(notes["artifacthub.io/crds"])}
    assert crds == {p.stem for p in (ROOT / "crds").glob("*.yaml")}
    links = yaml.safe_load(notes["artifacthub.io/links"])
    assert all(link["url"].startswith("https://") for link in links)
    assert notes["artifacthub.io/license"] == "MIT"


def test_readme_is_generated_from_the_current_values() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "chart-readme"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    readme = (CHART / "README.md").read_text()
    # every documented value is in the table, with its default
    assert "| `operator.readinessProbe` | object |" in readme
    assert '| `metrics.prometheusRule.waiting.seconds` | int | `600` |' in readme
    assert "| `extraObjects` | list | `[]` |" in readme


def test_operator_readiness_probe(render) -> None:
    objs = render({})
    operator = next(o for o in objs if o["kind"] == "Deployment"
                    and o["metadata"]["name"] == "podq-operator")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    ready = container["readinessProbe"]
    assert ready["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert ready["periodSeconds"] == 5
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert f"--liveness=http://0.0.0.0:{ports['healthz']}/healthz" in container["args"]


def test_operator_startup_probe_tolerates_a_slow_start(render, render_error) -> None:
    """The operator takes about 20 s to start on a loaded node: a startupProbe on the
    liveness endpoint holds the liveness probe off (minutes, not its first check at 10 s),
    and liveness then restarts a hung operator as before."""
    objs = render({})
    operator = next(o for o in objs if o["kind"] == "Deployment"
                    and o["metadata"]["name"] == "podq-operator")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    startup, live = container["startupProbe"], container["livenessProbe"]
    assert startup["httpGet"] == live["httpGet"] == {"path": "/healthz", "port": "healthz"}
    allowed_s = startup.get("initialDelaySeconds", 0) + startup["periodSeconds"] * startup[
        "failureThreshold"]
    assert allowed_s >= 120, startup  # six times the 20 s measured under load
    assert startup["timeoutSeconds"] >= 5
    # once started, a hung operator is still restarted within a minute or so
    assert live.get("initialDelaySeconds", 0) + live["periodSeconds"] * live[
        "failureThreshold"] <= 90, live

    # set from values, checked by the schema
    objs = render({"operator": {"startupProbe": {"periodSeconds": 10, "failureThreshold": 6}}})
    operator = next(o for o in objs if o["kind"] == "Deployment"
                    and o["metadata"]["name"] == "podq-operator")
    startup = operator["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert (startup["periodSeconds"], startup["failureThreshold"]) == (10, 6)
    assert "startupProbe" in render_error({"operator": {"startupProbe": {"failureThreshold": 0}}})


def test_extra_objects_maps_and_templated_strings(render) -> None:
    objs = render({"extraObjects": [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "{{ .Release.Name }}-extra"}, "data": {"a": "1"}},
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: '{{ .Release.Name }}-s'\n"
        "  namespace: {{ .Release.Namespace }}\nstringData:\n  k: v\n",
    ]}, release="rel", namespace="ns1")
    extra = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    assert extra[("ConfigMap", "rel-extra")]["data"] == {"a": "1"}
    assert extra[("Secret", "rel-s")]["metadata"]["namespace"] == "ns1"
