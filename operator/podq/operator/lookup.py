"""Reading one Job resource for `podq status job.podq.dev/NAME` (imported lazily by the
CLI, so the plain CLI does not need the operator extra)."""

from __future__ import annotations

from typing import Any

from podq.job import Status
from podq.jobstate import iso_from_text
from podq.operator import kube
from podq.operator.names import GROUP, JOBS, VERSION


async def read_job_resource(name: str, namespace: str) -> dict[str, Any] | None:
    """The Job resource (as a dict), or None when it does not exist. Uses the in-cluster
    config in a pod, else $KUBECONFIG / ~/.kube/config."""
    clients = await kube.connect(pool_size=1)
    try:
        return await clients.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, JOBS, name)
    except Exception as error:
        if kube.is_status(error, 404):
            return None
        raise
    finally:
        await clients.close()


def job_state(body: dict[str, Any]) -> dict[str, Any]:
    """The fields `podq status` shows, from a Job resource's spec and status."""
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    return {
        "source": "resource",
        "resource": f"job.{GROUP}/{meta['name']}",
        "namespace": meta["namespace"],
        "queue": status.get("queue") or spec.get("queue") or "default",
        "key": status.get("jobKey"),
        "function": spec.get("function"),
        "status": status.get("status") or Status.NEW.value,
        "attempts": status.get("attempts", 0),
        "retries": spec.get("retries"),
        "progress": status.get("progress", 0.0),
        "queued": iso_from_text(status.get("queuedTime")),
        "started": iso_from_text(status.get("startedTime")),
        "completed": iso_from_text(status.get("completedTime")),
        "scheduled": iso_from_text(status.get("scheduledTime")),
        "worker": status.get("worker"),
        "result": status.get("result"),
        "error": status.get("error"),
    }
