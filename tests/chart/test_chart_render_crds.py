"""The Helm chart's CRDs, rendered by our helm (`helm template`): exact copies of crds/,
kept on uninstall unless told otherwise, optional; and the packaged chart (`helm package`,
what a chart repository serves) renders the same, CRDs included."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from chart_helpers import CHART, KUBE_VERSION, ROOT, by_kind, run_helm

# ----------------------------------------------------------------- CRDs


def test_chart_crds_are_exact_copies_of_crds_folder() -> None:
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert source, "crds/ is empty"
    assert copies == source, (
        "charts/podq/files/crds/ differs from crds/: run  cp crds/*.yaml charts/podq/files/crds/"
    )


def test_rendered_crds_equal_crds_folder_plus_keep_annotation(render) -> None:
    crds = {o["metadata"]["name"]: o for o in by_kind(render(), "CustomResourceDefinition")}
    source = {}
    for path in (ROOT / "crds").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                source[doc["metadata"]["name"]] = doc
    assert sorted(crds) == sorted(source) == ["cronjobs.podq.dev", "jobs.podq.dev"]
    for name, rendered in crds.items():
        rendered = copy.deepcopy(rendered)
        meta = rendered["metadata"]
        assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        del meta["annotations"]
        for key in list(meta["labels"]):
            if key not in source[name]["metadata"].get("labels", {}):
                del meta["labels"][key]
        assert rendered == source[name], name


def test_crds_optional_and_keep_optional(render) -> None:
    assert not by_kind(render({"crds": {"install": False}}), "CustomResourceDefinition")
    crds = by_kind(render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert len(crds) == 2
    for crd in crds:
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})


# ----------------------------------------------------------------- package


def without_certificates(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rendering with the webhook's generated CA and certificate blanked (each render
    makes new ones)."""
    for o in objs:
        if o["kind"] == "Secret" and o["type"] == "kubernetes.io/tls":
            o["data"] = dict.fromkeys(o["data"], "")
        for hook in o.get("webhooks") or ():
            hook["clientConfig"].pop("caBundle", None)
    return objs


def test_packaged_chart_renders_the_same(helm_bin: str, tmp_path: Path, render) -> None:
    """What users install from a chart repository: `helm package` keeps files/crds/."""
    run_helm(helm_bin, "package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("podq-*.tgz")
    out = run_helm(helm_bin, "template", "podq", str(package), "--namespace", "podq-system",
                   "--kube-version", KUBE_VERSION).stdout
    from_package = [d for d in yaml.safe_load_all(out) if d]
    assert without_certificates(from_package) == without_certificates(render())
    assert len(by_kind(from_package, "CustomResourceDefinition")) == 2
