"""One tick of a CronJob: fire the due slot as a child Job resource, trim history,
report status. The kopf daemon in handlers.py calls `tick` in a loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from podq.operator.access import OPEN_ACCESS, QueueAccess
from podq.operator.admission import job_problem
from podq.operator.conditions import build_conditions, stalled_facts
from podq.operator.cron import (
    Child,
    Decision,
    InvalidCronSpec,
    child_state,
    children_to_delete,
    decide,
    parse_schedule,
)
from podq.operator.jobspec import queue_name
from podq.operator.kube import EventRecorder, ObjectRef, patch_cronjob_status, refusal_text
from podq.operator.names import (
    ANNOTATION_INSTANTIATE,
    ANNOTATION_SCHEDULED_TIME,
    API_VERSION,
    GROUP,
    JOB_FINALIZER,
    JOBS,
    LABEL_CRONJOB,
    VERSION,
    cron_child_name,
)
from podq.operator.status_values import rfc3339

log = logging.getLogger("podq.operator")


@dataclass
class CronMemory:
    """What one CronJob's daemon remembers between ticks (not needed for correctness)."""

    skipped: set[str] = field(default_factory=set)  # slots already reported as skipped
    # the latest slot this daemon recorded: the body it is handed may trail that write
    recorded: datetime | None = None


