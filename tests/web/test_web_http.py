"""The dashboard's HTTP handlers against a real redis-server: pages, pagination and
filters, a job's page, the event stream, read-only mode, sessions, CSRF and actions."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from web_helpers import TOKEN, wait_for

from podq import Job, Queue, Status
from podq.testing import free_port, wait_for_port
from podq.web import charts, data
from podq.web.data import list_jobs
from podq.web.feed import sample
from podq.web.handlers import CSP


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def get(s: aiohttp.ClientSession, url: str) -> tuple[int, str, dict[str, str]]:
    async with s.get(url, allow_redirects=False) as r:
        return r.status, await r.text(), dict(r.headers)


async def test_pages_load_with_a_strict_policy_and_no_password(redis_url, queue, dashboard):
    await queue.enqueue("add", key="k1", kwargs={"a": 1})
    secret_url = redis_url.replace("redis://", "redis://default:hunter2@")
    d = await dashboard(url=secret_url)
    async with session() as s:
        for path in ("/queues", "/queues/web/jobs", "/queues/web/job?key=k1", "/workers",
                     "/login", "/static/app.js", "/static/style.css"):
            status, body, headers = await get(s, d.url + path)
            assert status == 200, path
            assert headers["Content-Security-Policy"] == CSP
            assert "hunter2" not in body, path
        status, body, _ = await get(s, d.url + "/queues")
        assert "default:***@" in body
        assert "<script>" not in body and "style=" not in body
        assert re.search(r'data-live="web:queued">1<', body)
        status, _, headers = await get(s, d.url + "/queues/nope/jobs")
        assert status == 404


async def test_jobs_page_pages_filters_and_finds_by_key(queue, dashboard):
    await queue.enqueue_many([Job("add", key=f"a{i:03}") for i in range(70)]
                             + [Job("mul", key=f"m{i:03}") for i in range(30)])
    await queue.enqueue("later", key="s1", scheduled=2_000_000_000)
    d = await dashboard()
    async with session() as s:
        _, body, _ = await get(s, d.url + "/queues/web/jobs")
        assert body.count('<tr data-key="') == 50
        assert "1-50 of 101" in body
        assert 'href="/queues/web/jobs?start=50" rel="next"' in body
        _, body, _ = await get(s, d.url + "/queues/web/jobs?start=100")
        assert body.count('<tr data-key="') == 1 and 'data-key="s1"' in body
        assert 'rel="next"' not in body
        _, body, _ = await get(s, d.url + "/queues/web/jobs?function=mul&limit=20")
        keys = re.findall(r'<tr data-key="([^"]+)"', body)
        assert keys == [f"m{i:03}" for i in range(20)]
        _, body, _ = await get(s, d.url + "/queues/web/jobs?status=scheduled")
        assert re.findall(r'<tr data-key="([^"]+)"', body) == ["s1"]
        status, _, headers = await get(s, d.url + "/queues/web/job?key=nope")
        assert status == 302 and "No+job+with+key" in headers["Location"]
        status, _, headers = await get(s, d.url + "/queues/web/jobs?key=m007")  # exact
        assert status == 302 and headers["Location"] == "/queues/web/job?key=m007"
        _, body, _ = await get(s, d.url + "/queues/web/jobs?key=m02")  # part of keys
        assert re.findall(r'<tr data-key="([^"]+)"', body) == [f"m02{i}" for i in range(10)]
        assert "whose key contains &#x27;m02&#x27;" in body
        _, body, _ = await get(s, d.url + "/queues/web/jobs?key=m0*")  # no glob
        assert re.findall(r'<tr data-key="([^"]+)"', body) == []
        status, _, _ = await get(s, d.url + "/queues/web/jobs?status=bogus")
        assert status == 400


async def test_a_function_filter_reads_a_bounded_number_of_jobs(queue, monkeypatch):
    await queue.enqueue_many([Job("add", key=f"a{i:05}") for i in range(6000)]
                             + [Job("rare", key="r1")])
    monkeypatch.setattr(data, "TIME_BUDGET_S", 3600)  # the count bounds it here
    page = await list_jobs(queue, function="rare", limit=10)
    assert page.jobs == [] and page.examined == 5000 and page.next_start == 5000
    page = await list_jobs(queue, function="rare", start=page.next_start, limit=10)
    assert [j.key for j in page.jobs] == ["r1"] and page.next_start is None


async def test_a_slow_filter_or_search_stops_at_its_time_budget_and_goes_on(
        queue, monkeypatch):
    await queue.enqueue_many([Job("add", key=f"a{i:05}") for i in range(3000)]
                             + [Job("rare", key="r1")])
    monkeypatch.setattr(data, "TIME_BUDGET_S", 0)  # one read per page, then stop
    start, pages, found = 0, 0, []
    while start is not None:
        page = await list_jobs(queue, function="rare", start=start, limit=10)
        assert page.examined > 0  # each page gets on
        found += [j.key for j in page.jobs]
        start, pages = page.next_start, pages + 1
    assert found == ["r1"] and pages > 2
    page = await data.search_jobs(queue, "r1")
    assert [j.key for j in page.jobs] == ["r1"]  # one ZSCAN step covers 3,001 keys


async def test_job_page_shows_its_run_and_the_job_resource(queue, dashboard):
    uid = str(uuid.uuid4())
    key = f"team-a/resize-42/{uid}"
    job = await queue.enqueue("resize", key=key, kwargs={"width": 640}, meta={"who": "me"})
    await queue.redis.set(queue.keys.operator_claim(key), f"{uid} 1.0")
    await queue.update(job, progress=0.4)
    await queue.finish(job, Status.FAILED, error="Traceback (most recent call last):\nBoom")
    d = await dashboard()
    async with session() as s:
        _, body, _ = await get(s, d.url + "/queues/web/job?" + aiohttp.helpers.quote(
            "key", safe="") + "=" + aiohttp.helpers.quote(key, safe=""))
    assert '<span id="resource">team-a/resize-42</span>' in body
    assert "&quot;width&quot;: 640" in body and "&quot;who&quot;: &quot;me&quot;" in body
    assert "Boom" in body and 'class="badge failed"' in body
    assert '<progress max="100" value="40"' in body
    assert "<form" not in body.split("<main>")[1]  # read-only: no action


async def test_a_key_or_resume_token_with_a_trailing_newline_is_not_taken_as_valid(queue):
    """The patterns are matched whole: `$` alone lets a final newline through."""
    uid = str(uuid.uuid4())
    key = f"team-a/resize-42/{uid}"
    for job_key in (key, key + "\n"):
        await queue.redis.set(queue.keys.operator_claim(job_key), f"{uid} 1.0")
    assert await data.resource_of(queue, key) == data.Resource(uid, "team-a", "resize-42")
    assert await data.resource_of(queue, key + "\n") == data.Resource(uid)
    assert data.parse_resume("1.20.3") == (1, 20, 3)
    with pytest.raises(ValueError, match="not a place to go on from"):
        data.parse_resume("1.20.3\n")


async def test_a_job_resource_is_found_by_its_name(queue, dashboard):
    uid = str(uuid.uuid4())
    await queue.enqueue_many([Job("f", key=f"team-a/report-{i}/{uuid.uuid4()}")
                              for i in range(300)] + [Job("f", key=f"team-b/resize-42/{uid}")])
    d = await dashboard()
    async with session() as s:
        _, body, _ = await get(s, d.url + "/queues/web/jobs?key=resize-42")
    assert re.findall(r'<tr data-key="([^"]+)"', body) == [f"team-b/resize-42/{uid}"]


@pytest.mark.parametrize("spec_key", [None, "my-own-key"])
async def test_job_page_names_the_resource_the_operator_enqueued(queue, dashboard, spec_key):
    """The operator's own enqueue (podq.operator.jobs), not a copy of its format."""
    from podq.operator.jobs import enqueue_jobs
    from podq.operator.registry import JobRegistry

    uid = str(uuid.uuid4())
    spec = {"function": "resize", "queue": "web", **({"key": spec_key} if spec_key else {})}
    resource, _ = JobRegistry().observe({
        "metadata": {"namespace": "team-a", "name": "resize-42", "uid": uid},
        "spec": spec})
    outcomes = await enqueue_jobs(queue, [resource])
    assert outcomes[uid].action == "enqueued"
    d = await dashboard()
    async with session() as s:
        _, body, _ = await get(s, d.url + "/queues/web/job?key=" + quote(resource.key))
    assert f"uid {uid}" in body
    if spec_key:
        assert '<span id="resource">(spec.key set)</span>' in body
    else:
        assert '<span id="resource">team-a/resize-42</span>' in body


