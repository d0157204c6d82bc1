"""The webhook's verdicts (podq.operator.admission) on AdmissionReview bodies, without
the API server: tests/kube/test_webhook.py has them through kubectl."""

from __future__ import annotations

from typing import Any

import pytest

from podq.operator.access import QueueAccess
from podq.operator.admission import review

OPEN = QueueAccess(open=True)


def admission(kind: str, spec: Any, *, operation: str = "CREATE", old: Any = None,
              namespace: str = "team-a") -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": "u-1", "kind": {"group": "podq.dev", "version": "v1alpha1", "kind": kind},
        "operation": operation, "namespace": namespace, "object": {"spec": spec}}
    if old is not None:
        request["oldObject"] = {"spec": old}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": request}


def verdict(body: dict[str, Any], access: QueueAccess = OPEN) -> dict[str, Any]:
    answer = review(body, access)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "u-1"
    return answer["response"]


CRON = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"function": "noop"}}}


@pytest.mark.parametrize(("kind", "spec", "field"), [
    ("CronJob", {**CRON, "schedule": "0 0 31 2 *"}, "spec.schedule"),
    ("CronJob", {**CRON, "schedule": "5-1 * * * *"}, "spec.schedule"),
    ("CronJob", {**CRON, "timeZone": "Mars/Olympus"}, "spec.timeZone"),
    ("CronJob", {**CRON, "jobTemplate": {"spec": {"function": "f", "retryBackoff": "x"}}},
     "spec.jobTemplate.spec.retryBackoff"),
    ("CronJob", {**CRON, "jobTemplate": {"spec": {"function": "f", "kwargs": {
        "b": "x" * 70_000}}}}, "spec.jobTemplate.spec.kwargs"),
    ("Job", {"function": "f", "retryBackoff": "fast"}, "spec.retryBackoff"),
    ("Job", {"function": "f", "retryBackoff": [1]}, "spec.retryBackoff"),
    ("Job", {"function": "f", "retryBackoff": 2592001}, "spec.retryBackoff"),
    ("Job", {"function": "f", "ttl": 10**16}, "spec.ttl"),
    ("Job", {"function": "f", "retryDelay": 1e12}, "spec.retryDelay"),
    ("Job", {"function": "f", "scheduled": "0000-01-01T00:00:00Z"}, "spec.scheduled"),
])
def test_refusals_name_the_field(kind: str, spec: dict[str, Any], field: str) -> None:
    response = verdict(admission(kind, spec))
    assert response["allowed"] is False
    assert response["status"]["code"] == 422 and response["status"]["reason"] == "Invalid"
    assert response["status"]["message"].startswith(field + " "), response["status"]


@pytest.mark.parametrize(("kind", "spec"), [
    ("CronJob", {**CRON, "schedule": "0 0 29 2 *", "timeZone": "Europe/Paris"}),
    ("CronJob", {**CRON, "schedule": "@weekly"}),
    ("Job", {"function": "f", "retryBackoff": True}),
    ("Job", {"function": "f", "retryBackoff": 0.5, "ttl": 30}),
])
def test_good_specs_are_allowed(kind: str, spec: dict[str, Any]) -> None:
    response = verdict(admission(kind, spec))
    assert response == {"uid": "u-1", "allowed": True}


def test_an_update_keeping_the_spec_passes_even_if_the_spec_is_bad() -> None:
    bad = {**CRON, "schedule": "61 * * * *"}
    assert verdict(admission("CronJob", bad, operation="UPDATE", old=bad))["allowed"]
    changed = verdict(admission("CronJob", bad, operation="UPDATE", old=CRON))
    assert not changed["allowed"] and "spec.schedule" in changed["status"]["message"]
    assert verdict(admission("CronJob", bad, operation="DELETE"))["allowed"]


def test_queue_not_granted_to_the_namespace() -> None:
    access = QueueAccess.parse(["default=team-a"], None)
    spec = {"function": "f", "queue": "reports"}
    response = verdict(admission("Job", spec), access)
    assert not response["allowed"] and response["status"]["message"].startswith("spec.queue")
    template = verdict(admission("CronJob", {**CRON, "jobTemplate": {"spec": spec}}), access)
    assert template["status"]["message"].startswith("spec.jobTemplate.spec.queue")
    assert verdict(admission("Job", {"function": "f"}), access)["allowed"]


def test_a_check_that_breaks_allows_with_a_warning() -> None:
    """The operator judges again; the webhook never blocks for its own bug."""
    response = verdict(admission("CronJob", {**CRON, "jobTemplate": "not an object"}))
    assert response["allowed"] is True
    assert "could not check" in response["warnings"][0]


def test_after_naming_itself_is_refused_in_a_cron_template_allowed() -> None:
    body = admission("Job", {"function": "noop", "after": ["a", "me"]})
    body["request"]["object"]["metadata"] = {"name": "me"}
    refused = verdict(body)
    assert not refused["allowed"] and "itself" in refused["status"]["message"]
    body["request"]["object"]["metadata"] = {"name": "other"}
    assert verdict(body)["allowed"]
    cron = {**CRON, "jobTemplate": {"spec": {"function": "noop", "after": ["a"]}}}
    assert verdict(admission("CronJob", cron))["allowed"]  # each child waits for a