class CronWakeups:
    """Wakes a CronJob's daemon when one of its child Jobs finishes, so that its `active`
    list and lastSuccessfulTime follow at once instead of at the next refresh tick."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self._finished: set[str] = set()  # uids of children already reported finished

    def event(self, namespace: str, name: str) -> asyncio.Event:
        return self._events.setdefault((namespace, name), asyncio.Event())

    def forget(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)

    def child_finished(self, namespace: str, cron: str, uid: str) -> None:
        """A child Job of CronJob `cron` was seen finished (once per child)."""
        if uid in self._finished:
            return
        self._finished.add(uid)
        event = self._events.get((namespace, cron))
        if event is not None:
            event.set()

    def child_gone(self, namespace: str, cron: str | None, uid: str) -> None:
        """A child Job (of CronJob `cron`, if labelled) was deleted: it leaves `active`."""
        self._finished.discard(uid)
        event = self._events.get((namespace, cron)) if cron else None
        if event is not None:
            event.set()


async def pause(stopped: Any, wake: asyncio.Event, seconds: float) -> None:
    """Wait until `seconds` passed, the daemon is stopped (kopf's DaemonStopped) or
    `wake` is set, whichever comes first; then clear `wake`."""
    waits = [asyncio.ensure_future(stopped.wait(seconds)), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    wake.clear()


@dataclass(frozen=True)
class TickOutcome:
    decision: Decision
    created: str | None = None
    deleted: tuple[str, ...] = ()
    next_slot: datetime | None = None
    invalid: InvalidCronSpec | None = None


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def child_body(cron: Mapping[str, Any], name: str, slot: datetime) -> dict[str, Any]:
    meta = cron["metadata"]
    template = cron["spec"]["jobTemplate"]
    template_meta = template.get("metadata") or {}
    return {
        "apiVersion": API_VERSION,
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {**(template_meta.get("labels") or {}), LABEL_CRONJOB: meta["name"]},
            "annotations": {
                **(template_meta.get("annotations") or {}),
                ANNOTATION_SCHEDULED_TIME: rfc3339(slot.timestamp()),
            },
            # set at creation: saves the status writer a patch per firing
            "finalizers": [JOB_FINALIZER],
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": "CronJob", "name": meta["name"],
                "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": dict(template["spec"]),
    }


async def list_children(custom: client.CustomObjectsApi, cron: Mapping[str, Any]) -> list[dict]:
    meta = cron["metadata"]
    listed = await custom.list_namespaced_custom_object(
        GROUP, VERSION, meta["namespace"], JOBS, label_selector=f"{LABEL_CRONJOB}={meta['name']}"
    )
    return [
        item for item in listed.get("items", ())
        if any(o.get("uid") == meta["uid"] for o in item["metadata"].get("ownerReferences", ()))
        and not item["metadata"].get("deletionTimestamp")
    ]


def _as_child(item: Mapping[str, Any]) -> Child:
    meta = item["metadata"]
    scheduled = _time((meta.get("annotations") or {}).get(ANNOTATION_SCHEDULED_TIME)) \
        or _time(meta.get("creationTimestamp")) or datetime.now(UTC)
    status = item.get("status") or {}
    return Child(meta["name"], scheduled, child_state(status), _time(status.get("completedTime")),
                 uid=meta["uid"])


async def tick(
    custom: client.CustomObjectsApi,
    events: EventRecorder,
    cron: Mapping[str, Any],
    now: datetime,
    memory: CronMemory,
    access: QueueAccess | None = None,
) -> TickOutcome:
    """Do what the CronJob needs now; idempotent, safe to repeat after any crash."""
    meta, spec = cron["metadata"], cron["spec"]
    ref = ObjectRef(API_VERSION, "CronJob", meta["namespace"], meta["name"], meta["uid"])
    generation = int(meta.get("generation") or 1)
    previous = cron.get("status") or {}
    try:
        schedule = parse_schedule(spec["schedule"], spec.get("timeZone"))
        refusal = (access or OPEN_ACCESS).refusal(
            meta["namespace"], queue_name(spec["jobTemplate"].get("spec") or {}))
        if refusal is not None:  # no child Job at all: each would be refused
            raise InvalidCronSpec(refusal[0], "jobTemplate." + refusal[1])
        # nor from a template every child of which would fail (or the webhook refuse)
        problem = job_problem(spec["jobTemplate"].get("spec") or {}, meta["namespace"],
                              OPEN_ACCESS, "spec.jobTemplate.spec")
        if problem is not None:
            raise InvalidCronSpec("InvalidJobTemplate", problem)
    except InvalidCronSpec as invalid:
        await events.post(ref, "Warning", invalid.reason, invalid.message)
        facts = stalled_facts(invalid.reason, invalid.message)
        await _write_status(custom, cron, {
            "nextScheduleTime": None,
            "observedGeneration": generation,
            "conditions": build_conditions(facts, previous.get("conditions"), generation,
                                           now.timestamp()),
        })
        return TickOutcome(Decision("wait"), invalid=invalid)

    items = await list_children(custom, cron)
    children = [_as_child(item) for item in items]
    active = sorted((c for c in children if c.state == "active"), key=lambda c: c.scheduled)
    created_at = _time(meta.get("creationTimestamp")) or now
    handled_until = max(
        [created_at, _time(previous.get("lastScheduleTime")) or created_at]
        # a child whose status write was lost counts; one run by hand fills no slot
        + [c.scheduled for c, item in zip(children, items, strict=True)
           if not (item["metadata"].get("annotations") or {}).get(ANNOTATION_INSTANTIATE)]
        + ([memory.recorded] if memory.recorded else [])
    )
    decision = decide(
        schedule, handled_until=handled_until, now=now, suspend=bool(spec.get("suspend")),
        policy=spec.get("concurrencyPolicy") or "Allow",
        starting_deadline_s=spec.get("startingDeadlineSeconds"),
        active_children=[c.name for c in active],
    )
    created = None
    last_schedule = _time(previous.get("lastScheduleTime"))
    if decision.action == "skip" and decision.slot is not None:
        slot_text = rfc3339(decision.slot.timestamp())
        if slot_text not in memory.skipped:
            memory.skipped.add(slot_text)
            await events.post(ref, "Normal", decision.reason, decision.message)
    elif decision.action == "fire" and decision.slot is not None:
        # The slot is recorded before its child exists: once recorded it never fires
        # again, even after its child finished and was trimmed (history limit 0) or a
        # later status write failed. A failure between the two writes skips the slot:
        # at most once, as for batch/v1 CronJob.
        await patch_cronjob_status(custom, meta["namespace"], meta["name"],
                                   {"lastScheduleTime": rfc3339(decision.slot.timestamp())})
        memory.recorded = decision.slot
        for name in decision.replace:
            await _delete_child(custom, meta["namespace"], name)
            await events.post(ref, "Normal", "SuccessfulDelete",
                              f"deleted {name} (concurrencyPolicy Replace)")
        active = [c for c in active if c.name not in decision.replace]
        created = cron_child_name(meta["name"], decision.slot)
        child_uid = ""
        try:
            made = await custom.create_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], JOBS, child_body(cron, created, decision.slot)
            )
            child_uid = made["metadata"]["uid"]
            await events.post(ref, "Normal", "SuccessfulCreate", f"created Job {created}")
            log.info("cronjob %s/%s fired %s", meta["namespace"], meta["name"], created)
        except ApiException as error:
            if error.status != 409:  # AlreadyExists: this slot fired before a restart
                await events.post(ref, "Warning", "FailedCreate",
                                  f"slot {rfc3339(decision.slot.timestamp())} skipped: could"
                                  f" not create Job {created}: {refusal_text(error)}")
                raise
        active.append(Child(created, decision.slot, uid=child_uid))
        last_schedule = decision.slot

    deleted = tuple(children_to_delete(
        children, spec.get("successfulJobsHistoryLimit", 3), spec.get("failedJobsHistoryLimit", 1)
    ))
    for name in deleted:  # batch/v1 CronJob says so too (SuccessfulDelete)
        if await _delete_child(custom, meta["namespace"], name):
            await events.post(ref, "Normal", "SuccessfulDelete",
                              f"deleted Job {name} (history limit)")

    successes = [c.completed for c in children if c.state == "complete" and c.completed]
    next_slot = None if spec.get("suspend") else schedule.next_after(now)
    if spec.get("suspend"):
        reason, message = "Suspended", "suspended: no new Jobs are created"
    else:
        reason, message = "Scheduling", f"next run at {rfc3339(next_slot.timestamp())}"
    facts = [("Ready", "True", reason, message), ("Stalled", "False", reason, message)]
    status = {
        "lastScheduleTime": rfc3339(last_schedule.timestamp()) if last_schedule else None,
        "nextScheduleTime": rfc3339(next_slot.timestamp()) if next_slot else None,
        "lastSuccessfulTime": rfc3339(max(successes).timestamp()) if successes
        else previous.get("lastSuccessfulTime"),
        "active": [{"name": c.name, "uid": c.uid} for c in active] or None,
        "activeCount": len(active),
        "observedGeneration": generation,
        "conditions": build_conditions(facts, previous.get("conditions"), generation,
                                       now.timestamp()),
    }
    await _write_status(custom, cron, status)
    return TickOutcome(decision, created, deleted, next_slot)


async def mark_tick_failing(
    custom: client.CustomObjectsApi,
    events: EventRecorder,
    cron: Mapping[str, Any],
    detail: str,
    now: datetime,
) -> bool:
    """Say on a CronJob whose ticks keep failing (API errors, a quota refusing its
    children...) that the operator cannot handle it: Stalled True, reason TickFailed, and
    a Warning Event. Best effort, as the failure may be the API server's: returns whether
    the condition was written. The next tick that works sets Stalled False again."""
    meta = cron["metadata"]
    ref = ObjectRef(API_VERSION, "CronJob", meta["namespace"], meta["name"], meta["uid"])
    message = f"the operator's ticks of this CronJob keep failing; retrying with backoff: {detail}"
    facts = stalled_facts("TickFailed", message)
    previous = cron.get("status") or {}
    try:
        await events.post(ref, "Warning", "TickFailed", message)
        await _write_status(custom, cron, {
            "conditions": build_conditions(facts, previous.get("conditions"),
                                           int(meta.get("generation") or 1), now.timestamp()),
        })
    except Exception as error:  # the status is best effort
        log.warning("cronjob %s/%s: cannot mark it stalled: %s", meta["namespace"],
                    meta["name"], type(error).__name__)
        return False
    return True


async def _delete_child(custom: client.CustomObjectsApi, namespace: str, name: str) -> bool:
    """Delete a child Job; False when it was gone already."""
    try:
        await custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, JOBS, name, body={"propagationPolicy": "Background"}
        )
    except ApiException as error:
        if error.status != 404:
            raise
        return False
    return True


def _comparable(status: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in status.items() if v is not None and k != "conditions"}
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions") or ()
    ]
    return out


async def _write_status(
    custom: client.CustomObjectsApi, cron: Mapping[str, Any], status: dict[str, Any]
) -> None:
    previous = dict(cron.get("status") or {})
    if _comparable({**previous, **status}) == _comparable(previous):
        return
    patch = {k: v for k, v in status.items() if v is not None or previous.get(k) is not None}
    meta = cron["metadata"]
    await patch_cronjob_status(custom, meta["namespace"], meta["name"], patch)
