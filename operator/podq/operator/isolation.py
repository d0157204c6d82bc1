"""Each Job resource on its own: one resource's trouble never holds up the others.

- `read_jobs` reads a queue's jobs briefly in one round trip; a record that cannot be decoded
  (corrupted or foreign data under the queue's keys) becomes a `CorruptRecord` for its
  resource alone instead of failing the whole read.
- `Quarantine` backs off the retries of a resource whose sync keeps failing
  (exponential, capped) and, from the STALL_AFTER-th failure, marks it: a Stalled
  condition naming what failed, and a Warning Event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from podq import Queue
from podq.operator.conditions import MAX_CONDITION_MESSAGE, build_conditions, stalled_facts
from podq.operator.jobs import Outcome, abort_job
from podq.operator.kube import EventRecorder, patch_job_status, refusal_text
from podq.operator.registry import JobResource
from podq.redact import redact

log = logging.getLogger("podq.operator")

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 60.0
STALL_AFTER = 3
# failures that are everybody's (Redis or the API server away): the whole pass retries
OUTAGES: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class CorruptRecord:
    """A job record in Redis that cannot be read as a job."""

    redis_key: str
    error: str
    status: str = "corrupt"  # not a job status: neither enqueued again nor finished

    @property
    def message(self) -> str:
        return f"the job record {self.redis_key} in Redis cannot be read: {self.error}"


async def read_jobs(queue: Queue, keys: list[str]) -> list[Any]:
    """queue.jobs(keys) read briefly (the fields a status shows, never kwargs or meta:
    the operator's memory does not grow with the arguments of the jobs it watches),
    except that a record that cannot be read is a CorruptRecord in its place (one round
    trip; outages propagate). Ready jobs that wait on the queue's own rate limit come
    with `blocked` set (a second round trip, only under such a limit): their resources
    say RateLimited."""
    found = await queue.jobs_or_errors(keys, queue_held=True, brief=True)
    return [CorruptRecord(queue.job_id(key), describe(item)) if isinstance(item, Exception)
            else item for key, item in zip(keys, found, strict=True)]


async def abort_readable(queue: Queue, key: str) -> Outcome:
    """abort_job, except that a job record that cannot be read is left as it is (there
    is nothing to abort that a worker could run): the resource can still go."""
    try:
        return await abort_job(queue, key)
    except OUTAGES:
        raise
    except Exception as error:
        return Outcome("unreadable", message=f"job record {queue.job_id(key)} cannot be read"
                       f" ({describe(error)}); left as it is")


def describe(error: BaseException) -> str:
    """One line about an error, secrets masked, bounded: an API server's refusal as its
    reason and message (kube.refusal_text, as in FailedCreate Events), not its JSON body."""
    if isinstance(error, ApiException):
        return refusal_text(error)
    return redact(f"{type(error).__name__}: {error}")[:MAX_CONDITION_MESSAGE - 200]


class Quarantine:
    """Backoff and marking for resources whose sync fails (see the module docstring)."""

    def __init__(self, custom: client.CustomObjectsApi, events: EventRecorder,
                 mark: Callable[[str], None]) -> None:
        self.custom = custom
        self.events = events
        self.mark = mark
        self.failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._stalling: set[asyncio.Future[None]] = set()

    def delay(self, failures: int) -> float:
        return min(FIRST_DELAY_S * 2 ** (failures - 1), MAX_DELAY_S)

    def waiting(self, uid: str) -> bool:
        """Whether uid is backing off (its timer marks it when the wait is over)."""
        return uid in self._timers

    def succeeded(self, uid: str) -> None:
        self.failures.pop(uid, None)

    def forget(self, uid: str) -> None:
        self.failures.pop(uid, None)
        timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()

    def failed(self, resource: JobResource | None, uid: str, error: BaseException,
               reason: str = "SyncFailed") -> float:
        """Count a failure of uid, retry it after its backoff; returns the delay."""
        count = self.failures[uid] = self.failures.get(uid, 0) + 1
        wait = self.delay(count)
        log.warning("sync of %s failed %d time(s) (%s); next try in %.1f s",
                    resource.name if resource else uid, count, describe(error), wait)
        if uid not in self._timers:
            def again() -> None:
                self._timers.pop(uid, None)
                self.mark(uid)
            self._timers[uid] = asyncio.get_running_loop().call_later(wait, again)
        if resource is not None and count == STALL_AFTER:
            task = asyncio.ensure_future(self.stall(resource, reason, describe(error)))
            self._stalling.add(task)
            task.add_done_callback(self._stalling.discard)
        return wait

    async def stall(self, resource: JobResource, reason: str, detail: str) -> None:
        """Say on the resource that the operator cannot handle it: Stalled True with the
        reason, and a Warning Event (best effort: this may fail as the sync did)."""
        message = f"the operator cannot handle this Job and retries with backoff: {detail}"
        facts = stalled_facts(reason, message)
        previous = resource.status.get("conditions") or []
        kept = [c for c in previous if c.get("type") not in {fact[0] for fact in facts}]
        conditions = kept + build_conditions(facts, previous, resource.generation, time.time())
        try:
            await self.events.post(resource.ref, "Warning", reason, message)
            await patch_job_status(self.custom, resource.namespace, resource.name,
                                   {"conditions": conditions})
        except Exception as error:
            log.warning("could not mark %s/%s %s: %s", resource.namespace, resource.name,
                        reason, describe(error))
