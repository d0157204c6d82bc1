"""Every example (examples/, examples/gitops/, the chart's NOTES.txt) calls only
functions of the one example module, worker_image/podq_hello.py: what the worker image
and ./scripts/demo run."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def registered() -> set[str]:
    spec = importlib.util.spec_from_file_location(
        "podq_hello", ROOT / "worker_image" / "podq_hello.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {f.__name__ for f in module.settings["functions"]}


def functions_of(document: dict) -> list[str]:
    if document.get("kind") == "Job":
        return [document["spec"]["function"]]
    if document.get("kind") == "CronJob":
        return [document["spec"]["jobTemplate"]["spec"]["function"]]
    return []


def test_example_manifests_call_only_registered_functions() -> None:
    known = registered()
    called: dict[str, list[str]] = {}
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and str(document.get("apiVersion", "")).startswith("podq.dev/"):
                called[str(path.relative_to(ROOT))] = functions_of(document)
    notes = (ROOT / "charts" / "podq" / "templates" / "NOTES.txt").read_text()
    called["NOTES.txt"] = re.findall(r"^\s*function:\s*(\S+)\s*$", notes, re.M)
    assert len(called) >= 7 and all(called.values()), called
    unknown = {where: names for where, names in called.items() if set(names) - known}
    assert unknown == {}, f"functions podq_hello.py does not register: {unknown}"
    # every example function is used by some example
    assert {"add", "count_words", "flaky", "report", "echo", "sleep"} <= {
        name for names in called.values() for name in names}
