"""A Job resource made under the `spec.key` of an earlier one (deleted and made again:
GitOps, `kubectl replace --force`, a CronJob's Replace policy) while that one's run has
not ended: the job Redis holds under the key is the earlier resource's run, aborting
(its resource was deleted) or about to be aborted (its resource is being deleted). The
new resource never takes that run's status, which would end it Aborted without ever
running: it waits (Ready condition WaitingForPreviousRun, no status.status) until the
run has ended, then its own run is enqueued as for a finished job under its key.

How a run is told to be another resource's: the operator's enqueue claim
(jobs.claim_key) names the resource it enqueued the job for (its uid). A resource with
no status.jobKey yet follows an unfinished job under its key when the claim is its own,
or when the job is not aborting and the claim is missing (a job enqueued from Python:
deduplication shared, as documented) or is another live resource's (two Jobs sharing a
key). It waits when the job is aborting and the claim is not its own, or when the claim
is a resource's that is gone or being deleted (its finalizer aborts the run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from podq import Job, Queue
from podq.job import TERMINAL_STATUSES, Status
from podq.operator.conditions import build_conditions, in_progress_facts
from podq.operator.jobs import CLAIM_HELD, Outcome, claim_key, claim_text, claimant
from podq.operator.registry import JobResource

PREVIOUS_RUN = "WaitingForPreviousRun"
# Rechecks of a waiting resource back off from the first to the last delay. The end of
# the earlier run is a change in Redis that marks the resource at once (the queue's
# change feed); the rechecks cover a notification lost and the abort marker expiring.
FIRST_RECHECK_S = 0.25
MAX_RECHECK_S = 2.0
# After the moment a wait ends (a claim turns stale: jobs.HeldClaim), so as to look after it
PAST_DUE_S = 0.05


async def earlier_runs(
    queue: Queue, pairs: list[tuple[JobResource, Any]], live: Callable[[str], bool],
) -> dict[str, str | Outcome]:
    """uid -> why it waits, for those of the (resource, job read from Redis) pairs whose
    unfinished job is an earlier resource's run (see the module docstring); one round
    trip, only for resources that set spec.key and have no status.jobKey yet. live(uid)
    says whether that resource exists and is not being deleted."""
    asked = [(r, job) for r, job in pairs
             if r.spec.get("key") and not r.status.get("jobKey") and isinstance(job, Job)
             and Status(job.status) not in TERMINAL_STATUSES]
    if not asked:
        return {}
    claims = await queue.redis.mget([claim_key(queue, r.key) for r, _ in asked])
    waiting: dict[str, str | Outcome] = {}
    for (resource, job), claim in zip(asked, claims, strict=True):
        holder = None if claim is None else claimant(claim_text(claim))
        if holder == resource.uid:
            continue
        if Status(job.status) == Status.ABORTING:
            waiting[resource.uid] = (
                f"job {job.key} of an earlier run is being aborted; this Job runs anew once"
                " it has ended")
        elif holder is not None and not live(holder):
            waiting[resource.uid] = (
                f"job {job.key} ({Status(job.status).value}) is the run of another Job, deleted"
                f" or being deleted (uid {holder}); this Job runs anew once that run has"
                " ended")
    return waiting


def previous_run_status(message: str, *, generation: int, previous: dict[str, Any],
                        now_s: float, reason: str = PREVIOUS_RUN) -> dict[str, Any]:
    """Status of a resource waiting for an earlier run under its key: conditions only, no
    jobKey and no status (neither is this resource's yet)."""
    return {"observedGeneration": generation,
            "conditions": build_conditions(in_progress_facts(reason, message),
                                           previous.get("conditions"), generation, now_s)}


class PreviousRuns:
    """The resources waiting for an earlier run, or for another Job's claim on their key
    (jobs.CLAIM_HELD): each is looked at again after a delay (mark_later(uid, delay_s):
    the status writer's), doubling from FIRST_RECHECK_S up to MAX_RECHECK_S while it
    keeps waiting, and no later than just after the moment its wait is known to end."""

    def __init__(self, mark_later: Callable[[str, float], bool]) -> None:
        self.mark_later = mark_later
        self._tries: dict[str, int] = {}

    def hold(self, resource: JobResource, why: str | Outcome, now_s: float) -> dict[str, Any]:
        """Schedule the resource's next look (unless one is pending); returns the status
        it should show meanwhile. why: earlier_runs' message, or an enqueue's Outcome
        (action "waiting": AbortPending, or CLAIM_HELD with the claim's end)."""
        tries = self._tries.get(resource.uid, 0)
        delay = min(FIRST_RECHECK_S * 2 ** min(tries, 16), MAX_RECHECK_S)
        reason, message = PREVIOUS_RUN, why
        if isinstance(why, Outcome):
            message = why.message
            if why.reason == CLAIM_HELD:
                reason = CLAIM_HELD
            if why.until_s is not None:
                delay = min(delay, max(why.until_s - now_s, 0.0) + PAST_DUE_S)
        if self.mark_later(resource.uid, delay):
            self._tries[resource.uid] = tries + 1
        return previous_run_status(message, generation=resource.generation,
                                   previous=resource.status, now_s=now_s, reason=reason)

    def forget(self, uid: str) -> None:
        """It waits no more (enqueued, or deleted)."""
        self._tries.pop(uid, None)

    def __len__(self) -> int:
        return len(self._tries)
