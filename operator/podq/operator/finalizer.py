"""The abort-on-delete finalizer of Job resources: added before a resource's job is
enqueued, so a resource deleted at any moment after its job exists (even while no
operator runs) waits for the abort; on deletion the job is aborted unless finished, its
claim released, then the finalizer removed. A resource gone without it (removed by
hand, deleted before it was added) has its job aborted all the same.

The status writer (mirror.py) adds and removes it in its passes, through its API limits;
the watch handler (handlers.py) aborts the job of a resource gone without it (gone()),
after which the queue of a queue's last resource is let go (queues.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client

from podq.operator.access import QueueAccess
from podq.operator.isolation import abort_readable
from podq.operator.jobs import release_claim
from podq.operator.kube import add_job_finalizer, remove_job_finalizer
from podq.operator.names import JOB_FINALIZER
from podq.operator.queues import QueuePool
from podq.operator.registry import JobRegistry, JobResource
from podq.operator.status import is_finished

log = logging.getLogger("podq.operator")


class Finalizer:
    """Adds and removes JOB_FINALIZER on Job resources, aborting the job of a deleted
    one; api runs one Kubernetes call within the writer's limits, mark has a resource
    looked at again in a next pass."""

    def __init__(
        self,
        custom: client.CustomObjectsApi,
        pool: QueuePool,
        registry: JobRegistry,
        access: QueueAccess,
        api: Callable[[Awaitable[Any]], Awaitable[Any]],
        mark: Callable[[str], None],
    ) -> None:
        self.custom = custom
        self.pool = pool
        self.registry = registry
        self.access = access
        self.api = api
        self.mark = mark

    async def hold(self, resource: JobResource) -> str:
        """Add our finalizer; the next pass enqueues the job."""
        if await self.api(add_job_finalizer(self.custom, resource.namespace, resource.name,
                                             resource.finalizers, JOB_FINALIZER)):
            resource.finalizers = [*resource.finalizers, JOB_FINALIZER]
        self.mark(resource.uid)  # enqueue next pass, or retry once the watch caught up
        return "finalized"

    async def release(self, resource: JobResource) -> str:
        """A resource marked for deletion: abort its job unless finished, then drop our
        finalizer so the API server can remove it."""
        if JOB_FINALIZER not in resource.finalizers:
            return "deleting"
        # borrowed: should the resource be forgotten meanwhile (our finalizer removed by
        # hand), its queue, if that was its last, is released after the abort, not under it
        with self.pool.borrowed(resource.queue) as queue:
            if not is_finished(resource.status):
                outcome = await abort_readable(queue, resource.key)
                log.info("%s/%s deleted: %s %s", resource.namespace, resource.name,
                         outcome.action, outcome.message)
            await release_claim(queue, resource.key)
        if await self.api(remove_job_finalizer(self.custom, resource.namespace, resource.name,
                                                resource.finalizers, JOB_FINALIZER)):
            resource.finalizers = [f for f in resource.finalizers if f != JOB_FINALIZER]
            return "released"
        self.mark(resource.uid)  # the list changed meanwhile: again next pass
        return "deleting"

    async def gone(self, uid: str) -> JobResource | None:
        """The resource is deleted: forget it, abort its job if it went without our
        finalizer, then, after that abort, let the pool release its queue if it was the
        queue's last resource (unless a Deployment still autoscales on it)."""
        resource = self.registry.forget(uid)
        if resource is None:
            return None
        try:
            await self.abort_deleted(resource)
        finally:
            if not self.registry.uses(resource.queue):
                self.pool.left(resource.queue)
        return resource

    async def abort_deleted(self, resource: JobResource) -> None:
        """The resource vanished without our finalizer (removed by hand, or deleted before
        the finalizer was added): abort its job all the same."""
        if not is_finished(resource.status):
            # borrowed: forgotten by the registry, its queue may be released meanwhile
            with self.pool.borrowed(resource.queue) as queue:
                outcome = await abort_readable(queue, resource.key)
            log.info("%s/%s gone: %s %s", resource.namespace, resource.name,
                     outcome.action, outcome.message)
        if self.access.granted(resource.queue):  # no connection for a never-granted queue
            with self.pool.borrowed(resource.queue) as queue:
                await release_claim(queue, resource.key)
