"""`podq cronjob run NAME`: a child Job of a CronJob, now, like `kubectl create job
--from=cronjob/NAME` (imported lazily by the CLI, which needs no Kubernetes client)."""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime
from typing import Any

from podq.operator import kube
from podq.operator.cronjobs import child_body
from podq.operator.names import ANNOTATION_INSTANTIATE, CRONJOBS, GROUP, JOBS, VERSION

_SUFFIX = string.ascii_lowercase + string.digits


class CronJobNotFound(LookupError):
    pass


def manual_name(cron: str) -> str:
    """NAME-manual-xxxxx, at most 63 characters."""
    return f"{cron[:50]}-manual-" + "".join(secrets.choice(_SUFFIX) for _ in range(5))


def manual_child(cron: dict[str, Any], name: str, now: datetime) -> dict[str, Any]:
    """The Job a firing at `now` would create, marked as made by hand: it has the
    CronJob as owner (history limits and the active list count it) but fills no slot
    of the schedule."""
    body = child_body(cron, name, now)
    body["metadata"]["annotations"][ANNOTATION_INSTANTIATE] = "manual"
    return body


async def run_cronjob(cron_name: str, namespace: str, job_name: str | None = None
                      ) -> dict[str, Any]:
    """Create the Job; returns it as the API server stored it. Uses the in-cluster
    config in a pod, else $KUBECONFIG / ~/.kube/config."""
    clients = await kube.connect(pool_size=1)
    try:
        try:
            cron = await clients.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, CRONJOBS, cron_name)
        except Exception as error:
            if kube.is_status(error, 404):
                raise CronJobNotFound(
                    f"cronjob.{GROUP}/{cron_name} not found in namespace {namespace}"
                ) from None
            raise
        body = manual_child(cron, job_name or manual_name(cron_name), datetime.now(UTC))
        return await clients.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, JOBS, body)
    finally:
        await clients.close()
