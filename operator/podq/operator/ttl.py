"""ttlSecondsAfterFinished: a finished Job resource is deleted once its ttl has passed
since it finished, as batch/v1's TTL-after-finished controller does. One timer per
resource, set when the status writer (mirror.py) sees it finished."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from kubernetes_asyncio import client

from podq.operator.jobspec import rfc3339_to_epoch
from podq.operator.kube import is_status
from podq.operator.names import GROUP, JOBS, VERSION
from podq.operator.registry import JobRegistry, JobResource
from podq.operator.status import is_finished

log = logging.getLogger("podq.operator")


class FinishedTtl:
    """The deletion timers of finished resources; `counts["expired"]` counts deletions."""

    def __init__(self, custom: client.CustomObjectsApi, registry: JobRegistry,
                 counts: Counter[str]) -> None:
        self.custom = custom
        self.registry = registry
        self.counts = counts
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def schedule(self, resource: JobResource, now: float) -> None:
        """Start the resource's timer if it is finished and has a ttl (once)."""
        ttl = resource.spec.get("ttlSecondsAfterFinished")
        if ttl is None or not is_finished(resource.status) or resource.uid in self._timers:
            return
        completed = resource.status.get("completedTime")
        finished_at = rfc3339_to_epoch(completed) if completed else now
        delay = max(0.0, finished_at + ttl - now)
        self._timers[resource.uid] = asyncio.get_running_loop().call_later(
            delay, lambda: asyncio.ensure_future(self._expire(resource))
        )

    async def _expire(self, resource: JobResource) -> None:
        self._timers.pop(resource.uid, None)
        if resource.uid not in self.registry.by_uid:
            return
        try:
            await self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, resource.namespace, JOBS, resource.name,
                body={"preconditions": {"uid": resource.uid}, "propagationPolicy": "Background"},
            )
            self.counts["expired"] += 1
            log.info("deleted %s/%s: ttlSecondsAfterFinished passed",
                     resource.namespace, resource.name)
        except Exception as error:
            if not is_status(error, 404, 409):
                log.warning("could not delete expired %s: %s", resource.name, error)

    def forget(self, uid: str) -> None:
        timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
