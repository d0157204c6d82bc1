"""A Job made under the spec.key of an earlier one whose run has not ended: which
unfinished job under its key it follows, and which it waits for (previous.py), on a real
redis-server."""

from __future__ import annotations

import pytest

from podq import Queue, Status
from podq.operator.jobs import (
    CLAIM_HELD,
    STALE_CLAIM_S,
    HeldClaim,
    claim_key,
    enqueue_jobs,
    release_claim,
)
from podq.operator.previous import (
    FIRST_RECHECK_S,
    MAX_RECHECK_S,
    PAST_DUE_S,
    PreviousRuns,
    earlier_runs,
)
from podq.operator.registry import JobRegistry, JobResource


def made(registry: JobRegistry, name: str, uid: str, *, deleting: bool = False,
         status: dict | None = None) -> JobResource:
    meta = {"namespace": "ns", "name": name, "uid": uid}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    body = {"metadata": meta, "spec": {"function": "noop", "queue": "previous", "key": "k"},
            "status": status or {}}
    return registry.observe(body)[0]


async def waits(queue: Queue, registry: JobRegistry, resource: JobResource) -> str | None:
    job = await queue.job(resource.key)
    return (await earlier_runs(queue, [(resource, job)], registry.live)).get(resource.uid)


async def test_a_new_job_waits_for_the_run_of_a_deleted_one_under_its_key(
    redis_url: str,
) -> None:
    queue = Queue.from_url(redis_url, name="previous")
    try:
        registry = JobRegistry()
        old = made(registry, "old", "uid-old")
        assert (await enqueue_jobs(queue, [old]))[old.uid].action == "enqueued"
        new = made(registry, "new", "uid-new")
        assert new.key == old.key
        # two live Jobs sharing a key share its run
        assert await waits(queue, registry, new) is None
        taken, _ = await queue.take(1, "w")  # a worker runs it
        assert [job.key for job in taken] == [old.key]
        # the old one is being deleted (its finalizer has not aborted the run yet): the
        # run is not the new one's; nor once the old one is gone from the registry
        made(registry, "old", "uid-old", deleting=True)
        assert "uid-old" in (await waits(queue, registry, new) or "")
        registry.forget(old.uid)
        assert "uid-old" in (await waits(queue, registry, new) or "")
        # the finalizer aborts it: aborting (a worker had it) without a claim, still not
        # the new one's, whose own claim it is not
        await queue.abort(await queue.job(old.key), "aborted: the Job resource was deleted")
        assert (await queue.job(old.key)).status == Status.ABORTING
        await release_claim(queue, old.key)
        assert "being aborted" in (await waits(queue, registry, new) or "")
        # a resource that already follows the job (status.jobKey) is never held
        follower = made(registry, "follower", "uid-follower", status={"jobKey": old.key})
        assert await waits(queue, registry, follower) is None
        # ended: nothing to wait for (the enqueue path takes over, AbortPending first)
        await queue.finish(taken[0], Status.ABORTED, error="aborted")
        assert (await queue.job(old.key)).status == Status.ABORTED
        assert await waits(queue, registry, new) is None
    finally:
        await queue.disconnect()


async def test_a_new_job_follows_a_job_enqueued_from_python_or_its_own(redis_url: str) -> None:
    queue = Queue.from_url(redis_url, name="previous")
    try:
        registry = JobRegistry()
        new = made(registry, "new", "uid-new")
        # enqueued from Python under the same key (no claim): deduplication is shared
        assert await queue.enqueue("noop", key=new.key) is not None
        assert await waits(queue, registry, new) is None
        # its own claim: its own run, even aborting (it follows its own abort)
        await queue.redis.set(claim_key(queue, new.key), f"{new.uid} 0")
        assert len((await queue.take(1, "w"))[0]) == 1
        await queue.abort(await queue.job(new.key), "aborted")
        assert (await queue.job(new.key)).status == Status.ABORTING
        assert await waits(queue, registry, new) is None
        # another resource's claim on an aborting run: not this one's
        await queue.redis.set(claim_key(queue, new.key), "uid-other 0")
        assert "being aborted" in (await waits(queue, registry, new) or "")
    finally:
        await queue.disconnect()


