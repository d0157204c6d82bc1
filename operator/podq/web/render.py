"""HTML of the pages: templates/base.html around bodies built here, every value
escaped. No inline script or style (the Content-Security-Policy forbids them)."""

from __future__ import annotations

import json
import typing as t
from datetime import UTC, datetime
from html import escape
from importlib import resources
from string import Template
from urllib.parse import urlencode

from podq.job import TERMINAL_STATUSES, UNSUCCESSFUL_TERMINAL_STATUSES, Job, Status
from podq.web.data import STATUS_FILTERS, Event, JobPage, Resource, Summary

_BASE = Template(
    resources.files("podq.web").joinpath("templates", "base.html").read_text()
)
ACTIONS = {
    "abort": "Abort",
    "retry": "Retry",
    "requeue": "Enqueue again",
}


def when(ms: int | float | None) -> str:
    if not ms:
        return ""
    stamp = datetime.fromtimestamp(ms / 1000, UTC)
    return f'<time datetime="{stamp.isoformat()}">{stamp:%Y-%m-%d %H:%M:%S}</time>'


def age(ms: int) -> str:
    seconds = ms / 1000
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.0f} min"


def pretty(value: t.Any) -> str:
    return escape(json.dumps(value, indent=2, sort_keys=True, default=str))


def page(title: str, body: str, *, redis: str, session: str, queue: str = "",
         job: str = "") -> str:
    return _BASE.substitute(
        title=escape(title), body=body, redis=escape(redis), session=session,
        queue=escape(queue), job=escape(job),
    )


def session_bar(writable: bool, logged_in: bool, csrf: str | None) -> str:
    if not writable:
        return '<span class="mode" id="mode">read-only</span>'
    if not logged_in:
        return '<span class="mode" id="mode">read-only</span> <a href="/login">Log in</a>'
    return (
        '<span class="mode write" id="mode">write access</span>'
        '<form method="post" action="/logout" class="inline">'
        f'<input type="hidden" name="csrf" value="{escape(csrf or "")}">'
        '<button type="submit">Log out</button></form>'
    )


def _count(name: str, field: str, value: int, label: str) -> str:
    return (f'<div class="count"><b data-live="{escape(name)}:{field}">{value}</b>'
            f"<span>{label}</span></div>")


def queues_body(rows: list[tuple[Summary, str]]) -> str:
    if not rows:
        return "<h1>Queues</h1><p>No queue on this Redis yet.</p>"
    cards = []
    for s, charts in rows:
        name = escape(s.name)
        paused = ' <span class="badge aborting">paused</span>' if s.paused else ""
        cards.append(
            f'<section class="card queue" id="queue-{name}">'
            f'<h2><a href="/queues/{name}/jobs">{name}</a>{paused}</h2>'
            '<div class="counts">'
            + _count(s.name, "depth", s.depth, "depth")
            + _count(s.name, "queued", s.queued, "queued")
            + _count(s.name, "active", s.active, "active")
            + _count(s.name, "scheduled", s.scheduled, "scheduled")
            + _count(s.name, "workers", s.workers, "workers")
            + "</div>"
            f'<div class="charts" data-charts="{name}">{charts}</div>'
            '<p class="lifetime">'
            + " · ".join(
                f'{k} <b data-live="{name}:stats_{k}">{v}</b>' for k, v in s.stats.items()
            )
            + "</p></section>"
        )
    return "<h1>Queues</h1>" + "".join(cards)


def _link(name: str, **params: t.Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "", 0)})
    return f"/queues/{escape(name)}/jobs" + (f"?{escape(query)}" if query else "")


def badge(status: Status | str) -> str:
    value = getattr(status, "value", status)
    return f'<span class="badge {escape(value)}">{escape(value)}</span>'


def _held(job: Job) -> str:
    """Why a queued job waits besides workers (dependencies, concurrency, rate)."""
    if job.status != Status.QUEUED or not job.blocked:
        return ""
    return f' <small class="held">waits for {escape(job.blocked)}</small>'


def progress_bar(progress: float) -> str:
    share = max(0.0, min(1.0, float(progress or 0)))
    return (f'<progress max="100" value="{share * 100:.0f}" title="{share:.0%}">'
            f"{share:.0%}</progress>")


