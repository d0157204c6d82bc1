"""What the pages show, read through the engine's API and the queue's own sets: never
all the jobs of a queue, only the range a page needs.

A queue's pending jobs are in its sorted sets (active, queued, scheduled); finished
jobs are in no set of the engine, so `podq web` keeps their keys in capped sets of its
own (podq.web.feed): those it sees finish on the change feed, and those a background
scan of the job records finds finished. A job of any status is found by its key.
"""

from __future__ import annotations

import re
import time
import typing as t
from dataclasses import dataclass, field

from podq.job import TERMINAL_STATUSES, Job, Status
from podq.queue import cluster
from podq.queue.store import text

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from podq.queue import Queue


FINISHED = tuple(s.value for s in (Status.COMPLETE, Status.FAILED, Status.ABORTED))
FINISHED_CAP = 100_000  # finished jobs remembered per queue and status (the newest)
PENDING = ("active", "queued", "scheduled")
STATUS_FILTERS = (*PENDING, *FINISHED)
CHUNK = 200  # job keys read in the first round trip of a function filter; doubled
CHUNK_MAX = 2000  # each further round trip, up to this
SCAN_BUDGET = 5000  # jobs looked at for one page with a function filter, at most
# and for at most this long (then the page shows what it found and where to go on), so
# a rare function or key answers in bounded time on a busy machine too
TIME_BUDGET_S = 0.1
_RESOURCE_KEY = re.compile(
    r"(?P<namespace>[a-z0-9-]+)/(?P<name>[a-z0-9.-]+)/(?P<uid>[0-9a-f]{8}-[0-9a-f-]{27})"
)


@dataclass
class Source:
    """One sorted set of job keys, read newest first when reverse."""

    status: str
    key: str
    reverse: bool
    size: int = 0


async def sources(queue: Queue, status: str | None) -> list[Source]:
    """The sets a jobs page walks, in order, for a status filter (None: all of them).
    Queued jobs are those ready to run, then those ready but held by a concurrency or
    rate limit (a parked set per limit, podq.queue.limits), then those waiting for
    the jobs they depend on."""
    if status not in (None, *STATUS_FILTERS):
        raise ValueError(f"unknown status {status!r}")
    keys = queue.keys
    limits = sorted(text(n) for n in await queue.redis.smembers(keys.limited)) if status in (
        None, "queued") else []
    every = [
        Source("active", keys.active, False),
        Source("queued", keys.queued, False),
        *(Source("queued", keys.parked(name), False) for name in limits),
        Source("queued", keys.waiting, False),
        Source("scheduled", keys.scheduled, False),
        *(Source(s, keys.web_finished(s), True) for s in FINISHED),
    ]
    return every if status is None else [s for s in every if s.status == status]


@dataclass
class JobPage:
    jobs: list[Job]
    start: int  # position of the page's first job among all the sources
    next_start: int | None  # where the next page starts; None: this is the last
    total: int  # jobs in the sources (a function filter shows fewer)
    examined: int  # jobs looked at for this page
    next_scan: str | None = None  # a search: where its next page goes on (resume_token)


async def _sizes(queue: Queue, walk: list[Source]) -> None:
    async with queue.redis.pipeline(transaction=False) as pipe:
        for source in walk:
            pipe.zcard(source.key)
        for source, size in zip(walk, await pipe.execute(), strict=True):
            source.size = int(size)


async def _range(queue: Queue, source: Source, first: int, count: int) -> list[str]:
    last = first + count - 1
    if source.reverse:
        raw = await queue.redis.zrevrange(source.key, first, last)
    else:
        raw = await queue.redis.zrange(source.key, first, last)
    return [text(k) for k in raw]


