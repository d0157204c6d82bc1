"""Helpers shared by the chart tests: paths, our helm binary, running it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from podq.testing import run_control_plane_script

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podq"
# the API server version our control plane runs; `helm template` checks kubeVersion with it
KUBE_VERSION = "1.37.2"


def find_helm() -> str:
    return find_binary("helm")


def find_binary(name: str) -> str:
    """helm or promtool: PODQ_HELM / PODQ_PROMTOOL, else what `scripts/control-plane
    install` names (built once from Go modules, then cached)."""
    explicit = os.environ.get(f"PODQ_{name.upper()}")
    if explicit:
        return explicit
    result = run_control_plane_script("install")
    if result.returncode != 0:
        raise RuntimeError(
            f"`scripts/control-plane install` failed (exit {result.returncode}):\n"
            f"{result.stderr}{result.stdout}"
        )
    match = re.search(rf"^{name}\s+(\S+)\s*$", result.stdout, flags=re.M)
    if not match:
        raise RuntimeError(f"`scripts/control-plane install` named no {name}:\n{result.stdout}")
    return match.group(1)


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/podq-helm/cache",
           "HELM_CONFIG_HOME": "/tmp/podq-helm/config", "HELM_DATA_HOME": "/tmp/podq-helm/data"}
    result = subprocess.run(
        [helm, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stderr}{result.stdout}")
    return result


def check_notes(text: str) -> None:
    """No repository-relative paths (meaningless from a chart repository); links are
    https; raw-file URLs name files (that URL form serves no folders)."""
    assert not re.search(r"(?<![/\w])(docs|worker_image|crds|examples)/", text), text
    for url in re.findall(r"https?://[^\s)]+", text):
        assert url.startswith("https://"), url
        if "raw.githubusercontent.com" in url:
            assert url.endswith(".yaml"), url