def jobs_table(name: str, page: JobPage, status: str | None, function: str | None,
               limit: int, search: str = "", note: str = "", resumed: bool = False
               ) -> str:
    """The table and the pager: what live updates replace (note: above the table;
    resumed: a search page after the first)."""
    rows = "".join(
        f'<tr data-key="{escape(job.key)}"><td><a href="/queues/{escape(name)}/job?'
        f'{escape(urlencode({"key": job.key}))}">{escape(job.key)}</a></td>'
        f"<td>{escape(job.function)}</td><td>{badge(job.status)}{_held(job)}</td>"
        f"<td>{job.attempts}/{job.retries}</td><td>{progress_bar(job.progress)}</td>"
        f"<td>{when(job.queued)}</td><td>{when(job.started)}</td>"
        f"<td>{when(job.completed)}</td></tr>"
        for job in page.jobs
    ) or '<tr><td colspan="8" class="empty">No job.</td></tr>'
    shown = f"{page.start + 1}-{page.start + len(page.jobs)}" if page.jobs else "0"
    scope = f" of {page.total}" if not function else f" ({page.examined} looked at)"
    shown_limit = limit if limit != 50 else None
    back: dict[str, t.Any] | None = None
    ahead: dict[str, t.Any] | None = None
    if search:  # a search goes on from where its page stopped (data.resume_token)
        scope = (f" whose key contains {escape(repr(search))} ({limit} at most a page,"
                 f" {page.examined} keys looked at)")
        if resumed:
            back = {"key": search, "status": status, "limit": shown_limit}
        if page.next_scan is not None:
            ahead = {"key": search, "status": status, "scan": page.next_scan,
                     "limit": shown_limit}
        labels = ("First", "first", "Continue the search")
    else:
        if page.start > 0:
            back = {"status": status, "function": function,
                    "start": 0 if function else max(0, page.start - limit),
                    "limit": shown_limit}
        if page.next_start is not None:
            ahead = {"status": status, "function": function, "start": page.next_start,
                     "limit": shown_limit}
        labels = ("First" if function else "Previous", "prev", "Next")
    pager = [f'<span class="shown">{shown}{scope}</span>']
    if back is not None:
        pager.append(f'<a href="{_link(name, **back)}" rel="{labels[1]}">{labels[0]}</a>')
    if ahead is not None:
        pager.append(f'<a href="{_link(name, **ahead)}" rel="next">{labels[2]}</a>')
    return (
        (f'<p class="note" id="jobs-note">{escape(note)}</p>' if note else "")
        + '<table class="jobs"><thead><tr><th>key</th><th>function</th><th>status</th>'
        "<th>attempts</th><th>progress</th><th>queued</th><th>started</th>"
        f"<th>finished</th></tr></thead><tbody>{rows}</tbody></table>"
        f'<nav class="pager">{" ".join(pager)}</nav>'
    )


def jobs_body(name: str, table: str, status: str | None, function: str | None,
              message: str = "", search: str = "") -> str:
    options = "".join(
        f'<option value="{s}"{" selected" if s == status else ""}>{s}</option>'
        for s in STATUS_FILTERS
    )
    note = f'<p class="message">{escape(message)}</p>' if message else ""
    return (
        f'<h1>Queue <a href="/queues#queue-{escape(name)}">{escape(name)}</a>: jobs</h1>'
        f"{note}"
        f'<form class="filters" method="get" action="/queues/{escape(name)}/jobs">'
        f'<label>status <select name="status"><option value="">all</option>{options}'
        "</select></label>"
        f'<label>function <input name="function" value="{escape(function or "")}"></label>'
        '<button type="submit">Filter</button></form>'
        f'<form class="search" method="get" action="/queues/{escape(name)}/jobs">'
        f'<label>key <input name="key" value="{escape(search)}" required '
        'placeholder="a key, or part of one"></label><button type="submit">Find</button>'
        "</form>"
        f'<div id="jobs-table" data-live-table="{escape(name)}">{table}</div>'
    )


def job_detail(name: str, job: Job, resource: Resource | None, timeline: list[Event],
               csrf: str | None) -> str:
    """The part of a job's page that live updates replace."""
    rows = [
        ("status", badge(job.status) + _held(job)),
        ("function", escape(job.function)),
        ("progress", progress_bar(job.progress)),
        ("attempts", f"{job.attempts} of {job.retries}"
                     + (f" · {job.disruptions} disruption(s): {escape(job.last_disruption)}"
                        if job.disruptions else "")),
        ("worker", escape(job.worker_id or "")),
        ("priority", str(job.priority)),
        ("timeout", f"{job.timeout} s" if job.timeout else "none"),
        ("ttl", f"{job.ttl} s"),
    ]
    if job.depends_on:
        rows.append(("depends on", " ".join(
            f'<a href="/queues/{escape(name)}/job?{escape(urlencode({"key": k}))}">'
            f"{escape(k)}</a>" for k in job.depends_on)))
    if resource is not None:
        where = (f"{escape(resource.namespace)}/{escape(resource.name)}"
                 if resource.name else "(spec.key set)")
        rows.append(("Job resource", f'<span id="resource">{where}</span> '
                                     f'<small>uid {escape(resource.uid)}</small>'))
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    events = "".join(f"<li>{when(e.at)} {escape(e.status)}</li>" for e in timeline)
    parts = [f'<table class="fields">{table}</table>',
             _actions(name, job, csrf, resource is not None),
             f'<h2>Timeline</h2><ol class="timeline">{events}</ol>',
             f"<h2>kwargs</h2><pre>{pretty(job.kwargs or {})}</pre>"]
    if job.status == Status.COMPLETE:
        parts.append(f'<h2>Result</h2><pre id="result">{pretty(job.result)}</pre>')
    if job.error:
        parts.append(f'<h2>Error</h2><pre class="error" id="error">{escape(job.error)}</pre>')
    if job.meta:
        parts.append(f"<h2>meta</h2><pre>{pretty(job.meta)}</pre>")
    return "".join(parts)


