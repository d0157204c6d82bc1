"""Enqueue claims on a real redis-server: one enqueue per resource across operators."""

from __future__ import annotations

import time

from podq import Queue, Status
from podq.operator.jobs import STALE_CLAIM_S, claim_key, enqueue_jobs, release_claim
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
