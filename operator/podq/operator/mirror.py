"""The single writer of Job resource status.

Redis change notifications mark resources dirty; a flush loop reads the dirty jobs
from Redis in one pipelined round trip per queue, computes each status and patches only
what changed, within a patch rate limit. Ten changes of one job between two flushes
cost one patch. A periodic reconcile marks every unfinished resource dirty, which
repairs anything a lost notification or a Redis restart hid, and re-enqueues jobs that
Redis lost. The Events of each write are transitions.py's; finished resources are
deleted after their ttl by ttl.py; the abort-on-delete finalizer is finalizer.py's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from kubernetes_asyncio import client

from podq.job import TERMINAL_STATUSES, Status
from podq.operator.access import OPEN_ACCESS, QueueAccess
from podq.operator.after import RECHECK_S, dependencies_met, resolve, waiting_status
from podq.operator.coalesce import Coalescer, TokenBucket
from podq.operator.finalizer import Finalizer
from podq.operator.isolation import (
    OUTAGES,
    CorruptRecord,
    Quarantine,
    read_jobs,
)
from podq.operator.jobs import (
    OWN_CLAIM,
    Outcome,
    enqueue_jobs,
    write_back_deadline,
)
from podq.operator.jobview import view_of
from podq.operator.kube import (
    EventRecorder,
    patch_job_status,
    read_job_spec,
)
from podq.operator.memory import release_free_memory
from podq.operator.names import JOB_FINALIZER
from podq.operator.previous import PreviousRuns, earlier_runs
from podq.operator.queues import QueuePool
from podq.operator.registry import JobRegistry, JobResource
from podq.operator.status import is_finished, job_status, refused_status, status_patch
from podq.operator.transitions import before_of, post_enqueue_outcome, post_transition, refuse
from podq.operator.ttl import FinishedTtl

log = logging.getLogger("podq.operator")


def _merged(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = {**current, **patch}
    return {k: v for k, v in merged.items() if v is not None}


class CorruptJob(Exception):
    reason = "CorruptJobRecord"


class StatusMirror:
    """The status writer: see the module docstring. `run()` is its two loops."""

    def __init__(
        self,
        *,
        custom: client.CustomObjectsApi,
        events: EventRecorder,
        pool: QueuePool,
        registry: JobRegistry,
        patch_rate: float = 200.0,
        flush_interval: float = 0.1,
        reconcile_interval: float = 10.0,
        batch_size: int = 256,
        parallel: int = 48,
        access: QueueAccess | None = None,
    ) -> None:
        self.custom = custom
        self.events = events
        self.pool = pool
        self.registry = registry
        self.access = access or OPEN_ACCESS
        self.flush_interval = flush_interval
        self.reconcile_interval = reconcile_interval
        self.batch_size = batch_size
        self.bucket = TokenBucket(patch_rate, patch_rate)
        self.dirty: Coalescer[str] = Coalescer()
        self.parallel = asyncio.Semaphore(parallel)
        self.max_in_flight = parallel * 8
        self.settle_s = max(3 * flush_interval, 0.3)
        self._in_flight: set[str] = set()
        self._again: set[str] = set()  # marked while in flight: once more afterwards
        self._slot_free = asyncio.Event()
        self.counts: Counter[str] = Counter()  # patches, recovered, deleted, ... (metrics)
        self.ttl = FinishedTtl(custom, registry, self.counts)  # ttlSecondsAfterFinished
        self.quarantine = Quarantine(custom, events, self.dirty.mark)  # failing ones back off
        self.previous = PreviousRuns(self.dirty.mark_later)  # waiting for an earlier run
        # the abort-on-delete finalizer, added and removed through the same limits
        self.finalizer = Finalizer(custom, pool, registry, self.access, self._api,
                                   self.dirty.mark)

    # -- inputs -----------------------------------------------------------------------

    def mark(self, uid: str) -> None:
        self.dirty.mark(uid)

    def on_change(self, queue: str, key: str, _status: str) -> None:
        """QueuePool callback: a job changed in Redis."""
        for resource in self.registry.for_key(queue, key):
            self.dirty.mark(resource.uid)

    def mark_unfinished(self) -> int:
        """Mark every resource that may need work; returns how many."""
        uids = [r.uid for r in self.registry if not is_finished(r.status) or r.refusal]
        self.dirty.mark_many(uids)
        return len(uids)

    # -- loops ------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(self._flush_loop(), self._reconcile_loop())

    async def _flush_loop(self) -> None:
        """Take dirty resources in batches and start their work without waiting for the
        batch to finish: one slow API response must not hold up every other resource.
        A resource already in flight stays dirty until its work ends."""
        while True:
            await self.dirty.wait(1.0)
            while len(self._in_flight) >= self.max_in_flight:  # backpressure
                self._slot_free.clear()
                await self._slot_free.wait()
            uids = []
            for uid in self.dirty.take(self.batch_size):
                held = self.registry.by_uid.get(uid)
                if held is not None and not held.deleting and self.quarantine.waiting(uid):
                    continue  # backing off: its timer marks it again
                if uid in self._in_flight:
                    self._again.add(uid)
                else:
                    uids.append(uid)
            if uids:
                try:
                    await self._dispatch(uids)
                except asyncio.CancelledError:
                    raise
                except OUTAGES as error:  # Redis away, say: the same ones again shortly
                    log.warning("status sync failed (%s: %s); retrying %d resources",
                                type(error).__name__, error, len(uids))
                    self.dirty.mark_many(uids)
                    await asyncio.sleep(1.0)
                except Exception:  # one resource's doing: each on its own, culprits back off
                    await self._dispatch_apart(uids)
            # the coalescing window: changes arriving meanwhile merge into one patch
            await asyncio.sleep(self.flush_interval)

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval)
            for name in self.registry.queues():
                if self.access.granted(name):
                    self.pool.listen(name)
            self.mark_unfinished()
            release_free_memory()

    # -- one pass ---------------------------------------------------------------------

    async def _dispatch(self, uids: list[str]) -> list[asyncio.Task[str]]:
        """Read the jobs of these resources from Redis (one pipelined round trip per
        queue), enqueue the missing ones (pipelined), and start a task per resource that
        writes what Kubernetes should know."""
        by_queue: dict[str, list[JobResource]] = {}
        tasks = []
        for uid in uids:
            resource = self.registry.by_uid.get(uid)
            if resource is None:
                continue
            if resource.deleting:
                tasks.append(self._start(resource, self.finalizer.release(resource)))
            elif is_finished(resource.status):  # final, like a batch/v1 Job
                self.ttl.schedule(resource, time.time())
                self.counts["finished"] += 1
            elif not resource.status and (refusal := self.access.refusal(
                    resource.namespace, resource.queue)):
                # never enqueued, and its queue is not its namespace's: refused without
                # a connection to that queue (tenants choose queue names freely)
                tasks.append(self._start(resource, self._refuse(resource, refusal)))
            elif JOB_FINALIZER not in resource.finalizers:
                # before the enqueue: a resource deleted at any moment after its job
                # exists (even while no operator runs) waits for the abort
                tasks.append(self._start(resource, self.finalizer.hold(resource)))
            elif (held := self._held_back(resource)) is not None:
                tasks.append(self._start(resource, held))
            else:
                by_queue.setdefault(resource.queue, []).append(resource)
        for queue_name, resources in by_queue.items():
            # borrowed: should its last resource go meanwhile, released after this pass
            with self.pool.borrowed(queue_name) as queue:
                tasks.extend(await self._dispatch_queue(queue, resources))
        return tasks

    async def _dispatch_queue(self, queue: Any, resources: list[JobResource]
                              ) -> list[asyncio.Task[str]]:
        tasks: list[asyncio.Task[str]] = []
        jobs = await read_jobs(queue, [r.key for r in resources])
        # an earlier (deleted) resource's run under the same spec.key: not this one's
        waiting = await earlier_runs(queue, list(zip(resources, jobs, strict=True)),
                                     self.registry.live)
        missing = [r for r, job in zip(resources, jobs, strict=True)
                   if self._needs_enqueue(r, job) and not self._awaits_write_back(r, job)]
        missing = await dependencies_met(queue, missing, self.registry, self._refused,
                                         lambda uid: self.dirty.mark_later(uid, RECHECK_S))
        missing = await self._restore_arguments(missing)
        settling: set[str] = set()
        if missing:
            done, outcomes = await self._enqueue(queue, missing)
            self.counts.update(done)
            own = {uid for uid, outcome in outcomes.items() if outcome.reason == OWN_CLAIM}
            waiting |= {uid: outcome for uid, outcome in outcomes.items()  # jobs.CLAIM_HELD too
                        if outcome.action == "waiting"}
            # A job enqueued just now is written a moment later: by then an idle
            # worker has usually finished it (one patch instead of queued, active,
            # complete), and under load more changes coalesce. A job this resource
            # enqueued before (its own claim) is written now, as it is.
            settling = {r.uid for r in missing
                        if not r.refusal and r.uid not in own and r.uid not in waiting}
            loop = asyncio.get_running_loop()
            for uid in settling:
                self.previous.forget(uid)
                loop.call_later(self.settle_s, self.dirty.mark, uid)
        now = time.time()
        tasks.extend(self._start(r, self._wait(r, self.previous.hold(r, waiting[r.uid], now)))
                     for r in resources if r.uid in waiting)
        tasks.extend(self._start(r, self._sync_one(r, j))
                     for r, j in zip(resources, jobs, strict=True)
                     if r.uid not in settling and r.uid not in waiting)
        return tasks

    async def _dispatch_apart(self, uids: list[str]) -> None:
        for uid in uids:
            try:
                await self._dispatch([uid])
            except OUTAGES:
                self.dirty.mark(uid)
            except Exception as error:
                self.quarantine.failed(self.registry.by_uid.get(uid), uid, error)

    def _start(self, resource: JobResource, work: Any) -> asyncio.Task[str]:
        self._in_flight.add(resource.uid)
        task = asyncio.create_task(work)
        task.add_done_callback(lambda done: self._finished(resource.uid, done))
        return task

    def _finished(self, uid: str, task: asyncio.Task[str]) -> None:
        self._in_flight.discard(uid)
        if len(self._in_flight) < self.max_in_flight:
            self._slot_free.set()
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.counts["error"] += 1
            self.quarantine.failed(self.registry.by_uid.get(uid), uid, error,
                                   getattr(error, "reason", "SyncFailed"))
        else:
            self.quarantine.succeeded(uid)
            self.counts[task.result()] += 1
        if uid in self._again:
            self._again.discard(uid)
            self.dirty.mark(uid)

    async def _api(self, call: Any) -> Any:
        """One Kubernetes API call within the rate limit and the concurrency limit."""
        await self.bucket.acquire()
        async with self.parallel:
            return await call

    async def _refuse(self, resource: JobResource, refusal: tuple[str, str]) -> str:
        await self._refused(resource, refusal)
        return await self._sync_one(resource, None)

    async def _refused(self, resource: JobResource, refusal: tuple[str, str]) -> None:
        """A refusal of the operator's own (the engine's: _enqueue): kept on the resource,
        an Event, counted `refused` like the engine's."""
        await refuse(self.events, resource, refusal)
        self.counts["refused"] += 1

    def _held_back(self, resource: JobResource) -> Any:
        """The work for a resource whose spec.after is not met yet (wait or fail), or
        None to enqueue it, with the job keys it depends on set (after.py)."""
        if not resource.spec.get("after") or resource.status.get("jobKey"):
            return None
        found = resolve(resource, self.registry)
        if found.refusal:
            return self._refuse(resource, found.refusal)
        if not found.waiting:
            resource.depends_on = found.keys
            return None
        self.dirty.mark_later(resource.uid, RECHECK_S)
        return self._wait(resource, waiting_status(
            found.waiting, generation=resource.generation, previous=resource.status,
            now_s=time.time()))

    async def _wait(self, resource: JobResource, desired: dict[str, Any]) -> str:
        """Write the status of a resource that waits before its enqueue (no jobKey)."""
        patch = status_patch(resource.status, desired)
        if patch and (version := await self._api(patch_job_status(
                self.custom, resource.namespace, resource.name, patch))) is not None:
            resource.record(_merged(resource.status, patch), version)
        return "waiting"

    def _awaits_write_back(self, resource: JobResource, job: Any) -> bool:
        """Redis lost a job that was running: leave it to its worker's write-back for a
        while (see write_back_deadline), then look again."""
        deadline = write_back_deadline(resource) if job is None else None
        now = time.time()
        if deadline is None or deadline <= now:
            return False
        if self.dirty.mark_later(resource.uid, deadline - now):
            log.info("job %s is missing from Redis while it ran; waiting up to %.0f s for its"
                     " worker to write it back", resource.key, deadline - now)
        return True

    @staticmethod
    def _needs_enqueue(resource: JobResource, job: Any) -> bool:
        if resource.refusal or is_finished(resource.status):
            return False
        if job is None:
            return True
        if isinstance(job, CorruptRecord):  # _sync_one marks it, naming its Redis key
            return False
        # a finished job under a user-chosen key is an earlier run, which SAQ replaces
        return bool(resource.spec.get("key")) and not resource.status.get("jobKey") \
            and Status(job.status) in TERMINAL_STATUSES

    async def _restore_arguments(self, resources: list[JobResource]) -> list[JobResource]:
        """Those of `resources` to enqueue, with the kwargs and meta that compact() left
        out once they were enqueued read back from the API server (Redis lost their
        jobs: rare). One gone meanwhile is left out. No await after the specs are set,
        so that a watch event cannot compact them again before the enqueue reads them."""
        dropped = [r for r in resources if r.arguments_dropped]
        if not dropped:
            return resources
        specs = await asyncio.gather(*(self._api(read_job_spec(
            self.custom, r.namespace, r.name, r.uid)) for r in dropped))
        gone = set()
        for resource, spec in zip(dropped, specs, strict=True):
            if spec is None:
                gone.add(resource.uid)
            else:
                resource.spec, resource.arguments_dropped = spec, False
        return [r for r in resources if r.uid not in gone]

    async def _enqueue(self, queue: Any, resources: list[JobResource]
                       ) -> tuple[Counter[str], dict[str, Outcome]]:
        """Enqueue; returns counts by outcome and the Outcome per uid."""
        done: Counter[str] = Counter()
        outcomes = await enqueue_jobs(queue, resources, self.access)
        for resource in resources:
            done[await post_enqueue_outcome(self.events, resource, outcomes[resource.uid])] += 1
        return done, outcomes

    async def _sync_one(self, resource: JobResource, job: Any) -> str:
        now = time.time()
        common = dict(key=resource.key, queue=resource.queue, generation=resource.generation,
                      previous=resource.status, now_s=now)
        if resource.refusal:
            desired = refused_status(*resource.refusal, **common)
        elif isinstance(job, CorruptRecord):
            raise CorruptJob(job.message)
        elif job is None:
            self.ttl.schedule(resource, now)
            return "missing"
        else:
            desired = job_status(view_of(job), **common)
        patch = status_patch(resource.status, desired)
        if not patch:
            self.ttl.schedule(resource, now)
            return "unchanged"
        # before the await: our own patch's watch event may update resource.status meanwhile
        before = before_of(resource.status)
        resource_version = await self._api(patch_job_status(
            self.custom, resource.namespace, resource.name, patch))
        if resource_version is None:
            return "gone"
        # unless an event newer than our patch arrived meanwhile (another operator's)
        resource.record(_merged(resource.status, patch), resource_version)
        function = getattr(job, "function", None) or resource.spec.get("function")
        await post_transition(self.events, resource, before, desired, function)
        self.ttl.schedule(resource, now)
        resource.compact()
        return "patched"

    def forget(self, uid: str) -> None:
        self.quarantine.forget(uid)
        self.previous.forget(uid)
        self.ttl.forget(uid)

    async def close(self) -> None:
        self.ttl.close()
