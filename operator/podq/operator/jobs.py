"""What the operator does to the queue for a Job resource: enqueue, recover, abort."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from podq import Job, Queue
from podq.job import RUNNING_STATUSES, TERMINAL_STATUSES, Status
from podq.operator.access import QueueAccess
from podq.operator.jobspec import InvalidJobSpec, engine_fields, rfc3339_to_epoch
from podq.operator.registry import JobResource
from podq.operator.status_values import rfc3339
from podq.redact import redact

ABORTED_BY_DELETE = "aborted: the Job resource was deleted"


@dataclass(frozen=True)
class Outcome:
    """What a domain function did, for logs, Events and tests."""

    action: str  # enqueued | exists | waiting | refused | aborted | finished | missing
    reason: str = ""
    message: str = ""
    until_s: float | None = None  # waiting: when it may go ahead (epoch s), if known


def _state(job: Job) -> Status:
    return Status(job.status)


# How long an enqueue claim lives: longer than any job should wait or run. Redis losing
# its data loses the claims with the jobs, which is what lets recovery re-enqueue.
CLAIM_TTL_S = 30 * 24 * 3600


def claim_key(queue: Queue, key: str) -> str:
    """Redis key recording that an operator enqueued this job (same hash tag as the
    queue, so it lives on the queue's shard)."""
    return queue.keys.operator_claim(key)


def claim_text(value: Any) -> str:
    """A claim ("<uid> <epoch s>") as read from Redis; foreign bytes do not raise."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def claimant(claim: str) -> str:
    """The resource uid a claim names."""
    return claim.partition(" ")[0]


async def enqueue_jobs(
    queue: Queue, resources: list[JobResource], access: QueueAccess | None = None,
) -> dict[str, Outcome]:
    """Enqueue the jobs of resources whose job is not in Redis, in two pipelined round
    trips; returns an Outcome per resource uid.

    The queue's own uniqueness only covers queued and running jobs: a job that another
    operator enqueued and a worker already finished would be replaced, and run again.
    So each job is first claimed with SET NX; only the claimant enqueues. A resource
    that already has a status (Redis lost the job, and the claim with it) keeps its
    attempt count. A stale claim whose job is gone is taken over (see _claim): the
    outcome's reason is then "ClaimTakenOver". A resource whose namespace may not use
    the queue is refused (QueueNotAllowed), before anything touches Redis.
    """
    outcomes: dict[str, Outcome] = {}
    candidates: list[tuple[JobResource, Job]] = []
    for resource in resources:
        refusal = access.refusal(resource.namespace, queue.name) if access else None
        if refusal is not None:
            outcomes[resource.uid] = Outcome("refused", *refusal)
            continue
        try:
            fields = engine_fields(resource.spec, resource.key)
            attempts = int(resource.status.get("attempts") or 0)
            if resource.depends_on:
                fields["depends_on"] = resource.depends_on
            candidates.append((resource, Job(**fields, attempts=attempts)))
        except InvalidJobSpec as invalid:
            outcomes[resource.uid] = Outcome("refused", invalid.reason, invalid.message)
        except Exception as error:  # one resource's bad value never holds up the others
            outcomes[resource.uid] = Outcome(
                "refused", "InvalidSpec", f"spec cannot become a job: {type(error).__name__}:"
                f" {str(error)[:300]}")
    if not candidates:
        return outcomes
    claimed = await _claim(queue, [r for r, _ in candidates])
    mine = [(r, job) for (r, job), won in zip(candidates, claimed, strict=True)
            if won is True or won == TAKEN_OVER]
    enqueued = await _enqueue_each_apart(queue, mine, outcomes)
    await _held_by_abort_marker(
        queue, [(r, job) for r, job in mine if job.key not in enqueued and r.uid not in outcomes],
        outcomes)
    for (resource, job), won in zip(candidates, claimed, strict=True):
        if resource.uid in outcomes:
            continue
        if won == OWN_CLAIM:
            outcomes[resource.uid] = Outcome(
                "exists", OWN_CLAIM, f"job {job.key} was enqueued for this resource already")
        elif isinstance(won, HeldClaim):
            outcomes[resource.uid] = won.outcome(job.key)
        elif job.key in enqueued:
            outcomes[resource.uid] = Outcome(
                "enqueued", "" if won is True else "ClaimTakenOver",
                f"enqueued {job.function} as {job.key} on {queue.name}")
        else:
            outcomes[resource.uid] = Outcome("exists", message=f"job {job.key} was enqueued")
    return outcomes


async def _enqueue_each_apart(
    queue: Queue, mine: list[tuple[JobResource, Job]], outcomes: dict[str, Outcome]
) -> set[str]:
    """Keys enqueued, in one pipelined call; should Redis refuse that call (a script's
    check), each job again on its own, so that only the culprit is refused (recorded in
    outcomes). Connection errors propagate: the whole pass is retried."""
    try:
        return {job.key for job in await queue.enqueue_many([job for _, job in mine])}
    except (ResponseError, TypeError, ValueError) as error:
        if len(mine) == 1:
            text = redact(f"{type(error).__name__}: {error}")[:500]
            outcomes[mine[0][0].uid] = Outcome(
                "refused", "EnqueueFailed", f"Redis refused the job: {text}")
            return set()
    enqueued: set[str] = set()
    for pair in mine:
        enqueued |= await _enqueue_each_apart(queue, [pair], outcomes)
    return enqueued


async def _held_by_abort_marker(
    queue: Queue, refused: list[tuple[JobResource, Job]], outcomes: dict[str, Outcome]
) -> None:
    """Of the claimed jobs the queue did not enqueue, those whose key's abort marker
    lives (an earlier run under that spec.key was aborted moments ago, as its resource
    was deleted): not this resource's run, whose status must not become that one's. Their
    claim is dropped and they wait (ABORT_PENDING; the status writer shows
    WaitingForPreviousRun and looks again with a backoff, previous.py): a later pass
    enqueues them once the marker expires. Others are taken by a pending job: the
    resource follows it."""
    if not refused:
        return
    async with queue.redis.pipeline(transaction=False) as pipe:
        for _, job in refused:
            pipe.exists(queue.keys.abort(job.key))
        marked = await pipe.execute()
    held = [(r, job) for (r, job), found in zip(refused, marked, strict=True) if found]
    if held:
        await queue.redis.delete(*(claim_key(queue, job.key) for _, job in held))
    for resource, job in held:
        outcomes[resource.uid] = Outcome(
            "waiting", ABORT_PENDING, f"job {job.key} of an earlier run was just aborted:"
            " enqueued once its abort marker expires")


# A claim whose job is gone and that no operator renewed for this long is taken over:
# its claimant died between claiming and enqueueing, or the finished job's record
# expired (its ttl) while no operator ran, before its outcome reached the status. The
# delay keeps a claim that another operator has just written (its enqueue in flight) safe.
STALE_CLAIM_S = 30
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
TAKEN_OVER = "taken over"
# The claim is this resource's own: the finished job under a key set in the spec is the
# run this resource asked for (it finished before its first status), not an earlier run.
OWN_CLAIM = "OwnClaim"
# The key's abort marker lives: its earlier run was aborted moments ago (_held_by_abort_marker)
ABORT_PENDING = "AbortPending"
# Another resource's fresh claim holds the key (two Jobs sharing a spec.key: the other's
# run finished, or is being enqueued): this one waits until that claim may be taken over.
CLAIM_HELD = "WaitingForKeyClaim"


@dataclass(frozen=True)
class HeldClaim:
    """Another resource's claim that is not stale yet: whose (uid), and until when."""

    claimant: str
    stale_at: float

    def outcome(self, key: str) -> Outcome:
        return Outcome(
            "waiting", CLAIM_HELD,
            f"job {key} under this spec.key was enqueued for another Job (uid"
            f" {self.claimant}), whose claim holds the key until"
            f" {rfc3339(self.stale_at)} ({STALE_CLAIM_S} s after its enqueue, so that no"
            " job runs twice); this Job follows that run if it is queued or running by"
            " then, or runs anew", self.stale_at)


async def _claim(queue: Queue, resources: list[JobResource]) -> list[bool | str | HeldClaim]:
    """Claim each resource's key (only called for jobs missing from Redis, or finished
    under a spec.key). Returns per resource True (claimed), TAKEN_OVER: a claim older
    than STALE_CLAIM_S was replaced (compare-and-set, so only one operator wins),
    OWN_CLAIM: this resource's own fresh claim holds it, a HeldClaim: another resource's
    fresh claim holds it, or False (the claim changed meanwhile: look again)."""
    now = time.time()
    keys = [claim_key(queue, r.key) for r in resources]
    async with queue.redis.pipeline(transaction=False) as pipe:
        for key, resource in zip(keys, resources, strict=True):
            pipe.set(key, f"{resource.uid} {now:.3f}", nx=True, ex=CLAIM_TTL_S)
        won: list[bool | str | HeldClaim] = [bool(w) for w in await pipe.execute()]
    lost = [i for i, w in enumerate(won) if not w]
    if lost:
        values = await queue.redis.mget([keys[i] for i in lost])
        take_over = queue.redis.register_script(_TAKE_OVER)
        for i, value in zip(lost, values, strict=True):
            if value is None:
                continue
            text = claim_text(value)
            holder, stale_at = claimant(text), _claimed_at(text, now) + STALE_CLAIM_S
            if now <= stale_at:
                won[i] = OWN_CLAIM if holder == resources[i].uid else HeldClaim(
                    holder, stale_at)
            elif await take_over(
                    keys=[keys[i]], args=[text, f"{resources[i].uid} {now:.3f}", CLAIM_TTL_S]):
                won[i] = TAKEN_OVER
    return won


# A job Redis lost while it ran (FLUSHALL, a restart empty) is usually still running on
# its worker, which writes it back when the run ends. Enqueued again at once, it would
# run twice; so it is left to that write-back until the run's timeout, plus a margin, has
# passed (at most UNBOUNDED_RUN_WAIT_S when the timeout is 0 or left to the worker).
WRITE_BACK_MARGIN_S = 15.0
UNBOUNDED_RUN_WAIT_S = 300.0


def write_back_deadline(resource: JobResource) -> float | None:
    """Epoch seconds until which the missing job of this resource is left to its
    worker's write-back; None when it should be enqueued again now (it was not running
    as far as the status shows)."""
    status = resource.status
    if status.get("status") not in RUNNING_STATUSES or not status.get("startedTime"):
        return None
    timeout = resource.spec.get("timeout")
    run_s = min(timeout, UNBOUNDED_RUN_WAIT_S) if timeout else UNBOUNDED_RUN_WAIT_S
    return rfc3339_to_epoch(status["startedTime"]) + run_s + WRITE_BACK_MARGIN_S


def _claimed_at(claim: str, now: float) -> float:
    """When a claim ("<uid> <epoch s>") was written; 0 (stale) for anything else, such
    as foreign data under the claim's key, including a time further ahead of `now` than
    operators' clocks can differ (STALE_CLAIM_S): it would hold the key for good."""
    try:
        stamp = float(claim.partition(" ")[2])
    except ValueError:
        return 0.0
    return stamp if math.isfinite(stamp) and stamp <= now + STALE_CLAIM_S else 0.0


async def release_claim(queue: Queue, key: str) -> None:
    """Forget the claim of a deleted resource's job."""
    await queue.redis.delete(claim_key(queue, key))


async def abort_job(queue: Queue, key: str, error: str = ABORTED_BY_DELETE) -> Outcome:
    """Abort the job if it has not finished; the worker cancels a running one."""
    (job,) = await queue.jobs([key], brief=True)  # its status: not its kwargs
    if job is None:
        return Outcome("missing")
    if _state(job) in TERMINAL_STATUSES:
        return Outcome("finished", message=f"job {key} already {_state(job).value}")
    state = _state(job)
    await queue.abort(job, error)
    return Outcome("aborted", message=f"aborted job {key}, which was {state.value}")
