"""The pod-deletion-cost annotation on worker pods: written by the autoscaler, and taken
off again when a Deployment opts out of autoscaling (its label removed, or relabelled
to a queue granted to no namespace), so that a scale-down by its owner or an HPA is not
steered by a cost podq no longer keeps true.

Both go through pods/status, the one pod write the operator may make (its strategy
keeps the pod's spec; the chart's admission policy narrows it to this annotation:
docs/security.md). What podq wrote is told from a value set by someone else by the
pod's managedFields: the annotation belongs to the operator's field manager, written
through the status subresource.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from podq.operator.names import POD_DELETION_COST

log = logging.getLogger("podq.operator")

FIELD_MANAGER = "podq-operator"
# what operators before FIELD_MANAGER wrote under: the API client's default (its
# User-Agent), still through pods/status
LEGACY_FIELD_MANAGERS = frozenset({"OpenAPI-Generator"})
JSON_PATCH = "application/json-patch+json"
_COST_FIELD = f"f:{POD_DELETION_COST}"
_COST_POINTER = "/metadata/annotations/" + POD_DELETION_COST.replace("~", "~0").replace(
    "/", "~1")


def _selector(match_labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in match_labels.items())


async def live_costs(core: client.CoreV1Api, namespace: str,
                     match_labels: Mapping[str, str]) -> dict[str, str | None]:
    """The annotation on each pod the selector matches, but pods being deleted."""
    if not match_labels:
        return {}
    pods = await core.list_namespaced_pod(namespace, label_selector=_selector(match_labels))
    return {pod.metadata.name: (pod.metadata.annotations or {}).get(POD_DELETION_COST)
            for pod in pods.items if not pod.metadata.deletion_timestamp}


async def write_cost(core: client.CoreV1Api, namespace: str, pod: str, cost: int) -> bool:
    """Set a pod's deletion cost; False when the pod is gone."""
    try:
        await core.patch_namespaced_pod_status(
            pod, namespace, {"metadata": {"annotations": {POD_DELETION_COST: str(cost)}}},
            field_manager=FIELD_MANAGER)
    except ApiException as error:
        if error.status != 404:
            raise
        return False
    return True


@dataclass(frozen=True)
class ClearedCosts:
    """What clear_costs did on one Deployment's pods."""

    cleared: tuple[str, ...] = ()  # pods whose annotation, podq's, was removed
    kept: tuple[str, ...] = ()  # pods whose annotation someone else set: left as it is
    gone: tuple[str, ...] = ()  # pods deleted (or whose annotation changed) meanwhile
    failed: str = ""  # why none could be removed (no rights in that namespace, ...)

    def describe(self) -> str:
        """For the AutoscalingStopped Event."""
        if self.failed:
            return f"its pods' {POD_DELETION_COST} could not be removed ({self.failed})"
        kept = f", {len(self.kept)} set by others kept" if self.kept else ""
        return (f"the {POD_DELETION_COST} podq wrote was removed from"
                f" {len(self.cleared)} of its pods{kept}")


def written_by_podq(pod: Any) -> bool:
    """Whether the pod's deletion-cost annotation is the one the operator wrote: its
    field manager is the operator's, through pods/status (a value set since by kubectl
    or any other client belongs to that client)."""
    for entry in pod.metadata.managed_fields or ():
        if entry.subresource != "status" or (
                entry.manager != FIELD_MANAGER and entry.manager not in LEGACY_FIELD_MANAGERS):
            continue
        annotations = ((entry.fields_v1 or {}).get("f:metadata") or {}).get("f:annotations")
        if _COST_FIELD in (annotations or {}):
            return True
    return False


def of_deployment(pod: Any, deployment: str) -> bool:
    """Whether a ReplicaSet of that Deployment controls the pod (the Deployment names
    its ReplicaSets `<deployment>-<pod-template-hash>`, which its pods carry as a
    label): another Deployment's pods matching the same selector are not its own."""
    template_hash = (pod.metadata.labels or {}).get("pod-template-hash")
    return template_hash is not None and any(
        owner.controller and owner.kind == "ReplicaSet"
        and owner.name == f"{deployment}-{template_hash}"
        for owner in pod.metadata.owner_references or ())


async def clear_costs(core: client.CoreV1Api, namespace: str, deployment: str,
                      match_labels: Mapping[str, str]) -> ClearedCosts:
    """Remove the deletion-cost annotation podq wrote from the Deployment's pods; leave
    a value someone else set, and other Deployments' pods, alone. Each removal tests
    the value it read first (a JSON patch `test`), so one changed meanwhile is kept."""
    if not match_labels:
        return ClearedCosts()
    pods = await core.list_namespaced_pod(namespace, label_selector=_selector(match_labels))
    cleared: list[str] = []
    kept: list[str] = []
    gone: list[str] = []
    for pod in pods.items:
        value = (pod.metadata.annotations or {}).get(POD_DELETION_COST)
        if value is None or not of_deployment(pod, deployment):
            continue
        if not written_by_podq(pod):
            kept.append(pod.metadata.name)
            continue
        try:
            await core.patch_namespaced_pod_status(
                pod.metadata.name, namespace,
                [{"op": "test", "path": _COST_POINTER, "value": value},
                 {"op": "remove", "path": _COST_POINTER}],
                field_manager=FIELD_MANAGER, _content_type=JSON_PATCH)
        except ApiException as error:
            # gone, or no longer that value (the `test` failed: 422, as an admission
            # policy's denial is, which is no such thing)
            if error.status not in (404, 409, 422) or "denied" in str(error.body):
                raise
            gone.append(pod.metadata.name)
            continue
        cleared.append(pod.metadata.name)
    if cleared or kept:
        log.info("%s/%s opted out: pod-deletion-cost removed from %d pods, %d set by"
                 " others kept", namespace, deployment, len(cleared), len(kept))
    return ClearedCosts(tuple(cleared), tuple(kept), tuple(gone))
