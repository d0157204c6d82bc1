"""spec.after: a Job resource waits for other Job resources of its namespace.

The names become the job keys of those resources, which the engine waits for
(depends_on, docs/dependencies.md). A named resource that does not exist yet, or exists
but has not been enqueued, holds this one back: it is not enqueued (the engine refuses a
dependency it does not know) and its status says WaitingForDependencies, naming them.
It waits until they appear, like Argo's steps wait, or until it is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from podq.job import Status
from podq.operator.registry import JobRegistry, JobResource
from podq.operator.status import (
    DEPENDENCY_FAILED,
    MAX_CONDITION_MESSAGE,
    build_conditions,
    is_finished,
)

WAITING = "WaitingForDependencies"
OTHER_QUEUE = "DependencyInOtherQueue"
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
        else:
            found.keys.append(dep.key)
    return found


def waiting_status(waiting: list[str], *, generation: int, previous: dict[str, Any],
                   now_s: float) -> dict[str, Any]:
    """Status of a resource held back for spec.after: conditions only, no jobKey (which
    says its job was enqueued, and which the Jobs waiting for this one look for)."""
    message = ("waiting for spec.after: " + "; ".join(waiting))[:MAX_CONDITION_MESSAGE]
    facts = [("Ready", "False", WAITING, message), ("Reconciling", "True", WAITING, message),
             ("Stalled", "False", WAITING, message)]
    return {"observedGeneration": generation,
            "conditions": build_conditions(facts, previous.get("conditions"), generation, now_s)}