def test_rechecks_back_off_and_are_not_stacked() -> None:
    scheduled: list[tuple[str, float]] = []
    pending: set[str] = set()

    def mark_later(uid: str, delay: float) -> bool:
        if uid in pending:
            return False
        pending.add(uid)
        scheduled.append((uid, delay))
        return True

    previous = PreviousRuns(mark_later)
    resource = made(JobRegistry(), "new", "uid-new")
    for _ in range(8):
        status = previous.hold(resource, "waiting", 0.0)
        previous.hold(resource, "waiting", 0.0)  # a change notified meanwhile: not stacked
        pending.clear()
    delays = [delay for _, delay in scheduled]
    assert delays[0] == FIRST_RECHECK_S and delays[-1] == MAX_RECHECK_S
    assert delays == sorted(delays) and len(delays) == 8
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WaitingForPreviousRun")
    assert "status" not in status and "jobKey" not in status
    previous.forget(resource.uid)
    assert len(previous) == 0


async def test_a_job_whose_key_another_jobs_fresh_claim_holds_waits_until_it_is_stale(
    redis_url: str,
) -> None:
    """Two Jobs sharing a spec.key: the first one's run finished, its claim is fresh. The
    second waits, told until when (the status writer looks again then, not every pass),
    and is enqueued once the claim is stale."""
    queue = Queue.from_url(redis_url, name="previous")
    try:
        registry = JobRegistry()
        old = made(registry, "old", "uid-old")
        assert (await enqueue_jobs(queue, [old]))[old.uid].action == "enqueued"
        taken, _ = await queue.take(1, "w")
        await queue.finish(taken[0], Status.COMPLETE, result="old")
        claim = (await queue.redis.get(claim_key(queue, old.key))).decode()
        claimed_at = float(claim.split()[1])
        new = made(registry, "new", "uid-new")
        outcome = (await enqueue_jobs(queue, [new]))[new.uid]
        assert (outcome.action, outcome.reason) == ("waiting", CLAIM_HELD)
        assert outcome.until_s == pytest.approx(claimed_at + STALE_CLAIM_S)
        assert "uid-old" in outcome.message and "until" in outcome.message
        assert (await queue.job(new.key)).result == "old"  # nothing touched
        assert (await queue.redis.get(claim_key(queue, old.key))).decode() == claim
        # the claim turns stale: the new Job's run replaces the finished one
        stale = claimed_at - STALE_CLAIM_S
        await queue.redis.set(claim_key(queue, old.key), f"uid-old {stale:.3f}")
        outcome = (await enqueue_jobs(queue, [new]))[new.uid]
        assert (outcome.action, outcome.reason) == ("enqueued", "ClaimTakenOver")
        assert (await queue.job(new.key)).status == Status.QUEUED
        assert (await queue.redis.get(claim_key(queue, new.key))).decode().startswith("uid-new ")
    finally:
        await queue.disconnect()


def test_a_wait_for_a_claim_looks_again_just_after_it_turns_stale() -> None:
    delays: list[float] = []
    previous = PreviousRuns(lambda _uid, delay: delays.append(delay) is None)
    resource = made(JobRegistry(), "new", "uid-new")
    held = HeldClaim("uid-old", 100.0).outcome(resource.key)
    previous.hold(resource, held, 10.0)  # far off: the backoff
    status = previous.hold(resource, held, 99.9)  # stale in 0.1 s: just after that
    previous.hold(resource, held, 101.0)  # past: at once (a claim changed meanwhile)
    assert delays == [FIRST_RECHECK_S, pytest.approx(0.1 + PAST_DUE_S), PAST_DUE_S]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", CLAIM_HELD)
    assert "uid-old" in ready["message"]
    assert "status" not in status and "jobKey" not in status
