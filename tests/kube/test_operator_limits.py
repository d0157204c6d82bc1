"""Limits set from Kubernetes' side (`podq worker --limit`, what the chart's
`workers.limits` renders), and Job resources saying that they wait on one: the Ready
reason and the Reason column of `kubectl get`."""

from __future__ import annotations

from operator_harness import (
    Harness,
    condition,
    eventually,
    status,
)

from podq.queue import QUEUE_LIMIT, Limit


async def start_limited(harness: Harness, concurrency: int, flag: str,
                        limits: dict[str, Limit]) -> None:
    """The operator, and a worker started with `--limit FLAG`, once that is in Redis."""
    harness.start_operator()
    harness.start_worker(concurrency=concurrency, args=("--limit", flag))

    async def limit_set() -> bool:
        return await harness.queue().limits() == limits
    await eventually(limit_set, within=30, what="the worker's --limit in Redis")


async def test_a_worker_flag_limit_holds_jobs_and_kubectl_says_so(harness: Harness) -> None:
    await start_limited(harness, 4, "nap=concurrency:1", {"nap": Limit(concurrency=1)})
    for name in ("nap-a", "nap-b"):
        await harness.create_job(name, "nap", kwargs={"seconds": 4})

    async def one_limited() -> dict[str, str] | None:
        column = harness.reason_column()  # what `kubectl get` shows
        return column if list(column.values()).count("ConcurrencyLimited") == 1 else None
    column = await eventually(one_limited, within=30, what="a nap ConcurrencyLimited")
    limited = next(name for name, reason in column.items() if reason == "ConcurrencyLimited")
    assert status(await harness.get_job(limited))["status"] in ("queued", "active")
    for name in ("nap-a", "nap-b"):
        await harness.wait_status(name, "complete", within=60)
    jobs = [await harness.queue().job(status(await harness.get_job(n))["jobKey"])
            for n in ("nap-a", "nap-b")]
    first, second = sorted(jobs, key=lambda j: j.started)
    assert second.started >= first.completed


async def test_a_job_waiting_on_the_queue_rate_says_rate_limited_until_it_starts(
    harness: Harness,
) -> None:
    await start_limited(harness, 2, "*=rate:1/12", {QUEUE_LIMIT: Limit(rate=1, per=12)})
    names = ("rate-a", "rate-b")
    for name in names:
        await harness.create_job(name, "noop")

    async def one_held() -> dict[str, str] | None:
        column = harness.reason_column()
        return column if list(column.values()).count("RateLimited") == 1 else None
    column = await eventually(one_held, within=30, what="a job RateLimited")
    held = next(name for name, reason in column.items() if reason == "RateLimited")
    other = next(name for name in names if name != held)
    await harness.wait_status(other, "complete", within=30)
    body = await harness.get_job(held)
    # the queue's rate holds it in the ready queue: not parked, nothing stored says so
    assert status(body)["status"] == "queued"
    assert condition(body, "Ready")["message"] == "waiting for the queue's rate limit"
    job = await harness.queue().job(status(body)["jobKey"])
    assert job is not None and job.blocked is None
    # once the rate has room again it starts: no longer RateLimited, then complete
    done = await harness.wait_status(held, "complete", within=60)
    assert condition(done, "Ready")["reason"] == "Completed"
    first, second = [await harness.queue().job(status(await harness.get_job(n))["jobKey"])
                     for n in (other, held)]
    assert second.started - first.started >= 11_900  # one start per 12 s (ms floored)


async def test_a_job_held_by_the_queue_concurrency_says_concurrency_limited(
    harness: Harness,
) -> None:
    await start_limited(harness, 4, "*=concurrency:1", {QUEUE_LIMIT: Limit(concurrency=1)})
    names = ("cap-a", "cap-b")
    for name in names:
        await harness.create_job(name, "nap", kwargs={"seconds": 4})

    async def one_held() -> dict[str, str] | None:
        column = harness.reason_column()
        return column if sorted(column.values()) == ["ConcurrencyLimited", "Running"] else None
    column = await eventually(one_held, within=30, what="one running, one ConcurrencyLimited")
    held = next(name for name, reason in column.items() if reason == "ConcurrencyLimited")
    body = await harness.get_job(held)
    assert condition(body, "Ready")["message"] == "waiting for the queue's concurrency limit"
    for name in names:
        await harness.wait_status(name, "complete", within=60)
    first, second = sorted([await harness.queue().job(status(await harness.get_job(n))["jobKey"])
                            for n in names], key=lambda j: j.started)
    assert second.started >= first.completed
