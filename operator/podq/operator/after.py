"""spec.after: a Job resource waits for other Job resources of its namespace.

The names become the job keys of those resources, which the engine waits for
(depends_on, docs/dependencies.md). A named resource that does not exist yet, or exists
but has not been enqueued, holds this one back: it is not enqueued (the engine refuses a
dependency it does not know) and its status says WaitingForDependencies, naming them.
It waits until they appear, like Argo's steps wait, or until it is deleted.

A job that Redis lost (FLUSHALL, a restart empty) is enqueued again from its resource:
one still waiting for its dependencies has spec.after resolved again from the resources
(a Complete one is satisfied, a Failed one fails it DependencyFailed), and is enqueued
only once every job it depends on is in Redis again (absent_dependencies).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from podq import Queue
from podq.job import Status
from podq.operator.conditions import (
    DEPENDENCY_FAILED,
    MAX_CONDITION_MESSAGE,
    build_conditions,
    in_progress_facts,
)
from podq.operator.registry import JobRegistry, JobResource
from podq.operator.status import is_finished

log = logging.getLogger("podq.operator")

WAITING = "WaitingForDependencies"
OTHER_QUEUE = "DependencyInOtherQueue"
CYCLE = "DependencyCycle"
RECHECK_S = 1.0  # how often a held-back resource looks at its dependencies again


@dataclass
class Resolution:
    """keys: the job keys to depend on (ready to enqueue) when `waiting` and `refusal`
    are empty; waiting: why it is held back; refusal: (reason, message) to fail it."""

    keys: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    refusal: tuple[str, str] | None = None


def resolve(resource: JobResource, registry: JobRegistry) -> Resolution:
    """What spec.after of this resource means now, from the resources the operator sees."""
    found = Resolution()
    unenqueued = False  # a dependency waits too: spec.after may form a cycle
    for name in resource.spec.get("after") or ():
        if name == resource.name:
            found.refusal = ("InvalidSpec", "spec.after names this Job itself")
            return found
        dep = registry.named(resource.namespace, name)
        if dep is None:
            found.waiting.append(f"Job {name} does not exist")
        elif dep.queue != resource.queue:
            found.refusal = (OTHER_QUEUE, f"spec.after: Job {name} is on queue {dep.queue},"
                             f" this one on {resource.queue}; dependencies share a queue")
            return found
        elif is_finished(dep.status):
            if dep.status.get("status") != Status.COMPLETE.value:
                found.refusal = (DEPENDENCY_FAILED, f"{DEPENDENCY_FAILED}: dependency Job"
                                 f" {name} ended {dep.status.get('status')}")
                return found
            # complete: satisfied (its record in Redis may have expired already)
        elif not dep.status.get("jobKey") or dep.deleting:
            found.waiting.append(f"Job {name} is not enqueued yet")
            unenqueued = True
        else:
            found.keys.append(dep.key)
    if unenqueued:
        cycle = find_cycle(resource, registry)
        if cycle:
            found.refusal = (CYCLE, "spec.after forms a cycle, which would wait forever: "
                             + " -> ".join(cycle))
    return found


def find_cycle(resource: JobResource, registry: JobRegistry) -> list[str] | None:
    """Names of a cycle of spec.after from this resource back to it, through Jobs of its
    namespace that wait too (not enqueued, not finished), or None. Each Job is looked at
    once: linear in the Jobs it reaches."""
    seen: set[str] = set()
    stack: list[tuple[str, list[str]]] = [
        (name, [resource.name]) for name in resource.spec.get("after") or ()]
    while stack:
        name, path = stack.pop()
        if name == resource.name:
            return [*path, name]
        if name in seen:
            continue
        seen.add(name)
        dep = registry.named(resource.namespace, name)
        if dep is None or dep.status.get("jobKey") or is_finished(dep.status):
            continue
        stack.extend((after, [*path, name]) for after in dep.spec.get("after") or ())
    return None


def waiting_status(waiting: list[str], *, generation: int, previous: dict[str, Any],
                   now_s: float) -> dict[str, Any]:
    """Status of a resource held back for spec.after: conditions only, no jobKey (which
    says its job was enqueued, and which the Jobs waiting for this one look for)."""
    message = ("waiting for spec.after: " + "; ".join(waiting))[:MAX_CONDITION_MESSAGE]
    facts = in_progress_facts(WAITING, message)
    return {"observedGeneration": generation,
            "conditions": build_conditions(facts, previous.get("conditions"), generation, now_s)}


def left_dependencies_behind(status: dict[str, Any]) -> bool:
    """Whether a resource's status shows that its job had stopped waiting for spec.after
    (it ran, or was ready to): enqueued again, it waits for nothing."""
    if status.get("status") != Status.QUEUED.value or status.get("startedTime") \
            or status.get("attempts"):
        return True
    ready = next((c for c in status.get("conditions") or () if c.get("type") == "Ready"), {})
    return ready.get("reason") != WAITING


def resolve_lost(resource: JobResource, registry: JobRegistry) -> Resolution:
    """What spec.after means for a resource whose job Redis lost: nothing to wait for if
    it had left its dependencies behind, else as resolve() says now."""
    if not resource.spec.get("after") or left_dependencies_behind(resource.status):
        return Resolution()
    return resolve(resource, registry)


async def absent_dependencies(queue: Queue, resources: list[JobResource]) -> dict[str, list[str]]:
    """uid -> the job keys it depends on that Redis does not hold (lost with it, and not
    enqueued again yet: the engine refuses an unknown dependency), in one round trip."""
    wanted = [(r.uid, key) for r in resources for key in r.depends_on or ()]
    if not wanted:
        return {}
    async with queue.redis.pipeline(transaction=False) as pipe:
        for _, key in wanted:
            pipe.exists(queue.keys.job(key))
        found = await pipe.execute()
    absent: dict[str, list[str]] = {}
    for (uid, key), exists in zip(wanted, found, strict=True):
        if not exists:
            absent.setdefault(uid, []).append(key)
    return absent


async def dependencies_met(
    queue: Queue, missing: list[JobResource], registry: JobRegistry,
    refuse: Callable[[JobResource, tuple[str, str]], Awaitable[None]],
    recheck: Callable[[str], Any],
) -> list[JobResource]:
    """Those of `missing` (resources whose job is to be enqueued) to enqueue now, each
    with the job keys it depends on. One that Redis lost has spec.after resolved again
    (resolve_lost): a failed dependency refuses it (refuse(resource, (reason, message)):
    the status writer's, which keeps it on the resource, posts the Event, counts it). One
    waiting for a job that Redis does not hold (yet) is left out: recheck(uid) looks at
    it again later."""
    ready = []
    for resource in missing:
        if resource.status.get("jobKey"):  # enqueued before: Redis lost it
            found = resolve_lost(resource, registry)
            if found.refusal:
                await refuse(resource, found.refusal)
                continue
            if found.waiting:
                recheck(resource.uid)
                continue
            resource.depends_on = found.keys or None
        ready.append(resource)
    absent = await absent_dependencies(queue, ready)
    for uid, keys in absent.items():
        log.debug("job of %s waits for its dependencies to be in Redis: %s", uid, keys)
        recheck(uid)
    return [r for r in ready if r.uid not in absent]
