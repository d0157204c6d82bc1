"""The dashboard's HTTP side (aiohttp): pages, fragments for live updates, the event
stream, the actions and the security headers."""

from __future__ import annotations

import asyncio
import contextlib
import typing as t
from importlib import resources
from urllib.parse import urlencode

from aiohttp import web

from podq.job import JOB_FIELDS as FIELDS
from podq.job import Job, get_default_job_key
from podq.redact import redact
from podq.utils import now
from podq.web import data, render
from podq.web.auth import SESSION_COOKIE, SESSION_S, Guard, same_origin
from podq.web.charts import charts
from podq.web.feed import Feed

if t.TYPE_CHECKING:
    from podq.queue import Queue

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
STATIC = {"app.js": "text/javascript", "style.css": "text/css",
          "favicon.svg": "image/svg+xml"}
MAX_LIMIT = 200
KEEPALIVE_S = 15.0
# what a copy of a job keeps: the fields its caller chose (not its run, nor its key)
_COPIED = [n for n, f in FIELDS.items() if f.use.caller and n not in ("queue", "key",
                                                                     "progress", "scheduled")]

FEED = web.AppKey("feed", Feed)
GUARD = web.AppKey("guard", Guard)
REDIS_SHOWN = web.AppKey("redis_shown", str)


