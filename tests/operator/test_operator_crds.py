"""The CRD manifests in crds/ agree with themselves and with the engine's defaults."""

from __future__ import annotations

from pathlib import Path

import yaml

from podq.job import JOB_FIELDS

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


# spec fields of the resource only, not of the engine's Job
RESOURCE_ONLY = {"ttlSecondsAfterFinished", "after"}
JSON_TYPES = {int: "integer", float: "number", str: "string"}


def test_job_spec_is_the_engine_job_fields() -> None:
    """Every spec field is a Job field declared with its resource name (podq.job), of
    the same type and default; timeout has no default, so that leaving it out means
    "no choice" (the worker's default timeout), which a default of 10 would hide."""
    spec = schema(load("jobs.podq.dev.yaml"))["properties"]["spec"]
    fields = {f.use.resource: f for f in JOB_FIELDS.values() if f.use.resource}
    assert set(spec["properties"]) - RESOURCE_ONLY == set(fields)
    assert spec["required"] == [f.use.resource for f in fields.values() if f.required]
    for name, field in fields.items():
        prop = spec["properties"][name]
        if name == "queue":  # the queue's name, not a Queue object
            assert (prop["type"], prop["default"]) == ("string", "default")
        elif name == "scheduled":  # a time, where the engine takes epoch seconds
            assert (prop["type"], prop["format"]) == ("string", "date-time")
        elif field.type in JSON_TYPES:
            assert prop["type"] == JSON_TYPES[field.type], name
        elif name == "retryBackoff":  # true, false or seconds: no OpenAPI type for it
            assert field.type == bool | float and "type" not in prop
        else:
            assert prop["type"] == "object" and prop["x-kubernetes-preserve-unknown-fields"]
        if name in ("timeout", "key", "function", "scheduled", "retryBackoff"):
            assert "default" not in prop, name
        elif name not in ("queue", "kwargs", "meta"):
            assert prop["default"] == field.default, name


def test_names_and_categories() -> None:
    for name, shorts in (("jobs.podq.dev.yaml", "pqjob"), ("cronjobs.podq.dev.yaml", "pqcron")):
        names = load(name)["spec"]["names"]
        assert names["categories"] == ["podq"]
        assert shorts in names["shortNames"]


def test_every_default_is_stated_in_its_description() -> None:
    """`kubectl explain` shows descriptions, not defaults: each states its own."""
    def shown(value: object) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    for name in ("jobs.podq.dev.yaml", "cronjobs.podq.dev.yaml"):
        unstated = [
            path for path, node in walk(schema(load(name)))
            if "default" in node and f"Default: {shown(node['default'])}"
            not in " ".join(node["description"].split())
        ]
        assert unstated == [], f"{name}: defaults not in the description: {unstated}"
    timeout = schema(load("jobs.podq.dev.yaml"))["properties"]["spec"]["properties"]["timeout"]
    assert "10 seconds" in timeout["description"]  # the engine's default, though unset here


def test_printer_columns_show_state_at_a_glance() -> None:
    def columns(name: str) -> dict[str, dict]:
        version = load(name)["spec"]["versions"][0]
        return {c["name"]: c for c in version["additionalPrinterColumns"]}

    job = columns("jobs.podq.dev.yaml")
    assert {"Reason", "Duration", "Progress"} <= set(job)
    assert job["Progress"]["jsonPath"] == ".status.progressPercent"  # "42%", not 0.4166...
    cron = columns("cronjobs.podq.dev.yaml")
    assert {"TimeZone", "Suspend", "Active", "Last Schedule", "Next", "Reason"} <= set(cron)
    # a broken CronJob does not look healthy: its Ready reason says what stalls it
    assert cron["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert cron["Next"]["jsonPath"] == ".status.nextScheduleTime"
    # a future time in a "date" column prints as <invalid>
    assert cron["Next"]["type"] == "string"
