"""The Helm chart's values checked by our helm (`helm template`): bad combinations and
schema violations fail with a clear message, values.yaml documents every schema key, and
the values shown in docs/install.md and the GitOps examples render."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from chart_helpers import CHART, ROOT, one


@pytest.mark.parametrize(("values", "message"), [
    ({"redis": {"url": ""}}, "set redis.url"),
    ({"redis": {"url": "redis://:secret@r:6379"}}, "holds a password"),
    ({"redis": {"url": "http://r:6379"}}, "/redis/url"),
    ({"redis": {"embedded": {"enabled": True}, "tls": {"enabled": True}}}, "external Redis"),
    ({"workers": {"longestJobTimeoutSeconds": 600, "terminationGracePeriodSeconds": 600}},
     "must be longer than longestJobTimeoutSeconds"),
    ({"workers": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas"),
    ({"workers": {"settings": ""}}, "needs settings"),
    ({"workers": {"pools": [{"name": "a"}, {"name": "a"}]}}, "two pools named"),
    ({"metrics": {"serviceMonitor": {"enabled": True}}}, "needs metrics.enabled"),
    ({"operator": {"leaderElection": {"enabled": False}}},
     "operator.replicas > 1 needs operator.leaderElection.enabled"),
    ({"operator": {"leaderElection": {"renewDeadlineSeconds": 9}}},
     "retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds"),
])
def test_bad_combinations_fail_with_a_clear_message(render_error, values, message) -> None:
    assert message in render_error(values)


# ----------------------------------------------------------------- schema


@pytest.mark.parametrize(("values", "message"), [
    ({"workerz": {}}, "additional properties 'workerz' not allowed"),
    ({"workers": {"concurency": 5}}, "additional properties 'concurency' not allowed"),
    ({"workers": {"pools": [{"name": "x", "concurrency": 5, "bogus": 1}]}}, "'bogus'"),
    ({"operator": {"watchNamespaces": "team-a"}}, "want array"),
    ({"workers": {"concurrency": "ten"}}, "want integer"),
    ({"workers": {"concurrency": 0}}, "minimum"),
    ({"workers": {"autoscaling": {"enabled": "yes"}}}, "want boolean"),
    ({"operator": {"logFormat": "xml"}}, "value must be one of"),
    ({"crds": {"install": "true"}}, "want boolean"),
    ({"redis": {"embedded": {"image": {"tag": 8}}}}, "want string"),
    ({"operator": {"watchNamespaces": ["Team_A"]}}, "does not match pattern"),
    ({"workers": {"queue": "a\n"}}, "does not match pattern"),  # RE2: `$` ends the text
    ({"operator": {"queueAccess": {"grants": {"a\n": ["x"]}}}}, "does not match pattern"),
])
def test_schema_rejects_unknown_keys_and_wrong_types(render_error, values, message) -> None:
    assert message in render_error(values)


def test_values_file_documents_every_schema_key() -> None:
    """values.yaml and values.schema.json describe the same keys (pools aside)."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], vals: Any, path: str) -> None:
        props = node.get("properties")
        if not props or not isinstance(vals, dict):
            return
        if node.get("additionalProperties") is False:
            extra = set(vals) - set(props)
            assert not extra, f"{path}: keys in values.yaml missing from the schema: {extra}"
        for key, sub in props.items():
            if key in vals:
                walk(sub, vals[key], f"{path}.{key}")
            elif key != "global":
                assert node is not schema or key in values, f"{path}.{key} not in values.yaml"

    walk(schema, values, "")


# ----------------------------------------------------------------- docs and examples


def chart_values_in(text: str) -> list[dict[str, Any]]:
    """The ```yaml blocks of a Markdown text that are chart values (top-level keys of
    values.yaml only)."""
    known = set(yaml.safe_load((CHART / "values.yaml").read_text()))
    found = []
    for block in text.split("```yaml\n")[1:]:
        doc = yaml.safe_load(block.split("```", 1)[0])
        if isinstance(doc, dict) and doc and set(doc) <= known:
            found.append(doc)
    return found


def test_values_shown_in_docs_install_render(render) -> None:
    snippets = chart_values_in((ROOT / "docs" / "install.md").read_text())
    assert len(snippets) >= 5
    for values in snippets:
        render(values)


def test_values_in_the_gitops_examples_render(render) -> None:
    app = yaml.safe_load((ROOT / "examples/gitops/argocd/podq-application.yaml").read_text())
    assert app["spec"]["source"]["path"] == "charts/podq"
    objs = render(app["spec"]["source"]["helm"]["valuesObject"])
    worker = one(objs, "Deployment", "podq-worker")
    assert "replicas" not in worker["spec"]
    # the ignored differences name the webhook's generated Secret and configuration
    # (release podq in podq-system, as the Application installs it)
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]
    for ignored in app["spec"]["ignoreDifferences"]:
        assert one(objs, ignored["kind"], ignored["name"])

    (release,) = [d for d in yaml.safe_load_all(
        (ROOT / "examples/gitops/flux/podq-helmrelease.yaml").read_text())
        if d["kind"] == "HelmRelease"]
    assert release["spec"]["chart"]["spec"]["chart"] == "./charts/podq"
    render(release["spec"]["values"])
