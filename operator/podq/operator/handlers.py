"""kopf wiring: each handler is a few lines that call a domain function.

State shared by handlers (API clients, queues, the status writer, the autoscaler)
lives in kopf's memo, built at startup from the options main() put there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from podq.operator import kopf_state, kube
from podq.operator.access import OPEN_ACCESS, QueueAccess
from podq.operator.autoscaler import Autoscaler
from podq.operator.cronjobs import CronMemory, CronWakeups, mark_tick_failing, pause, tick
from podq.operator.isolation import STALL_AFTER, describe
from podq.operator.metrics import serve_metrics
from podq.operator.mirror import StatusMirror
from podq.operator.names import (
    ANNOTATION_PREFIX,
    CRONJOBS,
    GROUP,
    JOBS,
    KOPF_FINALIZER,
    LABEL_CRONJOB,
    LABEL_QUEUE,
    VERSION,
)
from podq.operator.queues import QueuePool
from podq.operator.registry import JobRegistry
from podq.operator.status import is_finished
from podq.redact import redact
from podq.utils import Backoff

LAST_HANDLED = "last-handled-configuration"
CRON_BACKOFF_CAP_S = 300.0
log = logging.getLogger("podq.operator")


@dataclass(frozen=True)
class Options:
    """Run options from the command line (see main.py)."""

    redis_url: str
    reconcile_interval: float = 10.0
    flush_interval: float = 0.1
    status_patch_rate: float = 200.0
    stabilisation_window: float = 60.0
    autoscale_interval: float = 5.0
    cron_refresh: float = 10.0
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"  # every interface, as in a pod
    # Exact namespace names need no namespace (or CRD) scanning: kopf would otherwise list
    # namespaces, which namespaced RBAC refuses, and fall back only after ~1 minute.
    scan_namespaces: bool = True
    api_parallelism: int = 48
    queue_access: QueueAccess = OPEN_ACCESS


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger,
                  **_: Any) -> None:
    # podq's own annotation prefix and finalizer (kopf uses them on CronJobs, for their
    # daemons), so podq never collides with other kopf operators; job arguments stay out
    # of the last-handled annotation, which shares a 256 KiB cap with all annotations.
    settings.persistence.finalizer = KOPF_FINALIZER
    settings.persistence.progress_storage = kopf_state.ProgressStorage(
        prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf_state.DiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key=LAST_HANDLED,
        ignored_fields=["spec.kwargs", "spec.meta", "spec.jobTemplate.spec.kwargs",
                        "spec.jobTemplate.spec.meta"])
    settings.posting.level = logging.WARNING  # podq posts its own, rate-limited Events
    settings.watching.server_timeout = 300
    settings.scanning.disabled = not memo.options.scan_namespaces
    # kopf keeps a worker (holding the latest body) per object until it idles this long
    settings.queueing.idle_timeout = 1.0
    settings.watching.chunk_size = 500  # list in pages: thousands of Jobs in one body is a spike
    options: Options = memo.options
    memo.kube = await kube.connect(pool_size=options.api_parallelism + 16)
    memo.pool = QueuePool(options.redis_url, halt=memo.halt)  # main() exits when halted
    memo.registry = JobRegistry()
    memo.cron_wakeups = CronWakeups()
    memo.events = kube.EventRecorder(memo.kube.core)
    memo.mirror = StatusMirror(
        custom=memo.kube.custom, events=memo.events, pool=memo.pool, registry=memo.registry,
        patch_rate=options.status_patch_rate, flush_interval=options.flush_interval,
        reconcile_interval=options.reconcile_interval, parallel=options.api_parallelism,
        access=options.queue_access,
    )
    memo.autoscaler = Autoscaler(
        memo.kube, memo.pool, memo.events, stabilisation_s=options.stabilisation_window,
        interval_s=options.autoscale_interval,
    )
    memo.pool.callbacks.extend([memo.mirror.on_change, memo.autoscaler.on_change])
    # a queue goes once neither needs it: no Job resource of it, no Deployment on it
    memo.pool.users.extend([memo.registry.uses, memo.autoscaler.uses])
    memo.pool.keep("default")
    memo.tasks = [
        asyncio.create_task(memo.mirror.run(), name="podq-status-mirror"),
        asyncio.create_task(memo.autoscaler.run(), name="podq-autoscaler"),
        asyncio.create_task(memo.pool.run_releases(), name="podq-queue-releases"),
    ]
    if options.metrics_port is not None:
        memo.tasks.append(asyncio.create_task(serve_metrics(memo, options.metrics_host,
                                                                     options.metrics_port)))
    logger.info("podq operator started (redis %s)", redact(options.redis_url))
    if options.queue_access.open:
        logger.warning("queue access is open: every namespace may use every queue (give"
                       " --allow-queue grants on a shared cluster; docs/security.md)")
    else:
        logger.info("queue grants: %s", options.queue_access.describe())



@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in getattr(memo, "tasks", ()):
        task.cancel()
    for task in getattr(memo, "tasks", ()):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if hasattr(memo, "events"):
        await memo.events.close()
    if hasattr(memo, "pool"):
        await memo.mirror.close()
        await memo.pool.close()
        await memo.kube.close()
    if hasattr(memo, "halt"):
        # stopping anyway (SIGTERM): kopf's own waiter on its stop flag (main.py: the
        # halt flag) would otherwise keep the exit waiting 5 s for a "hung" task
        memo.halt.flag.set()


# -- Job --------------------------------------------------------------------------------


@kopf.on.event(GROUP, VERSION, JOBS)
async def job_event(event: dict, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Keep the registry current and hand work to the status writer, whose passes add
    the finalizer, then enqueue the job (pipelined with the others of that pass;
    idempotent, the key derives from the resource) and write the status. A resource
    being deleted is released there too: job aborted, then our finalizer removed.
    Doing this in the writer instead of kopf's create/delete handlers saves kopf's two
    annotation patches per Job. After a restart this is how every status catches up."""
    cron = (body.metadata.labels or {}).get(LABEL_CRONJOB)
    if event["type"] == "DELETED":
        memo.cron_wakeups.child_gone(body.metadata.namespace, cron, body.metadata.uid)
        memo.mirror.forget(body.metadata.uid)
        await memo.mirror.finalizer.gone(body.metadata.uid)
        return
    known = memo.registry.by_uid.get(body.metadata.uid)
    was_finished = known is not None and is_finished(known.status)
    resource, new = memo.registry.observe(body)
    if cron and is_finished(body.get("status")):
        memo.cron_wakeups.child_finished(body.metadata.namespace, cron, body.metadata.uid)
    if new and memo.options.queue_access.granted(resource.queue):
        memo.pool.listen(resource.queue)
    # unfinished again: another operator's patch, computed from an older read of Redis,
    # landed after the final one; the next pass writes the final status again
    if new or resource.deleting or (was_finished and not is_finished(resource.status)):
        memo.mirror.mark(resource.uid)


