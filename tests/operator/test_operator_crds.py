"""The CRD manifests in crds/ agree with themselves and with the engine's defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from podq import Job

CRDS = Path(__file__).resolve().parents[2] / "crds"


def load(name: str) -> dict:
    return yaml.safe_load((CRDS / name).read_text())


def schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict, path: str = ""):
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")


def test_every_field_has_a_description() -> None:
    for name in ("jobs.podq.dev.yaml", "cronjobs.podq.dev.yaml"):
        missing = [
            path for path, node in walk(schema(load(name)))
            if not node.get("description") and path != ".metadata"  # the API server's own
        ]
        assert missing == [], f"{name}: fields without description: {missing}"


def test_cronjob_template_spec_is_the_job_spec() -> None:
    job_spec = schema(load("jobs.podq.dev.yaml"))["properties"]["spec"]
    template = schema(load("cronjobs.podq.dev.yaml"))["properties"]["spec"]["properties"][
        "jobTemplate"]["properties"]["spec"]
    assert template["properties"] == job_spec["properties"]
    assert template["required"] == job_spec["required"]


def test_job_defaults_match_the_engine() -> None:
    spec = schema(load("jobs.podq.dev.yaml"))["properties"]["spec"]["properties"]
    defaults = {name: field.get("default") for name, field in spec.items() if "default" in field}
    engine = {f.name: f.default for f in dataclasses.fields(Job)}
    assert defaults == {
        "queue": "default",
        "timeout": engine["timeout"],
        "heartbeat": engine["heartbeat"],
        "retries": engine["retries"],
        "ttl": engine["ttl"],
        "retryDelay": engine["retry_delay"],
        "priority": engine["priority"],
    }
    assert engine["retry_backoff"] is False and "default" not in spec["retryBackoff"]


def test_names_and_categories() -> None:
    for name, shorts in (("jobs.podq.dev.yaml", "pqjob"), ("cronjobs.podq.dev.yaml", "pqcron")):
        names = load(name)["spec"]["names"]
        assert names["categories"] == ["podq"]
        assert shorts in names["shortNames"]
