"""The operator keeps no kwargs or meta of a Job whose job is in Redis (registry.py,
ARGUMENTS): a tenant may keep hundreds of Jobs queued, each with the largest kwargs the
operator takes. When Redis loses such a job, the operator reads them back from the API
server and enqueues the job again as it was."""

from __future__ import annotations

from operator_harness import Harness, eventually, status

KWARGS = {f"k{i:04}": [i] for i in range(2000)}
META = {"team": "a", "tags": ["x", "y"]}


async def test_a_lost_job_is_enqueued_again_with_kwargs_and_meta_read_back(
        harness: Harness) -> None:
    harness.start_operator()
    await harness.create_job("big", "echo", kwargs=KWARGS, meta=META)
    body = await harness.wait_status("big", "queued", within=60)
    key = status(body)["jobKey"]
    queue = harness.queue()
    assert (await queue.job(key)).kwargs == KWARGS
    await queue.redis.flushall()  # the operator runs on; its registry has no kwargs

    async def back() -> object:
        return await queue.job(key)
    job = await eventually(back, within=30, what="the job enqueued again")
    assert job.kwargs == KWARGS and job.meta == META
    harness.start_worker()
    await harness.wait_status("big", "complete", within=60)
    assert (await queue.job(key)).result == KWARGS
