"""Enqueue claims on a real redis-server: one enqueue per resource across operators."""

from __future__ import annotations

import time

from podq import Queue, Status
from podq.operator.jobs import (
    STALE_CLAIM_S,
    UNBOUNDED_RUN_WAIT_S,
    WRITE_BACK_MARGIN_S,
    claim_key,
    enqueue_jobs,
    release_claim,
    write_back_deadline,
)
from podq.operator.registry import JobRegistry


def resource(registry: JobRegistry, name: str, status: dict | None = None):
    body = {"metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}"},
            "spec": {"function": "noop", "queue": "claims"}, "status": status or {}}
    return registry.observe(body)[0]


async def test_only_the_first_claimant_enqueues_even_after_the_job_finished(
    redis_url: str,
) -> None:
    queue = Queue.from_url(redis_url, name="claims")
    try:
        job = resource(JobRegistry(), "a")
        first = await enqueue_jobs(queue, [job])
        assert first[job.uid].action == "enqueued"
        await queue.finish(await queue.job(job.key), Status.COMPLETE, result=1)
        assert (await queue.job(job.key)).status == Status.COMPLETE
        # a second operator that saw no job a moment ago must not run it again
        again = await enqueue_jobs(queue, [resource(JobRegistry(), "a")])
        assert again[job.uid].action == "exists"
        await release_claim(queue, job.key)
        assert await queue.redis.get(claim_key(queue, job.key)) is None
    finally:
        await queue.disconnect()


async def test_a_stale_claim_without_a_job_is_taken_over(redis_url: str) -> None:
    queue = Queue.from_url(redis_url, name="claims")
    try:
        job = resource(JobRegistry(), "b")
        old = time.time() - STALE_CLAIM_S - 5
        await queue.redis.set(claim_key(queue, job.key), f"{job.uid} {old:.3f}")
        taken = await enqueue_jobs(queue, [job])
        assert taken[job.uid].action == "enqueued"
        assert await queue.job(job.key) is not None
        fresh = resource(JobRegistry(), "c")
        await queue.redis.set(claim_key(queue, fresh.key), f"{fresh.uid} {time.time():.3f}")
        assert (await enqueue_jobs(queue, [fresh]))[fresh.uid].action == "exists"
    finally:
        await queue.disconnect()


async def test_a_claim_dated_far_ahead_is_stale_not_held_for_good(redis_url: str) -> None:
    """Foreign data under a claim key with a time in year 9999 would make the Job wait
    for its claim to go stale forever; ahead by more than clocks differ, it is stale."""
    queue = Queue.from_url(redis_url, name="claims")
    try:
        planted = resource(JobRegistry(), "d")
        await queue.redis.set(claim_key(queue, planted.key), "someone 1e18")
        taken = await enqueue_jobs(queue, [planted])
        assert taken[planted.uid].action == "enqueued"
        assert await queue.job(planted.key) is not None
        # a claim a few seconds ahead (another operator's clock) still holds
        skewed = resource(JobRegistry(), "e")
        await queue.redis.set(claim_key(queue, skewed.key),
                              f"other {time.time() + STALE_CLAIM_S / 2:.3f}")
        held = await enqueue_jobs(queue, [skewed])
        assert held[skewed.uid].action != "enqueued"
        assert await queue.job(skewed.key) is None
    finally:
        await queue.disconnect()


async def test_a_job_whose_record_expired_unread_is_enqueued_again_keeping_attempts(
    redis_url: str,
) -> None:
    """An operator outage longer than the job's ttl: the claim stayed, the finished
    job's record expired, the resource still shows it active. Enqueued again (at least
    once), never left waiting for a job that will not come back."""
    queue = Queue.from_url(redis_url, name="claims")
    try:
        job = resource(JobRegistry(), "expired", status={"status": "active", "attempts": 1})
        old = time.time() - STALE_CLAIM_S - 5
        await queue.redis.set(claim_key(queue, job.key), f"{job.uid} {old:.3f}")
        assert await queue.job(job.key) is None  # expired: only the claim is left
        outcome = (await enqueue_jobs(queue, [job]))[job.uid]
        assert (outcome.action, outcome.reason) == ("enqueued", "ClaimTakenOver")
        again = await queue.job(job.key)
        assert again is not None and again.attempts == 1
        # the claim is fresh again: a second operator that read "missing" a moment before
        # this enqueue does not enqueue it twice
        await queue.redis.delete(queue.job_id(job.key))
        second = await enqueue_jobs(queue, [resource(JobRegistry(), "expired",
                                                     status={"status": "active"})])
        assert second[job.uid].action == "exists"
    finally:
        await queue.disconnect()


def test_a_running_job_lost_by_redis_is_left_to_its_worker_until_its_timeout() -> None:
    registry = JobRegistry()
    running = resource(registry, "running", status={
        "status": "active", "startedTime": "2026-01-01T00:00:00.000Z"})
    running.spec["timeout"] = 60
    started = 1767225600.0  # 2026-01-01T00:00:00Z
    assert write_back_deadline(running) == started + 60 + WRITE_BACK_MARGIN_S
    running.spec["timeout"] = 0  # no timeout: waited for, but not for ever
    assert write_back_deadline(running) == started + UNBOUNDED_RUN_WAIT_S + WRITE_BACK_MARGIN_S
    queued = resource(registry, "queued", status={"status": "queued"})
    assert write_back_deadline(queued) is None  # never ran: enqueued again at once