def allowed_actions(job: Job, from_resource: bool = False) -> list[str]:
    """What may be done to the job now. A job the operator enqueued for a Job resource
    may only be aborted: the resource is its desired state (re-create it to run it
    again), and a second run under its key would go behind the operator's back."""
    if from_resource:
        return [] if job.status in TERMINAL_STATUSES or job.status == Status.ABORTING else [
            "abort"]
    if job.status in TERMINAL_STATUSES:
        return (["retry"] if job.status in UNSUCCESSFUL_TERMINAL_STATUSES else []) + ["requeue"]
    if job.status == Status.ABORTING:
        return ["requeue"]
    return ["abort", "requeue"]


def _actions(name: str, job: Job, csrf: str | None, from_resource: bool) -> str:
    if csrf is None:
        return ""
    note = ('<p class="note">Enqueued for a Job resource: re-create the resource to run '
            "it again.</p>" if from_resource else "")
    forms = "".join(
        f'<form method="post" action="/queues/{escape(name)}/job/{action}" class="inline">'
        f'<input type="hidden" name="key" value="{escape(job.key)}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<button type="submit" class="action {action}">{ACTIONS[action]}</button></form>'
        for action in allowed_actions(job, from_resource)
    )
    return f'<div class="actions">{forms}{note}</div>'


def job_body(name: str, job: Job, detail: str) -> str:
    return (f'<h1>Job <code>{escape(job.key)}</code> in '
            f'<a href="/queues/{escape(name)}/jobs">{escape(name)}</a></h1>'
            f'<div id="job-detail" data-live-job="{escape(job.key)}">{detail}</div>')


def confirm_body(name: str, job: Job, action: str, csrf: str) -> str:
    return (
        f"<h1>{ACTIONS[action]} job <code>{escape(job.key)}</code>?</h1>"
        f"<p>{escape(job.function)} in queue {escape(name)}, now {badge(job.status)}.</p>"
        f'<form method="post" action="/queues/{escape(name)}/job/{action}" class="confirm">'
        f'<input type="hidden" name="key" value="{escape(job.key)}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<input type="hidden" name="confirm" value="yes">'
        f'<button type="submit" class="action {action}" id="confirm">'
        f"Yes, {ACTIONS[action].lower()}</button> "
        f'<a href="/queues/{escape(name)}/job?{escape(urlencode({"key": job.key}))}">'
        "Cancel</a></form>"
    )


def workers_body(table: str) -> str:
    """The workers page: its table is refreshed at each change and sample (app.js)."""
    return f'<h1>Workers</h1><div id="workers-table">{table}</div>'


def workers_table(rows: list[tuple[str, list[dict[str, t.Any]]]]) -> str:
    body = ['<table class="workers"><thead><tr><th>queue</th><th>id</th>'
            "<th>host</th><th>running jobs</th><th>concurrency</th><th>liveness age</th>"
            "</tr></thead><tbody>"]
    count = 0
    for name, workers in rows:
        for w in workers:
            count += 1
            running = "".join(
                f'<a href="/queues/{escape(name)}/job?{escape(urlencode({"key": k}))}">'
                f"{escape(str(k))}</a> " for k in w.get("active") or []
            )
            state = ' <span class="badge aborting">draining</span>' if w.get("draining") else ""
            body.append(
                f"<tr><td>{escape(name)}</td><td>{escape(str(w.get('id')))}{state}</td>"
                f"<td>{escape(str(w.get('hostname', '')))}</td><td>{running}</td>"
                f"<td>{escape(str(w.get('concurrency', '')))}</td>"
                f"<td>{age(w['age_ms'])}</td></tr>"
            )
    if not count:
        body.append('<tr><td colspan="6" class="empty">No live worker.</td></tr>')
    body.append("</tbody></table>")
    return "".join(body)


def login_body(error: str = "") -> str:
    note = f'<p class="message error">{escape(error)}</p>' if error else ""
    return (f"<h1>Log in for write access</h1>{note}"
            '<form method="post" action="/login" class="login">'
            '<label>write token <input type="password" name="token" required '
            'autocomplete="current-password"></label>'
            '<button type="submit">Log in</button></form>')


def message_body(title: str, text: str, back: str = "/queues") -> str:
    return (f"<h1>{escape(title)}</h1><p class=\"message\">{escape(text)}</p>"
            f'<p><a href="{escape(back)}">Back</a></p>')
