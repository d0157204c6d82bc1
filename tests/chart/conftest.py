"""Fixtures for the chart tests that need no cluster: our helm binary, and rendering.

helm is the one `scripts/control-plane install` builds (cached) or PODQ_HELM names.
Nothing here is skipped: without helm the tests fail with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, KUBE_VERSION, find_helm, run_helm

CHART_TESTS = Path(__file__).resolve().parent
_helm: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Find (on a cold machine: build) helm before the first test, so the build is not cut
    short by the per-test timeout."""
    if config.option.collectonly or _helm:
        return
    if any(CHART_TESTS in item.path.resolve().parents for item in items):
        try:
            _helm["path"] = find_helm()
        except RuntimeError as err:
            _helm["error"] = str(err)


@pytest.fixture(scope="session")
def helm_bin() -> str:
    if "path" not in _helm and "error" not in _helm:
        try:
            _helm["path"] = find_helm()
        except RuntimeError as err:
            _helm["error"] = str(err)
    if "error" in _helm:
        pytest.fail(_helm["error"], pytrace=False)
    return _helm["path"]


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(helm_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """render(values_dict, namespace=..., release=...) -> the rendered objects."""
    folder = tmp_path_factory.mktemp("values")
    counter = iter(range(1_000_000))

    def _render(
        values: dict[str, Any] | None = None, *, release: str = "podq",
        namespace: str = "podq-system",
    ) -> list[dict[str, Any]]:
        values_file = folder / f"values-{next(counter)}.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        out = run_helm(
            helm_bin, "template", release, str(CHART), "--namespace", namespace,
            "--kube-version", KUBE_VERSION, "--values", str(values_file),
        ).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    return _render


@pytest.fixture(scope="session")
def render_error(helm_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """render_error(values_dict) -> helm's error text; fails the test if rendering worked."""
    folder = tmp_path_factory.mktemp("bad-values")
    counter = iter(range(1_000_000))

    def _render_error(values: dict[str, Any]) -> str:
        values_file = folder / f"values-{next(counter)}.yaml"
        values_file.write_text(yaml.safe_dump(values))
        result = run_helm(
            helm_bin, "template", "podq", str(CHART), "--kube-version", KUBE_VERSION,
            "--values", str(values_file), check=False,
        )
        assert result.returncode != 0, f"helm accepted {values}:\n{result.stdout[:2000]}"
        return result.stderr

    return _render_error
