"""The operator's in-memory view of Job resources, fed by kopf's watch events.

The status writer needs, for a job key from Redis, the resource(s) to patch, and for a
resource its spec and the status the API server last showed. Keeping that here saves
an API read per status patch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from podq.operator.jobspec import queue_name
from podq.operator.kube import ObjectRef
from podq.operator.names import API_VERSION, job_key
from podq.operator.status import is_finished

# What a finished resource still needs: its deletion after ttlSecondsAfterFinished.
_KEPT_SPEC = ("queue", "key", "ttlSecondsAfterFinished")
_KEPT_STATUS = ("status", "completedTime", "attempts")
# What an enqueued resource no longer needs: its job in Redis carries them. Parsed, 64 KiB
# of kwargs made of small values take some 800 KiB; a tenant keeping hundreds of such
# Jobs queued took the operator past its memory limit. Read back (restore_arguments)
# only if Redis loses the job before it finished.
ARGUMENTS = ("kwargs", "meta")


def _compare(a: str, b: str) -> int | None:
    """Order of two resourceVersions of one object (-1, 0, 1); None if not comparable.
    Kubernetes calls them opaque, but for one object they grow as integers (etcd
    revisions), which is what every watch cache relies on."""
    try:
        x, y = int(a), int(b)
    except ValueError:
        return None
    return (x > y) - (x < y)


@dataclass
class JobResource:
    namespace: str
    name: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    key: str
    queue: str
    refusal: tuple[str, str] | None = None  # (reason, message) when never enqueued
    deleting: bool = False
    finalizers: list[str] = field(default_factory=list)
    resource_version: str = ""  # of the object `status` was last taken from
    depends_on: list[str] | None = None  # job keys of the Jobs named in spec.after (after.py)
    arguments_dropped: bool = False  # spec.kwargs/meta left out once enqueued (compact)

    def record(self, status: dict[str, Any], resource_version: str) -> bool:
        """Take `status` as the current one unless what we hold is newer (a watch event
        can trail our own patch; our patch's response can trail another operator's
        patch and its event). Returns whether it was taken.

        Only the resourceVersion decides: with two operators, a status patch computed
        from an older Redis read can land after a finished one, and the registry must
        then show what the API server holds (unfinished), or no operator ever writes the
        final status again. Without comparable versions, a finished status is kept."""
        newer = _compare(resource_version, self.resource_version)
        if newer is None:
            if is_finished(self.status) and not is_finished(status):
                return False
        elif newer < 0:
            return False
        self.status = status
        self.resource_version = resource_version or self.resource_version
        return True

    def compact(self) -> None:
        """Drop what a finished resource no longer needs (kwargs, result, conditions):
        thousands of finished Jobs may sit in a namespace, the operator's memory must not
        grow with their payloads. Finished resources are never synced again. An enqueued
        one (status.jobKey) keeps everything but its ARGUMENTS."""
        if is_finished(self.status):
            self.spec = {k: self.spec[k] for k in _KEPT_SPEC if k in self.spec}
            self.status = {k: self.status[k] for k in _KEPT_STATUS if k in self.status}
        elif self.status.get("jobKey") and any(k in self.spec for k in ARGUMENTS):
            self.spec = {k: v for k, v in self.spec.items() if k not in ARGUMENTS}
            self.arguments_dropped = True

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(API_VERSION, "Job", self.namespace, self.name, self.uid)


@dataclass
class JobRegistry:
    by_uid: dict[str, JobResource] = field(default_factory=dict)
    by_key: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (queue, key)
    by_name: dict[tuple[str, str], str] = field(default_factory=dict)  # (namespace, name)
    per_queue: Counter[str] = field(default_factory=Counter)  # queue -> resources known

    def observe(self, body: Mapping[str, Any]) -> tuple[JobResource, bool]:
        """Record what a watch event showed; returns (resource, whether it is new)."""
        meta = body["metadata"]
        uid = meta["uid"]
        spec = dict(body.get("spec") or {})
        known = self.by_uid.get(uid)
        if known is None:
            resource = JobResource(
                namespace=meta["namespace"],
                name=meta["name"],
                uid=uid,
                generation=int(meta.get("generation") or 1),
                spec=spec,
                status=dict(body.get("status") or {}),
                resource_version=str(meta.get("resourceVersion") or ""),
                key=job_key(meta["namespace"], meta["name"], uid, spec.get("key"),
                            (body.get("status") or {}).get("jobKey")),
                queue=queue_name(spec),
            )
            self.by_uid[uid] = resource
            self.by_key.setdefault((resource.queue, resource.key), set()).add(uid)
            self.by_name[(resource.namespace, resource.name)] = uid
            self.per_queue[resource.queue] += 1
            resource.deleting = bool(meta.get("deletionTimestamp"))
            resource.finalizers = list(meta.get("finalizers") or ())
            resource.compact()
            return resource, True
        status = dict(body.get("status") or {})
        # Events can trail our own patches (an event from before the patch arrives after
        # it): record() keeps whichever is newer.
        if known.record(status, str(meta.get("resourceVersion") or "")):
            known.spec = spec
        known.generation = int(meta.get("generation") or known.generation)
        known.deleting = bool(meta.get("deletionTimestamp"))
        known.finalizers = list(meta.get("finalizers") or ())
        known.compact()
        return known, False

    def forget(self, uid: str) -> JobResource | None:
        resource = self.by_uid.pop(uid, None)
        if resource is not None:
            if self.by_name.get((resource.namespace, resource.name)) == uid:
                del self.by_name[(resource.namespace, resource.name)]
            uids = self.by_key.get((resource.queue, resource.key))
            if uids is not None:
                uids.discard(uid)
                if not uids:
                    del self.by_key[(resource.queue, resource.key)]
            self.per_queue[resource.queue] -= 1
            if not self.per_queue[resource.queue]:
                del self.per_queue[resource.queue]
        return resource

    def live(self, uid: str) -> bool:
        """Whether this resource exists and is not being deleted."""
        resource = self.by_uid.get(uid)
        return resource is not None and not resource.deleting

    def for_key(self, queue: str, key: str) -> list[JobResource]:
        return [self.by_uid[uid] for uid in self.by_key.get((queue, key), ()) if uid in self.by_uid]

    def named(self, namespace: str, name: str) -> JobResource | None:
        uid = self.by_name.get((namespace, name))
        return self.by_uid.get(uid) if uid is not None else None

    def __iter__(self) -> Iterator[JobResource]:
        return iter(list(self.by_uid.values()))

    def __len__(self) -> int:
        return len(self.by_uid)

    def queues(self) -> set[str]:
        return {queue for queue, _ in self.by_key}

    def uses(self, queue: str) -> bool:
        """Whether a Job resource of this queue is known (a QueuePool user)."""
        return queue in self.per_queue
