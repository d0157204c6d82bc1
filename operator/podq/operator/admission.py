"""Admission: what the CRD schema cannot check, judged at `kubectl apply`.

The validating webhook (webhook.py) answers the API server's AdmissionReview with these
functions, which are the very checks the operator makes afterwards (cron.parse_schedule,
jobspec.engine_fields, QueueAccess): a manifest refused here would be marked Failed or
Stalled by the operator, and one the webhook never saw (webhook down, failurePolicy
Ignore) still is. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from podq.operator.access import QueueAccess
from podq.operator.cron import InvalidCronSpec, parse_schedule
from podq.operator.jobspec import InvalidJobSpec, engine_fields, queue_name

API_VERSION = "admission.k8s.io/v1"
JUDGED_OPERATIONS = {"CREATE", "UPDATE"}
# the CRDs' CEL rules say the same (an older CRD may not have them)
SELF_AFTER = "spec.after names this Job itself; a Job cannot wait for itself"


def job_problem(spec: Mapping[str, Any], namespace: str, access: QueueAccess,
                path: str = "spec") -> str | None:
    """Why this Job spec cannot run, naming the field (`path` is where it sits), or None."""
    try:
        engine_fields(spec, f"{namespace}/admission")
    except InvalidJobSpec as invalid:
        return _rebase(invalid.message, path)
    refusal = access.refusal(namespace, queue_name(spec))
    return _rebase(refusal[1], path) if refusal else None


def cronjob_problem(spec: Mapping[str, Any], namespace: str, access: QueueAccess) -> str | None:
    """Why this CronJob spec cannot fire (schedule, time zone, its Job template), or None."""
    try:
        parse_schedule(str(spec.get("schedule") or ""), spec.get("timeZone"))
    except InvalidCronSpec as invalid:
        return invalid.message
    template = (spec.get("jobTemplate") or {}).get("spec") or {}
    return job_problem(template, namespace, access, "spec.jobTemplate.spec")


def _rebase(message: str, path: str) -> str:
    """A message naming `spec.x` names `<path>.x` instead."""
    return path + message[len("spec"):] if message.startswith("spec") else message


def judge(request: Mapping[str, Any], access: QueueAccess) -> str | None:
    """The refusal of one AdmissionRequest for a podq Job or CronJob, or None to allow."""
    if request.get("operation") not in JUDGED_OPERATIONS:
        return None
    new = request.get("object") or {}
    spec = new.get("spec") or {}
    if request.get("operation") == "UPDATE":
        # metadata and status changes (finalizers, kopf's annotations) of an object whose
        # spec stays as it was are never refused, even if it was admitted without us
        if spec == ((request.get("oldObject") or {}).get("spec") or {}):
            return None
    namespace = request.get("namespace") or (new.get("metadata") or {}).get("namespace") or ""
    kind = (request.get("kind") or {}).get("kind")
    if kind == "Job":
        if (new.get("metadata") or {}).get("name") in (spec.get("after") or ()):
            return SELF_AFTER
        return job_problem(spec, namespace, access)
    if kind == "CronJob":
        return cronjob_problem(spec, namespace, access)
    return None


def review(body: Mapping[str, Any], access: QueueAccess) -> dict[str, Any]:
    """The AdmissionReview answering `body` (an AdmissionReview carrying a request).

    A check that fails unexpectedly allows the object with a warning: the operator
    judges it again and marks it, so the webhook never blocks for its own bug.
    """
    request = body.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    try:
        problem = judge(request, access)
    except Exception as error:  # the operator checks again and marks it
        response["warnings"] = [f"podq admission could not check this object"
                                f" ({type(error).__name__}); the operator will"]
        problem = None
    if problem is not None:
        response["allowed"] = False
        response["status"] = {"code": 422, "reason": "Invalid", "message": problem}
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