def _harden(response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def security(request: web.Request, handler: t.Any) -> web.StreamResponse:
    """Security headers on every answer; a POST from another origin is refused."""
    if request.method == "POST" and not same_origin(
        request.headers.get("Origin"), request.headers.get("Referer"), request.host
    ):
        response: web.StreamResponse = web.Response(status=403, text="cross-origin request")
    else:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            _harden(e)
            raise
    _harden(response)
    return response


def _nonce(request: web.Request) -> str | None:
    return request.app[GUARD].session(request.cookies.get(SESSION_COOKIE))


def _csrf(request: web.Request) -> str | None:
    nonce = _nonce(request)
    return request.app[GUARD].csrf(nonce) if nonce else None


def _html(request: web.Request, title: str, body: str, status: int = 200, **kw: str
          ) -> web.Response:
    guard = request.app[GUARD]
    nonce = _nonce(request)
    bar = render.session_bar(guard.writable, nonce is not None,
                             guard.csrf(nonce) if nonce else None)
    html = render.page(title, body, redis=request.app[REDIS_SHOWN], session=bar, **kw)
    return web.Response(text=html, content_type="text/html", status=status)


def _queue(request: web.Request) -> Queue:
    name = request.match_info["name"]
    queue = request.app[FEED].queues.get(name)
    if queue is None:
        raise web.HTTPNotFound(text=f"no queue {name!r} here")
    return queue


def _int(value: str | None, default: int, top: int) -> int:
    try:
        return max(0, min(int(value or default), top))
    except ValueError:
        return default


async def queues_page(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    rows = [(await data.summary(q), await charts(q, now()))
            for _, q in sorted(feed.queues.items())]
    return _html(request, "Queues", render.queues_body(rows))


async def charts_fragment(request: web.Request) -> web.Response:
    return web.Response(text=await charts(_queue(request), now()), content_type="text/html")


async def jobs_page(request: web.Request) -> web.Response:
    queue = _queue(request)
    q = request.query
    status = q.get("status") or None
    if status not in (None, *data.STATUS_FILTERS):
        raise web.HTTPBadRequest(text=f"unknown status {status!r}")
    function = q.get("function") or None
    limit = _int(q.get("limit"), 50, MAX_LIMIT) or 50
    search = q.get("key", "").strip()
    if search:
        scan = q.get("scan")
        if not (q.get("fragment") or scan) and await queue.job(search) is not None:
            raise web.HTTPFound(f"/queues/{queue.name}/job?" + urlencode({"key": search}))
        try:
            page = await data.search_jobs(queue, search, status, limit, scan)
        except ValueError as e:
            raise web.HTTPBadRequest(text=str(e)) from None
    else:
        page = await data.list_jobs(queue, status, function,
                                    _int(q.get("start"), 0, 10**12), limit)
    table = render.jobs_table(queue.name, page, status, function, limit, search,
                              _index_note(request.app[FEED], queue.name, status),
                              resumed=bool(search and q.get("scan")))
    if q.get("fragment"):
        return web.Response(text=table, content_type="text/html")
    body = render.jobs_body(queue.name, table, status, function, q.get("message", ""), search)
    return _html(request, f"{queue.name}: jobs", body, queue=queue.name)


def _index_note(feed: Feed, name: str, status: str | None) -> str:
    """Why finished jobs may be missing from the page, if they may be."""
    if status not in (None, *data.FINISHED):
        return ""
    if name in feed.indexing:
        return (f"Looking for jobs that finished before this dashboard started: "
                f"{feed.indexing[name]} job records read so far; more will appear.")
    if name in feed.index_errors:
        return (f"Only the jobs this dashboard saw finish are listed ({feed.index_errors[name]}"
                "); any job is found by its key.")
    return ""


async def _detail(request: web.Request, queue: Queue, job: Job) -> str:
    timeline = data.timeline(job, await data.events(queue, job.key))
    resource = await data.resource_of(queue, job.key)
    return render.job_detail(queue.name, job, resource, timeline, _csrf(request))


async def job_page(request: web.Request) -> web.Response:
    queue = _queue(request)
    key = request.query.get("key", "").strip()
    job = await queue.job(key) if key else None
    if job is None:
        message = f"No job with key {key!r} in this queue (finished jobs expire after their ttl)."
        if request.query.get("fragment"):
            raise web.HTTPNotFound(text=message)
        raise web.HTTPFound(f"/queues/{queue.name}/jobs?" + urlencode({"message": message}))
    detail = await _detail(request, queue, job)
    if request.query.get("fragment"):
        return web.Response(text=detail, content_type="text/html")
    return _html(request, f"job {key}", render.job_body(queue.name, job, detail),
                 queue=queue.name, job=job.key)


async def workers_page(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    table = render.workers_table(await data.workers(feed.queues))
    if request.query.get("fragment"):
        return web.Response(text=table, content_type="text/html")
    return _html(request, "Workers", render.workers_body(table))


async def action(request: web.Request) -> web.Response:
    """abort, retry or requeue a job: with a session and its CSRF token, after the
    user confirmed on the confirmation page."""
    guard = request.app[GUARD]
    if not guard.writable:
        return _html(request, "Read-only", render.message_body(
            "Read-only", "This dashboard has no write token: actions are off."), 403)
    form = await request.post()
    nonce = _nonce(request)
    if nonce is None or not guard.check_csrf(nonce, str(form.get("csrf", ""))):
        return _html(request, "Forbidden", render.message_body(
            "Forbidden", "Log in (with the write token) to act on jobs.", "/login"), 403)
    queue = _queue(request)
    name = request.match_info["action"]
    job = await queue.job(str(form.get("key", "")))
    if job is None:
        raise web.HTTPNotFound(text="no such job")
    back = f"/queues/{queue.name}/job?" + urlencode({"key": job.key})
    from_resource = await data.resource_of(queue, job.key) is not None
    if name not in render.allowed_actions(job, from_resource):
        return _html(request, "Not now", render.message_body(
            "Not now", f"A {job.status.value} job cannot be {name}ed.", back), 409)
    if form.get("confirm") != "yes":
        return _html(request, "Confirm", render.confirm_body(
            queue.name, job, name, guard.csrf(nonce)), queue=queue.name)
    if name == "abort":
        await queue.abort(job, "aborted from podq web")
        raise web.HTTPSeeOther(back)
    copy = Job(**{n: getattr(job, n) for n in _COPIED})
    copy.key = job.key if name == "retry" else get_default_job_key()
    for n in _COPIED:
        copy.choose(n, job.chose(n))
    if await queue.enqueue(copy) is None:
        return _html(request, "Refused", render.message_body(
            "Refused", "The queue refused it: a job with this key is pending, or was "
            "aborted a moment ago. Try again in a few seconds.", back), 409)
    raise web.HTTPSeeOther(f"/queues/{queue.name}/job?" + urlencode({"key": copy.key}))


async def login_page(request: web.Request) -> web.Response:
    if not request.app[GUARD].writable:
        return _html(request, "Read-only", render.message_body(
            "Read-only", "This dashboard was started without a write token: it is "
            "read-only for everyone."))
    return _html(request, "Log in", render.login_body())


async def login(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    form = await request.post()
    if not guard.check_token(str(form.get("token", ""))):
        return _html(request, "Log in", render.login_body("Wrong token."), 403)
    response = web.HTTPSeeOther("/queues")
    response.set_cookie(SESSION_COOKIE, guard.new_session(), max_age=SESSION_S,
                        httponly=True, samesite="Strict", path="/",
                        secure=request.secure)
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/queues")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events from the shared feed: `changes` (job keys and statuses with
    the queue's counts) and `samples` (charts to redraw)."""
    feed = request.app[FEED]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})
    await response.prepare(request)
    client = feed.connect()
    try:
        await response.write(b"event: hello\ndata: {}\n\n")
        while True:
            try:
                message = await asyncio.wait_for(client.get(), KEEPALIVE_S)
            except TimeoutError:
                message = ": keep-alive\n\n"
            if message.startswith("event: bye"):
                break
            await response.write(message.encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.disconnect(client)
    return response


async def static(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    body = resources.files("podq.web").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=STATIC[name],
                        headers={"Cache-Control": "max-age=300"})


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/queues")


def create_app(feed: Feed, guard: Guard) -> web.Application:
    """The dashboard on a started Feed (see podq.web.main.serve)."""
    app = web.Application(middlewares=[security], client_max_size=64 * 1024)
    app[FEED] = feed
    app[GUARD] = guard
    app[REDIS_SHOWN] = redact(feed.url)
    app.add_routes([
        web.get("/", index),
        web.get("/healthz", health),
        web.get("/queues", queues_page),
        web.get("/queues/{name}/charts", charts_fragment),
        web.get("/queues/{name}/jobs", jobs_page),
        web.get("/queues/{name}/job", job_page),
        web.post(r"/queues/{name}/job/{action:abort|retry|requeue}", action),
        web.get("/workers", workers_page),
        web.get("/events", events),
        web.get("/static/{file}", static),
        web.get("/login", login_page),
        web.post("/login", login),
        web.post("/logout", logout),
    ])
    app.on_shutdown.append(_close_streams)
    return app


async def _close_streams(app: web.Application) -> None:
    """Wake every event stream so shutdown does not wait for their keep-alives."""
    feed = app[FEED]
    for client in list(feed.clients):
        with contextlib.suppress(asyncio.QueueFull):
            client.put_nowait("event: bye\ndata: {}\n\n")
    feed.clients.clear()


__all__ = ["CSP", "create_app"]