async def test_read_only_refuses_actions(queue, dashboard):
    await queue.enqueue("add", key="k1")
    d = await dashboard()
    async with session() as s:
        async with s.post(d.url + "/queues/web/job/abort", data={"key": "k1", "confirm": "yes"},
                          headers={"Origin": d.url}) as r:
            assert r.status == 403
        async with s.post(d.url + "/login", data={"token": ""},
                          headers={"Origin": d.url}) as r:
            assert r.status == 403
    assert (await queue.job("k1")).status == Status.QUEUED


async def login(s: aiohttp.ClientSession, url: str, token: str = TOKEN) -> str:
    """Log in; the CSRF token of the session."""
    async with s.post(url + "/login", data={"token": token}, headers={"Origin": url}) as r:
        assert r.status == 200, await r.text()
    _, body, _ = await get(s, url + "/queues")
    return re.search(r'name="csrf" value="([0-9a-f]+)"', body).group(1)


async def test_actions_need_the_token_the_csrf_token_the_origin_and_a_confirmation(
        queue, dashboard):
    await queue.enqueue("add", key="k1")
    d = await dashboard(token=TOKEN)
    form = {"key": "k1", "confirm": "yes"}
    async with session() as s:
        async with s.post(d.url + "/login", data={"token": "wrong"},
                          headers={"Origin": d.url}) as r:
            assert r.status == 403
        async with s.post(d.url + "/queues/web/job/abort", data=form,
                          headers={"Origin": d.url}) as r:
            assert r.status == 403  # no session
        csrf = await login(s, d.url)
        async with s.post(d.url + "/queues/web/job/abort", data={**form, "csrf": "0" * 64},
                          headers={"Origin": d.url}) as r:
            assert r.status == 403  # wrong CSRF token
        async with s.post(d.url + "/queues/web/job/abort", data={**form, "csrf": csrf},
                          headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 403  # another origin
        async with s.post(d.url + "/queues/web/job/abort", data={**form, "csrf": csrf}) as r:
            assert r.status == 403  # no origin at all
        assert (await queue.job("k1")).status == Status.QUEUED
        async with s.post(d.url + "/queues/web/job/abort", data={"key": "k1", "csrf": csrf},
                          headers={"Origin": d.url}) as r:
            assert r.status == 200 and 'id="confirm"' in await r.text()
        assert (await queue.job("k1")).status == Status.QUEUED  # not before confirming
        async with s.post(d.url + "/queues/web/job/abort", data={**form, "csrf": csrf},
                          headers={"Origin": d.url}) as r:
            assert r.status == 200 and 'class="badge aborted"' in await r.text()
        assert (await queue.job("k1")).status == Status.ABORTED


async def test_retry_keeps_the_key_and_enqueue_again_makes_a_new_one(queue, dashboard):
    job = await queue.enqueue("add", key="k1", kwargs={"a": 2}, timeout=7, retries=3)
    await queue.finish(job, Status.FAILED, error="no")
    d = await dashboard(token=TOKEN)
    async with session() as s:
        csrf = await login(s, d.url)
        form = {"key": "k1", "csrf": csrf, "confirm": "yes"}
        async with s.post(d.url + "/queues/web/job/retry", data=form,
                          headers={"Origin": d.url}) as r:
            assert r.status == 200
        again = await queue.job("k1")
        assert again.status == Status.QUEUED and again.attempts == 0 and not again.error
        assert (again.kwargs, again.timeout, again.retries) == ({"a": 2}, 7, 3)
        async with s.post(d.url + "/queues/web/job/requeue", data=form,
                          headers={"Origin": d.url}) as r:
            assert r.status == 200
            new_key = r.url.query["key"]
        assert new_key != "k1" and (await queue.job(new_key)).kwargs == {"a": 2}


async def read_events(response: aiohttp.ClientResponse, until, deadline_s: float = 10.0):
    """Parse server-sent events until until(event, data) is true."""
    async def run():
        event = None
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and until(event, json.loads(line[6:])):
                return
    await asyncio.wait_for(run(), deadline_s)


async def test_the_event_stream_tells_of_changes_and_records_finished_jobs(queue, dashboard):
    d = await dashboard()
    async with session() as s, s.get(d.url + "/events") as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        await read_events(stream, lambda e, _: e == "hello")
        job = await queue.enqueue("add", key="live-1")
        await read_events(stream, lambda e, data: e == "changes" and ["live-1", "queued"]
                          in data["jobs"] and data["counts"]["queued"] == 1)
        await queue.finish(job, Status.COMPLETE, result=3)
        await read_events(stream, lambda e, data: e == "changes" and ["live-1", "complete"]
                          in data["jobs"])
    page = await list_jobs(queue, status="complete")
    assert [j.key for j in page.jobs] == ["live-1"]
    _, body, _ = await get(session_ := session(), d.url + "/queues/web/job?key=live-1")
    await session_.close()
    assert re.search(r"</time> queued</li>.*</time> complete</li>", body, re.S)


async def test_one_subscription_serves_every_browser(queue, dashboard):
    d = await dashboard()
    async with session() as s:
        streams = [await s.get(d.url + "/events") for _ in range(5)]
        for stream in streams:
            await read_events(stream, lambda e, _: e == "hello")
        subscribers = await queue.redis.pubsub_shardnumsub(queue.keys.changes)
        assert subscribers[0][1] == 1
        await queue.enqueue("add", key="fan")
        for stream in streams:
            await read_events(stream, lambda e, data: e == "changes"
                              and ["fan", "queued"] in data["jobs"])
            stream.close()


async def test_charts_count_what_finished_per_minute(queue: Queue):
    first = await sample(queue)
    for i in range(4):
        job = await queue.enqueue("add", key=f"c{i}")
        await queue.finish(job, Status.FAILED if i == 0 else Status.COMPLETE)
    second = await sample(queue)
    samples = await charts.read_samples(queue, 0)
    assert samples == [first, second]
    minutes = charts.per_minute(samples, second.at_ms)
    assert (minutes[-1].finished, minutes[-1].failed) == (4, 1)
    assert sum(m.finished for m in minutes) == 4
    svg = await charts.charts(queue, second.at_ms)
    assert "4 finished, 1 min ago" in svg and "25% failed of 4" in svg


async def test_workers_page_lists_live_workers_and_their_jobs(queue, dashboard, workers):
    started = asyncio.Event()

    async def slow(ctx):
        started.set()
        await asyncio.sleep(30)

    worker = await workers.start(queue, [("slow", slow)])
    await queue.enqueue("slow", key="busy", timeout=60)
    await asyncio.wait_for(started.wait(), 30)
    d = await dashboard()
    async with session() as s:
        async def shows_job():
            body = (await get(s, d.url + "/workers"))[1]
            return worker.id in body and ">busy</a>" in body and body
        body = await wait_for(shows_job, 30)
    assert re.search(r"<td>\d+\.\d s</td>", body)
    await queue.abort(await queue.job("busy"), "test over")


@pytest.mark.parametrize("origin", ["http://127.0.0.1:1", "null"])
async def test_login_from_another_origin_is_refused(dashboard, origin):
    d = await dashboard(token=TOKEN)
    async with session() as s, s.post(d.url + "/login", data={"token": TOKEN},
                                      headers={"Origin": origin}) as r:
        assert r.status == 403
        assert "podq_session" not in {c.key for c in s.cookie_jar}


def podq_web(*args: str) -> subprocess.Popen[str]:
    podq = Path(sys.executable).parent / "podq"
    return subprocess.Popen([str(podq), "web", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


async def test_the_podq_web_command_serves_the_queues_it_is_given(redis_url, queue):
    await Queue.from_url(redis_url, name="other").connect()
    port = free_port()
    proc = podq_web("--redis-url", redis_url, "--port", str(port), "--queue", "web")
    try:
        await asyncio.to_thread(wait_for_port, port, 20)
        async with session() as s:
            status, body, _ = await get(s, f"http://127.0.0.1:{port}/queues")
            assert status == 200 and 'id="queue-web"' in body
            assert 'id="queue-other"' not in body  # only the named queue
            status, _, _ = await get(s, f"http://127.0.0.1:{port}/queues/other/jobs")
            assert status == 404
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_the_podq_web_command_names_no_password_when_redis_is_unreachable() -> None:
    url = f"redis://default:hunter2@127.0.0.1:{free_port()}/0"
    proc = podq_web("--redis-url", url, "--port", str(free_port()))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 69
    assert "cannot serve with Redis at redis://default:***@127.0.0.1" in output
    assert "hunter2" not in output


async def test_a_job_resource_s_job_may_only_be_aborted(queue, dashboard):
    from podq.operator.jobs import enqueue_jobs
    from podq.operator.registry import JobRegistry

    uid = str(uuid.uuid4())
    resource, _ = JobRegistry().observe({
        "metadata": {"namespace": "team-a", "name": "nightly", "uid": uid},
        "spec": {"function": "f", "queue": "web"}})
    await enqueue_jobs(queue, [resource])
    d = await dashboard(token=TOKEN)
    async with session() as s:
        csrf = await login(s, d.url)
        _, body, _ = await get(s, d.url + "/queues/web/job?key=" + quote(resource.key))
        assert re.findall(r'class="action (\w+)"', body) == ["abort"]
        assert "re-create the resource" in body
        form = {"key": resource.key, "csrf": csrf, "confirm": "yes"}
        async with s.post(d.url + "/queues/web/job/requeue", data=form,
                          headers={"Origin": d.url}) as r:
            assert r.status == 409
        async with s.post(d.url + "/queues/web/job/abort", data=form,
                          headers={"Origin": d.url}) as r:
            assert r.status == 200
    assert (await queue.job(resource.key)).status == Status.ABORTED