async def list_jobs(
    queue: Queue,
    status: str | None = None,
    function: str | None = None,
    start: int = 0,
    limit: int = 50,
) -> JobPage:
    """One page of a queue's jobs: `limit` jobs from position `start` of the sources
    (see sources()), those of `function` only when given. Reads ranges of the sets and
    the jobs in them; with a function filter, at most SCAN_BUDGET of them and for about
    TIME_BUDGET_S (the page then links to where it stopped)."""
    walk = await sources(queue, status)
    await _sizes(queue, walk)
    total = sum(s.size for s in walk)
    start = max(0, min(start, total))
    jobs: list[Job] = []
    position, examined = start, 0
    offset = 0
    chunk = CHUNK
    deadline = time.monotonic() + TIME_BUDGET_S
    for source in walk:
        if position >= offset + source.size:
            offset += source.size
            continue
        while position < offset + source.size and len(jobs) < limit:
            late = examined and time.monotonic() > deadline  # after one read at least
            if examined >= SCAN_BUDGET or (function and late):
                return JobPage(jobs, start, position, total, examined)
            want = limit - len(jobs)
            if function:
                want, chunk = min(chunk, SCAN_BUDGET - examined), min(chunk * 2, CHUNK_MAX)
            keys = await _range(queue, source, position - offset, want)
            if not keys:
                break
            read = len(keys)
            if function:
                keys, read = await _of_function(queue, keys, function, limit - len(jobs))
            # the ready queue's jobs beyond what the queue's own rate lets start now
            found = await queue.jobs(keys, queue_held=source.key == queue.keys.queued)
            if source.reverse:  # a finished set: a job expired (its ttl) or run again
                found = [j if j is not None and j.status.value == source.status else None
                         for j in found]
                gone = [k for k, j in zip(keys, found, strict=True) if j is None]
                if gone:  # leaves the set
                    await queue.redis.zrem(source.key, *gone)
            taken = 0
            for job in found:
                taken += 1
                if job is None or (function and job.function != function):
                    continue
                jobs.append(job)
                if len(jobs) >= limit:
                    break
            if function:
                taken = read
            position += taken
            examined += taken
        offset += source.size
        if len(jobs) >= limit:
            break
    return JobPage(jobs, start, position if position < total else None, total, examined)


async def _of_function(
    queue: Queue, keys: list[str], function: str, wanted: int
) -> tuple[list[str], int]:
    """The first `wanted` of keys whose job runs function, and how many keys were read
    to find them. Reads only each job's stored `function` field, not the JSON of its
    kwargs and result, which matters when most jobs are skipped."""
    async with queue.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(queue.keys.job(key), "function")
        functions = await pipe.execute()
    matches: list[str] = []
    read = 0
    for key, runs in zip(keys, functions, strict=True):
        read += 1
        if runs is not None and text(runs) == function:
            matches.append(key)
            if len(matches) >= wanted:
                break
    return matches, read


SEARCH_BUDGET = 50_000  # set members looked at for one page of a search, at most
SEARCH_STEP = 5000  # ZSCAN's COUNT
_GLOB = re.compile(r"([*?\[\]\\])")
_RESUME = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def resume_token(source: int, cursor: int, skip: int) -> str:
    """Where a search goes on: the source's index (see sources()), the ZSCAN cursor
    there, and how many of that step's matches were shown already."""
    return f"{source}.{cursor}.{skip}"


def parse_resume(token: str | None) -> tuple[int, int, int]:
    if not token:
        return 0, 0, 0
    match = _RESUME.fullmatch(token)
    if match is None:
        raise ValueError(f"not a place to go on from: {token!r}")
    source, cursor, skip = (int(g) for g in match.groups())
    return source, cursor, skip


async def search_jobs(
    queue: Queue, needle: str, status: str | None = None, limit: int = 50,
    resume: str | None = None, budget: int = SEARCH_BUDGET,
) -> JobPage:
    """Jobs whose key contains needle (ZSCAN with a MATCH pattern over the sources),
    the first `limit` found from `resume` (a token of a previous page's next_scan),
    looking at `budget` set members at most and for about TIME_BUDGET_S; next_scan is
    where the next page goes on (None: every source was scanned). A Job resource's job
    is found by its name, its key being `namespace/name/uid`. As with any SCAN, a key
    added or removed meanwhile may be missed or shown twice."""
    pattern = "*" + _GLOB.sub(lambda m: "\\" + m.group(1), needle) + "*"
    walk = await sources(queue, status)
    await _sizes(queue, walk)
    index, cursor, skip = parse_resume(resume)
    found: dict[str, None] = {}
    examined = 0
    deadline = time.monotonic() + TIME_BUDGET_S
    following: str | None = None
    while index < len(walk):
        if examined and (examined >= budget or time.monotonic() > deadline):
            following = resume_token(index, cursor, skip)
            break
        source = walk[index]
        after, members = await queue.redis.zscan(source.key, cursor, match=pattern,
                                                 count=min(SEARCH_STEP, budget))
        examined += min(SEARCH_STEP, budget, source.size)
        keys = [k for k in (text(m) for m, _ in members[skip:]) if k not in found]
        room = limit - len(found)
        if len(keys) > room:  # the rest of this step's matches: on the next page
            found.update((k, None) for k in keys[:room])
            following = resume_token(index, cursor, skip + room)
            break
        found.update((k, None) for k in keys)
        index, cursor, skip = (index, int(after), 0) if after else (index + 1, 0, 0)
        if len(found) >= limit:
            following = resume_token(index, cursor, 0) if index < len(walk) else None
            break
    jobs = [j for j in await queue.jobs(list(found)) if j is not None]
    return JobPage(jobs, 0, None, len(jobs), min(examined, sum(s.size for s in walk)),
                   next_scan=following)


