"""The chart takes over CRDs first applied with `kubectl apply -f crds/`, as its README
says: `helm install --take-ownership`, or the documented label and annotations, also to
move CRDs kept by an uninstalled release to a new one. On a real API server; Job
resources created before stay untouched.

CRDs are cluster-scoped: this module runs its own control plane."""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

import yaml

from podq.testing import ControlPlane

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))
from chart_helpers import check_notes
from chart_install_helpers import helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podq"
CRDS = ("jobs.podq.dev", "cronjobs.podq.dev")


def readme_commands(release: str, namespace: str) -> list[list[str]]:
    """The chart README's `kubectl label` / `kubectl annotate` step, for this release."""
    text = (CHART / "README.md").read_text()
    block = re.search(r"```sh\n(kubectl label crd .*?)```", text, flags=re.S)
    assert block, "the README shows no kubectl label/annotate step"
    commands = block.group(1).replace("\\\n", " ")
    commands = commands.replace("release-name=podq", f"release-name={release}")
    commands = commands.replace("release-namespace=podq-system",
                                f"release-namespace={namespace}")
    return [line.split()[1:] for line in commands.splitlines() if line.strip()]


def owner(plane: ControlPlane, crd: str) -> tuple[str | None, str | None, str | None]:
    meta = plane.kubectl_json("get", "crd", crd)["metadata"]
    annotations = meta.get("annotations") or {}
    return ((meta.get("labels") or {}).get("app.kubernetes.io/managed-by"),
            annotations.get("meta.helm.sh/release-name"),
            annotations.get("meta.helm.sh/release-namespace"))


def test_helm_takes_over_crds_applied_with_kubectl(plane: ControlPlane, tmp_path: Path) -> None:
    plane.kubectl("apply", "-f", str(ROOT / "crds"))
    plane.kubectl("wait", "--for=condition=Established", *[f"crd/{c}" for c in CRDS],
                  "--timeout=60s")
    data = f"data-{uuid.uuid4().hex[:6]}"
    plane.kubectl("create", "namespace", data)
    plane.kubectl("apply", "-n", data, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "podq.dev/v1alpha1", "kind": "Job", "metadata": {"name": "kept"},
        "spec": {"function": "echo"}}))
    uid = plane.kubectl_json("get", "job.podq.dev/kept", "-n", data)["metadata"]["uid"]

    first, second = "podq-first", "podq-second"
    for ns in (first, second):
        plane.kubectl("create", "namespace", ns)
    # as the issue found it: Helm refuses objects it does not own
    refused = helm(plane, "install", "one", str(CHART), "-n", first, check=False)
    assert refused.returncode != 0
    assert "invalid ownership metadata" in refused.stderr, refused.stderr

    # 1. --take-ownership
    helm(plane, "install", "one", str(CHART), "-n", first, "--take-ownership")
    for crd in CRDS:
        assert owner(plane, crd) == ("Helm", "one", first)
    # what the release renders is what the CRDs now are: the chart's labels and keep policy
    meta = plane.kubectl_json("get", "crd", CRDS[0])["metadata"]
    assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
    assert meta["labels"]["app.kubernetes.io/instance"] == "one"

    # 2. uninstall keeps them (crds.keep); the README's step moves them to a new release
    helm(plane, "uninstall", "one", "-n", first)
    assert owner(plane, CRDS[0]) == ("Helm", "one", first)
    refused = helm(plane, "install", "two", str(CHART), "-n", second, check=False)
    assert refused.returncode != 0 and "invalid ownership metadata" in refused.stderr
    for command in readme_commands("two", second):
        plane.kubectl(*command)
    installed = helm(plane, "install", "two", str(CHART), "-n", second)
    check_notes(installed.stdout.split("NOTES:", 1)[1])
    for crd in CRDS:
        assert owner(plane, crd) == ("Helm", "two", second)
    helm(plane, "upgrade", "two", str(CHART), "-n", second)

    without = helm(plane, "install", "three", str(CHART), "-n", first, "--dry-run=server",
                   "--set", "crds.install=false").stdout.split("NOTES:", 1)[1]
    check_notes(without)
    assert "kubectl apply --server-side" in without

    # the resource made before any of this is untouched
    assert plane.kubectl_json("get", "job.podq.dev/kept", "-n", data)["metadata"]["uid"] == uid
