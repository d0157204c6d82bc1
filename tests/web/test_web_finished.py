"""Finished jobs on the jobs page, also those that finished before the dashboard started
(found by its background scan of the job records), and the key search going on page by
page; against a real redis-server."""

from __future__ import annotations

import html
import re

import aiohttp
import redis.asyncio as aioredis
from web_helpers import keys_of, page, wait_for

from podq import Job, Queue, Status
from podq.queue.keys import acl_rules
from podq.web import data
from podq.web.data import list_jobs
from podq.web.feed import index_finished

NOTE = "Looking for jobs that finished before this dashboard started"


async def run_and_finish(queue: Queue, count: int, function: str, status: Status,
                         prefix: str) -> list[Job]:
    """count jobs taken and finished as a worker would (no dashboard is listening)."""
    await queue.enqueue_many([Job(function, key=f"{prefix}{i:03}") for i in range(count)])
    done = []
    for _ in range(count):
        job = await queue.dequeue()
        assert job is not None
        await queue.finish(job, status, result=1, error=None if status == Status.COMPLETE
                           else "boom")
        done.append(job)
    return done


def newest_first(jobs: list[Job]) -> list[str]:
    """The order of a finished set read from its newest end (ties: the key, reversed)."""
    return [j.key for j in sorted(jobs, key=lambda j: (j.completed, j.key), reverse=True)]


async def indexed(base: str) -> bool:
    return NOTE not in await page(base, "/queues/web/jobs?status=complete")


async def test_jobs_that_finished_before_the_dashboard_started_are_listed(queue, dashboard):
    complete = await run_and_finish(queue, 80, "add", Status.COMPLETE, "c")
    failed = await run_and_finish(queue, 30, "mul", Status.FAILED, "f")
    aborted = await queue.enqueue_many([Job("add", key=f"x{i}") for i in range(3)])
    for job in aborted:
        await queue.abort(job, "stopped")
    await queue.enqueue("add", key="still-queued")
    assert not await queue.redis.exists(queue.keys.web_finished("complete"))

    d = await dashboard()
    await wait_for(lambda: indexed(d.url), 20)
    first = await page(d.url, "/queues/web/jobs?status=complete")
    assert keys_of(first) == newest_first(complete)[:50]
    assert "1-50 of 80" in first and 'href="/queues/web/jobs?status=complete&amp;start=50"' \
        in first
    second = await page(d.url, "/queues/web/jobs?status=complete&start=50")
    assert keys_of(second) == newest_first(complete)[50:] and 'rel="next"' not in second
    body = await page(d.url, "/queues/web/jobs?status=failed&function=mul&limit=100")
    assert keys_of(body) == newest_first(failed)
    body = await page(d.url, "/queues/web/jobs?status=failed&function=add")
    assert keys_of(body) == []
    body = await page(d.url, "/queues/web/jobs?status=aborted")
    assert sorted(keys_of(body)) == ["x0", "x1", "x2"]
    body = await page(d.url, "/queues/web/jobs?limit=200")
    assert "of 114" in body and keys_of(body)[0] == "still-queued"
    assert NOTE not in body

    # a job recorded as failed that runs again (the dashboard missed the change) is not
    # listed as failed, and the set forgets it
    await queue.redis.zadd(queue.keys.web_finished("failed"), {"still-queued": 1})
    body = await page(d.url, "/queues/web/jobs?status=failed&limit=100")
    assert keys_of(body) == newest_first(failed)
    assert (await list_jobs(queue, status="failed", limit=100)).total == 30


async def test_one_index_step_reads_a_bounded_number_of_records(queue):
    await run_and_finish(queue, 40, "add", Status.COMPLETE, "c")
    await queue.enqueue_many([Job("add", key=f"q{i:03}") for i in range(200)])
    cursor, steps, looked = 0, 0, 0
    while True:
        cursor, n = await index_finished(queue, cursor, count=20)
        steps, looked = steps + 1, looked + n
        assert n <= 60  # SCAN's COUNT is a hint: a few more at most
        if not cursor:
            break
        assert steps < 1000
    assert steps > 5 and looked >= 240
    assert await queue.redis.zcard(queue.keys.web_finished("complete")) == 40
    assert not await queue.redis.exists(queue.keys.web_finished("failed"))


async def test_a_queue_user_that_may_not_scan_is_told_what_is_listed(redis_url, queue,
                                                                       dashboard):
    await run_and_finish(queue, 3, "add", Status.COMPLETE, "c")
    admin = aioredis.from_url(redis_url)
    await admin.execute_command("ACL", "SETUSER", "web-reader", "reset", "on", ">pw",
                                *acl_rules("web"))
    try:
        d = await dashboard(url=redis_url.replace("redis://", "redis://web-reader:pw@"),
                            queues=["web"])
        expected = "Only the jobs this dashboard saw finish are listed"
        await wait_for(lambda: _shows(d.url, expected), 20)
        body = await page(d.url, "/queues/web/jobs?status=queued")
        assert expected not in body
    finally:
        await admin.execute_command("ACL", "DELUSER", "web-reader")
        await admin.aclose()


async def _shows(base: str, text: str) -> bool:
    return text in await page(base, "/queues/web/jobs?status=complete")


async def test_a_search_goes_on_page_by_page_over_more_keys_than_one_step(queue, dashboard):
    count = 3 * data.SEARCH_STEP  # ZSCAN looks at SEARCH_STEP keys a step
    keys = [f"k{i:05}" for i in range(count)]
    for first in range(0, count, 5000):
        await queue.enqueue_many([Job("add", key=k) for k in keys[first:first + 5000]]
                                 + ([Job("rare", key="r-needle")] if not first else []))
    wanted = {k for k in keys if "77" in k}
    assert len(wanted) > 200
    d = await dashboard()
    seen: list[str] = []
    path, pages = "/queues/web/jobs?key=77&limit=100", 0
    while path:
        body = await page(d.url, path)
        shown = keys_of(body)
        assert len(shown) <= 100 and all("77" in k for k in shown)
        seen += shown
        pages += 1
        assert pages < 200
        if pages > 1:
            assert 'href="/queues/web/jobs?key=77&amp;limit=100" rel="first"' in body
        more = re.search(r'href="([^"]+)" rel="next">Continue the search<', body)
        path = html.unescape(more[1]) if more else ""
    assert sorted(seen) == sorted(wanted) and pages >= 4

    # a rare key: pages that looked at their budget and found nothing yet go on
    token, looked, found = None, 0, []
    for _ in range(100):
        result = await data.search_jobs(queue, "needle", resume=token, budget=2000)
        looked += result.examined
        found += [j.key for j in result.jobs]
        token = result.next_scan
        if token is None:
            break
    assert found == ["r-needle"] and looked >= count
    assert (await page(d.url, "/queues/web/jobs?key=needle&scan=0.0.0")).count(
        "r-needle") >= 1


async def test_a_bad_place_to_go_on_from_is_refused(queue, dashboard):
    d = await dashboard()
    async with aiohttp.ClientSession() as s, s.get(
            d.url + "/queues/web/jobs?key=a&scan=nope") as r:
        assert r.status == 400
