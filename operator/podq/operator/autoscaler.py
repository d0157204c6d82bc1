"""Scales worker Deployments on queue depth and marks busy pods costly to delete.

Driven by the queue's change notifications (so the first job of an idle queue scales
its Deployment from zero within about a second) and by a slow periodic pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client.rest import ApiException

from podq.operator.access import REFUSED
from podq.operator.kube import EventRecorder, KubeClients, ObjectRef, refusal_text
from podq.operator.names import LABEL_QUEUE
from podq.operator.podcosts import ClearedCosts, clear_costs, live_costs, write_cost
from podq.operator.queues import QueuePool
from podq.operator.scaling import (
    Stabiliser,
    deletion_costs,
    desired_replicas,
    settings_from_annotations,
)

log = logging.getLogger("podq.operator")

NOT_PERMITTED = "NotPermitted"
OPTED_OUT = "AutoscalingStopped"  # the queue label was removed


@dataclass
class WorkerDeployment:
    namespace: str
    name: str
    uid: str
    queue: str
    annotations: dict[str, str]
    match_labels: dict[str, str]
    replicas: int
    stabiliser: Stabiliser
    costs: dict[str, int] = field(default_factory=dict)  # what we last wrote per pod

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef("apps/v1", "Deployment", self.namespace, self.name, self.uid)


@dataclass(frozen=True)
class ScaleOutcome:
    replicas: int  # before
    desired: int  # after stabilisation
    applied: bool
    reason: str = ""


class Autoscaler:
    def __init__(
        self,
        kube: KubeClients,
        pool: QueuePool,
        events: EventRecorder,
        *,
        stabilisation_s: float = 60.0,
        interval_s: float = 5.0,
        owner_check_s: float = 10.0,
    ) -> None:
        self.kube = kube
        self.pool = pool
        self.events = events
        self.stabilisation_s = stabilisation_s
        self.interval_s = interval_s
        self.owner_check_s = owner_check_s
        self.deployments: dict[tuple[str, str], WorkerDeployment] = {}
        self._poked = asyncio.Event()
        self._owners: dict[str, tuple[float, set[str]]] = {}  # namespace -> (when, names)
        # what was reported (an Event) once, not every pass: only Deployments that exist
        # and are still so, so that it is reported again should it end and come back
        self.left_alone: set[str] = set()  # uids of Deployments another scaler owns
        self.forbidden: set[str] = set()  # uids of Deployments we have no rights on
        self.refused: dict[tuple[str, str], str] = {}  # (namespace, name) -> uid: on a
        # queue granted to none
        # what the passes saw and decided, exported by metrics.py
        self.seen: dict[str, tuple[int, int]] = {}  # queue -> (depth, active)
        self.desired: dict[tuple[str, str], int] = {}  # (namespace, name) -> replicas
        self.decisions: Counter[tuple[str, str]] = Counter()  # (queue, "up"/"down")
        self._scaling: dict[tuple[str, str], asyncio.Event] = {}  # patches in flight

    # -- inputs -----------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any]) -> WorkerDeployment:
        meta, spec = body["metadata"], body.get("spec") or {}
        key = (meta["namespace"], meta["name"])
        known = self.deployments.get(key)
        deployment = WorkerDeployment(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            queue=(meta.get("labels") or {})[LABEL_QUEUE],
            annotations=dict(meta.get("annotations") or {}),
            match_labels=dict((spec.get("selector") or {}).get("matchLabels") or {}),
            replicas=int(spec.get("replicas") if spec.get("replicas") is not None else 1),
            stabiliser=known.stabiliser if known else Stabiliser(self.stabilisation_s),
            costs=known.costs if known else {},
        )
        self.deployments[key] = deployment
        self._unrefuse(key)  # its label names a granted queue now
        if known is not None and known.queue != deployment.queue:
            self._left(known.queue)  # relabelled
        self.pool.listen(deployment.queue)
        self._poked.set()
        return deployment

    async def refuse(self, body: Mapping[str, Any]) -> ClearedCosts | None:
        """A Deployment labelled with a queue granted to no namespace: not autoscaled,
        and its queue gets no connection or listener (anyone who may create a
        Deployment chooses that label; each made-up name cost a connection, a listener
        and metric series for good). A Warning Event says so, once until the Deployment
        is gone or names a granted queue: refused again after that, it is said again.
        Relabelled so from an autoscaled queue, it has opted out: returns the pod costs
        removed (else None)."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        left = self._untrack(key)
        cleared = await self._stop_marking(left) if left is not None else None
        if self.refused.get(key) == meta["uid"]:
            return cleared
        self._unrefuse(key)  # an earlier Deployment of that name
        self.refused[key] = meta["uid"]
        queue = (meta.get("labels") or {}).get(LABEL_QUEUE)
        ref = ObjectRef("apps/v1", "Deployment", meta["namespace"], meta["name"], meta["uid"])
        await self.events.post(ref, "Warning", REFUSED, (
            f"label {LABEL_QUEUE}: queue {queue!r} is granted to no namespace, so the"
            f" operator does not autoscale this Deployment; the cluster admin grants"
            f" queues: chart value workers.pools[].namespaces, operator flag --allow-queue"))
        return cleared

    async def opt_out(self, body: Mapping[str, Any]) -> ClearedCosts | None:
        """A Deployment without the queue label: if it had it, it has opted out of
        autoscaling (its replicas are its owner's again, its pods lose the deletion
        costs podq wrote), and a Normal Event says so. Called for every unlabelled
        Deployment of the cluster: quiet for the others. Returns the pod costs removed,
        None when it had not been autoscaled."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        self._unrefuse(key)
        deployment = self._untrack(key)
        if deployment is None:
            return None
        cleared = await self._stop_marking(deployment)
        await self.events.post(deployment.ref, "Normal", OPTED_OUT, (
            f"label {LABEL_QUEUE} removed: the operator no longer scales this Deployment"
            f" (it did for queue {deployment.queue}); its replicas are left as they are;"
            f" {cleared.describe()}"))
        return cleared

    async def _stop_marking(self, deployment: WorkerDeployment) -> ClearedCosts:
        """No longer autoscaled: once a write in flight has landed (a pass scaling it or
        marking its pods: so nothing scales it once the Event is out), take the deletion
        costs podq wrote off its pods, which it no longer keeps true."""
        writing = self._scaling.get((deployment.namespace, deployment.name))
        if writing is not None:
            await writing.wait()
        try:
            return await clear_costs(self.kube.core, deployment.namespace, deployment.name,
                                     deployment.match_labels)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # no rights there, API trouble: the opt-out stands
            why = refusal_text(error) if isinstance(error, ApiException) else type(error).__name__
            log.warning("%s/%s: pod-deletion-cost not removed from its pods: %s",
                        deployment.namespace, deployment.name, why)
            return ClearedCosts(failed=why)

    def forget(self, namespace: str, name: str) -> None:
        """The Deployment is gone."""
        self._untrack((namespace, name))
        self._unrefuse((namespace, name))

    def _untrack(self, key: tuple[str, str]) -> WorkerDeployment | None:
        deployment = self.deployments.pop(key, None)
        self.desired.pop(key, None)
        if deployment is not None:
            self._left(deployment.queue)
        return deployment

    def uses(self, queue: str) -> bool:
        """Whether a Deployment autoscales on this queue (a QueuePool user)."""
        return any(d.queue == queue for d in self.deployments.values())

    def _left(self, queue: str) -> None:
        """A Deployment no longer autoscales on this queue: if it was the last one, the
        pool releases the queue's connections and listener (once a pass reading it is
        done with it), unless Job resources still need it; its metric series go at the
        end of the next pass."""
        if not self.uses(queue):
            self.pool.left(queue)

    def tracked(self, deployment: WorkerDeployment) -> bool:
        """Whether this Deployment is still autoscaled on this queue (not opted out,
        deleted, refused or relabelled since the pass took it)."""
        current = self.deployments.get((deployment.namespace, deployment.name))
        return (current is not None and current.uid == deployment.uid
                and current.queue == deployment.queue)

    def _unrefuse(self, key: tuple[str, str]) -> None:
        uid = self.refused.pop(key, None)
        if uid is not None:
            self.events.rearm(uid, REFUSED)

    def on_change(self, queue: str, _key: str, status: str) -> None:
        """QueuePool callback. Enqueues and finishes change the depth."""
        if self.uses(queue):
            self._poked.set()

    # -- loop -------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._poked.wait(), self.interval_s)
            except TimeoutError:
                pass
            self._poked.clear()
            await self.autoscale_pass()
            await asyncio.sleep(0.2)  # bound the pass rate under a storm of changes

    async def autoscale_pass(self) -> None:
        """Reconcile every worker Deployment once; then keep the reported-once sets to
        the Deployments this pass saw (others are gone or no longer autoscaled)."""
        for deployment in list(self.deployments.values()):
            try:
                await self.reconcile(deployment)
            except asyncio.CancelledError:
                raise
            except ApiException as error:
                if error.status != 403:
                    log.exception("autoscaling %s/%s failed", deployment.namespace,
                                  deployment.name)
                else:
                    await self._forbidden(deployment)
            except Exception:
                log.exception("autoscaling %s/%s failed", deployment.namespace,
                              deployment.name)
            else:
                self._permitted(deployment)
        live = {d.uid for d in self.deployments.values()}
        for uid in self.forbidden - live:
            self.events.rearm(uid, NOT_PERMITTED)
        self.forbidden &= live
        self.left_alone &= live
        # the metric series of queues no Deployment autoscales on any more (at the end of
        # a pass: one of its reads may have written one after its Deployment went)
        for queue in [q for q in self.seen if not self.uses(q)]:
            del self.seen[queue]

    def _permitted(self, deployment: WorkerDeployment) -> None:
        """A pass went through: rights it lacked were granted, and losing them again is
        reported again."""
        if deployment.uid in self.forbidden:
            self.forbidden.discard(deployment.uid)
            self.events.rearm(deployment.uid, NOT_PERMITTED)
            log.info("%s/%s: the operator may autoscale it now", deployment.namespace,
                     deployment.name)

    async def _forbidden(self, deployment: WorkerDeployment) -> None:
        """No rights on pods or scale in this namespace (the chart grants them only where
        worker pools run): say so once, then keep quiet until a pass goes through."""
        if deployment.uid in self.forbidden:
            return
        self.forbidden.add(deployment.uid)
        message = (f"the operator may not annotate pods or scale Deployments in namespace"
                   f" {deployment.namespace}; grant it there (chart value"
                   f" operator.workerNamespaces) to autoscale this worker pool")
        log.warning("%s/%s: %s", deployment.namespace, deployment.name, message)
        await self.events.post(deployment.ref, "Warning", NOT_PERMITTED, message)

    async def reconcile(self, deployment: WorkerDeployment) -> ScaleOutcome:
        """Mark pod deletion costs, then scale: costs first, so that a scale-down that
        follows removes idle pods."""
        if not self.tracked(deployment):  # gone since the pass began
            return ScaleOutcome(deployment.replicas, deployment.replicas, False, OPTED_OUT)
        # borrowed: should the Deployment go meanwhile, and with it the queue's last
        # user, the queue is released once these reads are done, not under them
        with self.pool.borrowed(deployment.queue) as queue:
            workers = await queue.workers()
            await self.mark_pods(deployment, workers)
            depth = await queue.depth()
            active = await queue.count("active")
        self.seen[deployment.queue] = (depth, active)
        return await self.scale(deployment, depth)

    async def scale(self, deployment: WorkerDeployment, depth: int) -> ScaleOutcome:
        current = deployment.replicas
        if await self._externally_scaled(deployment):
            if deployment.uid not in self.left_alone:
                self.left_alone.add(deployment.uid)
                await self.events.post(
                    deployment.ref, "Normal", "ScalingLeftToOthers",
                    "an HPA or KEDA ScaledObject targets this Deployment; podq does not scale it",
                )
            return ScaleOutcome(current, current, False, "ScaledByHPAOrKEDA")
        self.left_alone.discard(deployment.uid)
        try:
            settings = settings_from_annotations(deployment.annotations)
        except ValueError as invalid:
            await self.events.post(deployment.ref, "Warning", "InvalidScalingAnnotation",
                                   str(invalid))
            return ScaleOutcome(current, current, False, "InvalidScalingAnnotation")
        # checked again with no await before the patch: opted out (or gone) while this
        # pass read the queue and the API, it is not scaled once more; opt_out() waits
        # for a patch already sent
        if not self.tracked(deployment):
            return ScaleOutcome(current, current, False, OPTED_OUT)
        wanted = desired_replicas(depth, settings)
        desired = deployment.stabiliser.recommend(time.monotonic(), wanted)
        key = (deployment.namespace, deployment.name)
        self.desired[key] = desired
        if desired == current:
            return ScaleOutcome(current, desired, False)
        async with self._writing(key):
            await self._patch_replicas(deployment, current, desired, depth)
        return ScaleOutcome(current, desired, True, "Scaled")

    @contextlib.asynccontextmanager
    async def _writing(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """A scale or pod cost patch in flight: opt_out() waits for it to land."""
        self._scaling[key] = done = asyncio.Event()
        try:
            yield
        finally:
            done.set()
            if self._scaling.get(key) is done:
                del self._scaling[key]

    async def _patch_replicas(self, deployment: WorkerDeployment, current: int, desired: int,
                              depth: int) -> None:
        await self.kube.apps.patch_namespaced_deployment_scale(
            deployment.name, deployment.namespace, {"spec": {"replicas": desired}}
        )
        deployment.replicas = desired
        self.decisions[(deployment.queue, "up" if desired > current else "down")] += 1
        log.info("scaled %s/%s from %d to %d replicas (queue %s depth %d)",
                 deployment.namespace, deployment.name, current, desired, deployment.queue, depth)
        await self.events.post(
            deployment.ref, "Normal", "Scaled",
            f"scaled from {current} to {desired} replicas for {depth} due or running jobs"
            f" on queue {deployment.queue}",
        )

    async def mark_pods(self, deployment: WorkerDeployment, workers: list[dict]) -> int:
        """Annotate pods with pod-deletion-cost from their worker's running jobs; returns
        how many pods were patched (only changed values are written)."""
        live = await live_costs(self.kube.core, deployment.namespace, deployment.match_labels)
        deployment.costs = costs = deletion_costs(workers, live)
        patched = 0
        async with self._writing((deployment.namespace, deployment.name)):
            for pod, cost in costs.items():
                # checked with no await before each write: an opt-out since removes what
                # was written, so this pass writes no more (opt_out waits for a write)
                if live[pod] != str(cost) and self.tracked(deployment):
                    patched += await write_cost(self.kube.core, deployment.namespace, pod,
                                                cost)
        return patched

    async def _externally_scaled(self, deployment: WorkerDeployment) -> bool:
        """True when an HPA or a KEDA ScaledObject targets the Deployment: two scalers
        fighting over replicas is worse than none."""
        checked = self._owners.get(deployment.namespace)
        if checked is None or time.monotonic() - checked[0] > self.owner_check_s:
            names: set[str] = set()
            hpas = await self.kube.autoscaling.list_namespaced_horizontal_pod_autoscaler(
                deployment.namespace)
            names.update(h.spec.scale_target_ref.name for h in hpas.items
                         if h.spec.scale_target_ref.kind == "Deployment")
            try:
                scaled = await self.kube.custom.list_namespaced_custom_object(
                    "keda.sh", "v1alpha1", deployment.namespace, "scaledobjects")
                names.update(
                    s["spec"]["scaleTargetRef"]["name"] for s in scaled.get("items", ())
                    if s.get("spec", {}).get("scaleTargetRef", {}).get("kind", "Deployment")
                    == "Deployment"
                )
            except ApiException as error:
                if error.status != 404:  # 404: KEDA is not installed
                    raise
            checked = self._owners[deployment.namespace] = (time.monotonic(), names)
        return deployment.name in checked[1]