@dataclass
class Summary:
    name: str
    queued: int
    scheduled: int
    active: int
    depth: int
    workers: int
    paused: bool
    stats: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, t.Any]:
        return {
            "name": self.name, "queued": self.queued, "scheduled": self.scheduled,
            "active": self.active, "depth": self.depth, "workers": self.workers,
            "paused": self.paused, **{f"stats_{k}": v for k, v in self.stats.items()},
        }


async def summary(queue: Queue) -> Summary:
    """A queue's counts, lifetime counters and number of live workers."""
    counts = await queue.counts()
    stats = await queue.stats()
    workers = await queue.workers()
    paused = bool(await queue.redis.exists(queue.keys.paused))
    return Summary(
        queue.name, counts.queued, counts.later, counts.active, counts.depth, len(workers),
        paused, {k: stats.get(k, 0) for k in ("enqueued", "complete", "failed", "aborted",
                                               "retried", "disrupted")},
    )


@dataclass
class Resource:
    """The Job resource a job was enqueued for by the operator."""

    uid: str
    namespace: str | None = None
    name: str | None = None


async def resource_of(queue: Queue, job_key: str) -> Resource | None:
    """The Job resource behind a job, when the operator enqueued it: the operator
    claims each job it enqueues (value `<uid> <time>`), and its job key is
    `<namespace>/<name>/<uid>` unless the resource set spec.key."""
    claim = await queue.redis.get(queue.keys.operator_claim(job_key))
    match = _RESOURCE_KEY.fullmatch(job_key)
    if claim is None:
        return None
    uid = text(claim).partition(" ")[0]
    if match and match["uid"] == uid:
        return Resource(uid, match["namespace"], match["name"])
    return Resource(uid)


@dataclass
class Event:
    at: int  # epoch ms
    status: str


async def events(queue: Queue, job_key: str) -> list[Event]:
    """The changes of a job that `podq web` saw, oldest first."""
    raw = await queue.redis.lrange(queue.keys.web_events(job_key), 0, -1)
    out = []
    for item in raw:
        at, _, status = text(item).partition(" ")
        if at.isdigit():
            out.append(Event(int(at), status))
    return out


def timeline(job: Job, seen: list[Event]) -> list[Event]:
    """When the job was queued, started, last touched and finished, with the changes
    the dashboard saw in between (retries, aborts), in time order. A job queued or
    scheduled after a run is marked `again`: a retry (or a run lost with its worker)."""
    marks = [Event(job.queued, "enqueued")] if job.queued else []
    ran = False  # since the last time it was queued
    again = 0
    for event in seen:
        waits = event.status in ("queued", "scheduled")
        again += waits and ran
        marks.append(Event(event.at, f"{event.status} again after a run")
                     if waits and ran else event)
        ran = event.status in ("active", "aborting") or (ran and not waits)
    unseen = job.attempts - 1 - again
    if unseen > 0 and job.started:  # retried while no dashboard watched
        marks.append(Event(job.started, f"{unseen} earlier attempt(s), not seen"))
    if job.scheduled:
        marks.append(Event(int(job.scheduled * 1000), "due"))
    if job.started:
        marks.append(Event(job.started, f"started (attempt {job.attempts})"))
    if job.completed and job.status in TERMINAL_STATUSES:
        marks.append(Event(job.completed, job.status.value))
    return sorted(marks, key=lambda e: e.at)


async def workers(queues: Mapping[str, Queue]) -> list[tuple[str, list[dict[str, t.Any]]]]:
    """Live workers of each queue (by name, in name order; queues of one URL), each with
    `age_ms`: how old its liveness record is. Redis's clock is read once (TIME) for
    them all; on a Redis Cluster once per node, as each node's liveness records expire
    on its own clock."""
    rows: list[tuple[str, list[dict[str, t.Any]]]] = []
    clocks: dict[t.Hashable, int] = {}
    for name, queue in sorted(queues.items()):
        server = cluster.server_of(queue.redis)
        if server not in clocks:
            clocks[server] = await queue.redis_ms()
        now_ms = clocks[server]
        out = []
        for record in await queue.workers(now_ms):
            record = dict(record)
            record["age_ms"] = max(0, now_ms - int(record.get("ts") or now_ms))
            out.append(record)
        rows.append((name, sorted(out, key=lambda r: str(r.get("id")))))
    return rows
