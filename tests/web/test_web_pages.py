"""What the pages show of jobs that wait on a limit or on other jobs, and a retried
job's timeline; against a real redis-server, with a real worker."""

from __future__ import annotations

import re

from redis import Redis
from web_helpers import keys_of, page, wait_for

from podq import Job, Queue, Status
from podq.queue.limits import Limit
from podq.web import data


async def test_jobs_held_by_a_limit_or_waiting_for_others_are_listed_as_queued(
        queue, dashboard):
    await queue.set_limits({"capped": Limit(concurrency=1)})
    await queue.enqueue_many([Job("capped", key=f"cap{i}") for i in range(3)])
    await queue.enqueue("parent", key="parent")
    await queue.enqueue(Job("child", key="child", depends_on=["parent"]))
    taken = await queue.dequeue()
    assert taken is not None and taken.key == "cap0"
    assert await queue.dequeue() is not None  # parent; the capped ones wait on the limit
    counts = await queue.counts()
    assert (counts.limited, counts.blocked, counts.queued) == (2, 1, 3)

    d = await dashboard()
    body = await page(d.url, "/queues/web/jobs?status=queued")
    assert keys_of(body) == ["cap1", "cap2", "child"] and "1-3 of 3" in body
    assert body.count("waits for concurrency") == 2 and "waits for dependencies" in body
    body = await page(d.url, "/queues/web/jobs")
    assert sorted(keys_of(body)) == ["cap0", "cap1", "cap2", "child", "parent"]
    body = await page(d.url, "/queues/web/jobs?status=queued&function=child")
    assert keys_of(body) == ["child"]
    body = await page(d.url, "/queues/web/jobs?key=cap")  # the search covers them too
    assert sorted(keys_of(body)) == ["cap0", "cap1", "cap2"]
    body = await page(d.url, "/queues/web/job?key=child")
    assert "waits for dependencies" in body
    assert 'href="/queues/web/job?key=parent"' in body  # what it depends on


async def test_a_retried_job_s_timeline_shows_each_run(queue, dashboard, workers):
    runs = []

    async def flaky(ctx):
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError(f"attempt {len(runs)} fails")
        return "ok"

    async def finished(key: str) -> bool:
        job = await queue.job(key)
        return job is not None and job.status == Status.COMPLETE

    await workers.start(queue, [("flaky", flaky)])
    await queue.enqueue("flaky", key="before", retries=3)  # before the dashboard
    await wait_for(lambda: finished("before"), 30)
    runs.clear()
    d = await dashboard()
    await queue.enqueue("flaky", key="f1", retries=3)
    await wait_for(lambda: finished("f1"), 30)
    pattern = re.compile(r"</time> ([^<]+)</li>")

    async def whole() -> list[str]:  # the feed records changes every 0.25 s
        steps = pattern.findall(await page(d.url, "/queues/web/job?key=f1"))
        return steps if steps.count("active") == 3 and "complete" in steps else []

    steps = await wait_for(whole, 30)
    assert steps[0] == "enqueued" and steps[-1] == "complete"
    assert steps.count("queued again after a run") == 2
    assert "started (attempt 3)" in steps
    again = [i for i, s in enumerate(steps) if s == "queued again after a run"]
    assert all(steps[i - 1] == "active" or steps[i - 1].startswith("started")
               for i in again)

    steps = pattern.findall(await page(d.url, "/queues/web/job?key=before"))
    assert steps[0] == "enqueued" and steps[-1] == "complete"
    assert "2 earlier attempt(s), not seen" in steps and "started (attempt 3)" in steps
    assert "queued again after a run" not in steps


def time_calls(client: Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_time", {}).get("calls", 0))


async def test_the_workers_page_reads_redis_s_clock_once_for_every_queue(redis_url):
    """It read TIME twice per queue (the page's, then Queue.workers()'s)."""
    queues = {name: Queue.from_url(redis_url, name=name) for name in ("w3", "w1", "w2")}
    sync = Redis.from_url(redis_url)
    try:
        t0 = await queues["w1"].redis_ms()
        back = {"w1": 0, "w2": 1000, "w3": 2000}  # how much older each record is
        for name, q in queues.items():
            await q.write_worker_info(f"worker-{name}", {"id": f"worker-{name}",
                                                         "ts": t0 - back[name]}, ttl=60)
        before = time_calls(sync)
        rows = await data.workers(queues)
        assert time_calls(sync) - before == 1
        assert [(name, [w["id"] for w in found]) for name, found in rows] == [
            ("w1", ["worker-w1"]), ("w2", ["worker-w2"]), ("w3", ["worker-w3"])]
        ages = {name: found[0]["age_ms"] for name, found in rows}
        assert 0 <= ages["w1"] < 60_000
        # one reading of the clock: the ages differ exactly as the records' times do
        assert {name: age - ages["w1"] for name, age in ages.items()} == back
    finally:
        for q in queues.values():
            await q.disconnect()
        sync.close()


async def test_a_function_filter_reads_the_stored_function_not_the_job_s_json(queue):
    """It parsed each skipped job's JSON (kwargs, result) for its function name: an
    unreadable one of another function broke the page."""
    await queue.enqueue_many([Job("add", key=f"a{i}", kwargs={"big": "x" * 1000})
                              for i in range(20)] + [Job("rare", key="r1")])
    await queue.redis.hset(queue.keys.job("a3"), "job", "{not json")
    page = await data.list_jobs(queue, function="rare", limit=10)
    assert [j.key for j in page.jobs] == ["r1"] and page.examined == 21