# -- CronJob ----------------------------------------------------------------------------


@kopf.daemon(GROUP, VERSION, CRONJOBS, cancellation_timeout=5.0)
async def cronjob_daemon(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped,
                         logger: logging.Logger, **_: Any) -> None:
    """Tick at each schedule slot, and at least every cron_refresh seconds so that spec
    changes (suspend, schedule) are noticed; a child that finishes wakes it at once."""
    memory = CronMemory()
    refresh = memo.options.cron_refresh
    backoff = Backoff(refresh, CRON_BACKOFF_CAP_S)  # a tick that keeps failing waits longer
    wake = memo.cron_wakeups.event(body.metadata.namespace, body.metadata.name)
    while not stopped:
        wait = refresh
        try:
            now = datetime.now(UTC)
            outcome = await tick(memo.kube.custom, memo.events, body, now, memory,
                                 memo.options.queue_access)
            if outcome.next_slot is not None:
                wait = min(refresh, (outcome.next_slot - datetime.now(UTC)).total_seconds())
            backoff.reset()
        except Exception as error:  # one CronJob's trouble must not stop its daemon
            logger.exception("cronjob tick failed")  # also a kopf Event on the CronJob
            wait = backoff.next()
            if backoff.failures == STALL_AFTER:
                await mark_tick_failing(memo.kube.custom, memo.events, body,
                                        describe(error), datetime.now(UTC))
        await pause(stopped, wake, max(wait, 0.0) + 0.005)
    memo.cron_wakeups.forget(body.metadata.namespace, body.metadata.name)


# -- worker Deployments -------------------------------------------------------------------


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_QUEUE: kopf.PRESENT})
async def deployment_event(event: dict, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if event["type"] == "DELETED":
        memo.autoscaler.forget(body.metadata.namespace, body.metadata.name)
    elif memo.options.queue_access.granted(body.metadata.labels[LABEL_QUEUE]):
        memo.autoscaler.observe(body)
    else:
        await memo.autoscaler.refuse(body)


# kopf filters labels on the events it receives: the event that removes the label does
# not match the handler above, so without this one the Deployment stayed autoscaled
@kopf.on.event("apps", "v1", "deployments", labels={LABEL_QUEUE: kopf.ABSENT})
async def deployment_unlabelled(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await memo.autoscaler.opt_out(body)
