"""Reading a Redis queue: jobs, counts, limits, stats, info, and workers' liveness
records.
"""

from __future__ import annotations

import json
import logging
import typing as t

from redis.exceptions import ResponseError

from podq.job import Job, Status
from podq.queue.limits import Limit, limited_counts, read_limits, set_limits
from podq.queue.redis_core import RedisQueueCore
from podq.queue.store import (
    BRIEF_READ,
    QUEUE_CONCURRENCY_HELD,
    QUEUE_LIMIT,
    QUEUE_RATE_HELD,
    queue_limit_room,
    read_counts,
    text,
)
from podq.utils import now_seconds

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from podq.queue.store import Counts
    from podq.types import QueueInfo

logger = logging.getLogger("podq")

PRIORITY_SCALE = 1e12  # a ready job's score: priority * this + a counter (make_ready.lua)
WAITING_PRIORITIES = 32  # priorities whose oldest job waiting_since() looks at, at most


class ReadMixin(RedisQueueCore):
    """RedisQueue's reads and workers' liveness records."""

    # -- read ------------------------------------------------------------------------

    async def job(self, job_key: str) -> Job | None:
        return self._from_hash(await self.redis.hgetall(self.job_id(job_key)))

    async def jobs(
        self, job_keys: Iterable[str], *, queue_held: bool = False, brief: bool = False
    ) -> list[Job | None]:
        """The jobs of these keys (None: gone), in one round trip; queue_held, brief: as
        jobs_or_errors()'s."""
        found = await self.jobs_or_errors(job_keys, queue_held=queue_held, brief=brief)
        for item in found:
            if isinstance(item, Exception):
                raise item
        return found  # type: ignore[return-value]  # no exception left in it

    async def jobs_or_errors(
        self, job_keys: Iterable[str], *, queue_held: bool = False, brief: bool = False
    ) -> list[Job | Exception | None]:
        """jobs(), except that a record that cannot be read (the wrong type, JSON that
        does not parse or is not a job) is the exception in its place, in the same one
        round trip. Connection errors still raise.

        queue_held: also mark the ready jobs that wait on the queue's own limit (`Job.blocked`
        QUEUE_CONCURRENCY_HELD or QUEUE_RATE_HELD; see mark_queue_held): the queue's limit
        is read in the same round trip, and a second one is made only when it has one and
        some of these jobs are queued.

        brief: read only the brief fields of each job (BRIEF_READ, HMGET: what a Job
        resource's status shows; podq.job.FieldUse.brief), never its JSON (kwargs, meta):
        a read whose size does not grow with the jobs' arguments. Such a job cannot be
        written back. Its JSON is checked against the size podq wrote (HSTRLEN): one
        changed by others is a corrupt record, as one that does not parse is here."""
        keys = list(job_keys)
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                if brief:
                    pipe.hmget(self.job_id(key), list(BRIEF_READ))
                    pipe.hstrlen(self.job_id(key), "job")
                else:
                    pipe.hgetall(self.job_id(key))
            if queue_held:
                pipe.hget(self.keys.limits, QUEUE_LIMIT)
            raws = await pipe.execute(raise_on_error=False)
        queue_limit = raws.pop() if queue_held else None
        step = 2 if brief else 1
        found: list[Job | Exception | None] = []
        older: list[int] = []  # brief reads of records an older podq wrote (no JSON_SIZE)
        for key, at in zip(keys, range(0, len(raws), step), strict=True):
            replies = raws[at:at + step]
            error = next((r for r in replies if isinstance(r, Exception)), None)
            if error is not None and not isinstance(error, ResponseError):
                raise error  # not this record's doing
            if brief and error is None and replies[1] and replies[0][-1] is None:
                older.append(len(found))
            try:
                found.append(error or (
                    self._from_hash(replies[0], BRIEF_READ, key=key, json_size=replies[1])
                    if brief else self._from_hash(replies[0])))
            except Exception as problem:
                found.append(problem)
        if older:  # whole: those fields of theirs are only in their JSON
            again = await self.jobs_or_errors([keys[i] for i in older])
            for i, job in zip(older, again, strict=True):
                found[i] = job
        if queue_limit and not isinstance(queue_limit, Exception):
            await self.mark_queue_held(found, queue_limit)
        return found

    async def mark_queue_held(self, jobs: Sequence[t.Any], queue_limit: t.Any) -> None:
        """Set `Job.blocked` on those of these jobs that wait on the queue's own limit
        (queue_limit: its encoded Limit, as the limits hash holds it): queued in the
        ready queue at a rank at or beyond how many more its concurrency cap lets run
        (QUEUE_CONCURRENCY_HELD), else at or beyond how many its rate lets start now
        (QUEUE_RATE_HELD; Counts.startable, the same GCRA sum as take.lua's). take.lua
        does not mark them (that would move the whole ready queue on every take): this
        read works it out, in one round trip (the rate's state, the running jobs, each
        job's rank)."""
        ready = [job for job in jobs if isinstance(job, Job)
                 and job.status == Status.QUEUED and not job.blocked]
        if not ready:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.rate(QUEUE_LIMIT))
            pipe.zcard(self.keys.active)
            for job in ready:
                pipe.zrank(self.keys.queued, job.key)
            arrival, active, *ranks = await pipe.execute()
        cap, startable = queue_limit_room(queue_limit, arrival, now_seconds() * 1000)
        room = None if cap is None else max(0, cap - active)
        for job, rank in zip(ready, ranks, strict=True):
            if rank is None:
                continue
            if room is not None and rank >= room:
                job.blocked = QUEUE_CONCURRENCY_HELD
            elif startable is not None and rank >= startable:
                job.blocked = QUEUE_RATE_HELD

    async def iter_jobs(
        self, statuses: Sequence[Status] = tuple(Status), batch_size: int = 100
    ) -> AsyncIterator[Job]:
        """Every job of these statuses, by SCAN over the job records. A queued job that
        waits on a limit or on its dependencies has `Job.blocked` set (concurrency, rate,
        dependencies, or QUEUE_RATE_HELD: the queue's own rate)."""
        wanted = {Status(s) for s in statuses}
        cursor = 0
        while True:
            cursor, jobs = await self.scan_jobs(
                cursor, batch_size, queue_held=Status.QUEUED in wanted)
            for job in jobs:
                if job and job.status in wanted:
                    yield job
            if not cursor:
                break

    async def scan_jobs(
        self, cursor: int = 0, count: int = 100, *, queue_held: bool = False
    ) -> tuple[int, list[Job | None]]:
        """One SCAN step over this queue's job records from `cursor`: the next cursor
        (0 when the scan is complete) and a job (None: gone meanwhile) per record seen;
        queue_held: as jobs_or_errors()'s."""
        cursor, keys = await self._scan_keys(cursor, count)
        return cursor, await self.jobs(keys, queue_held=queue_held)

    async def scan_job_fields(
        self, cursor: int, count: int, fields: Sequence[str]
    ) -> tuple[int, list[tuple[str, list[str | None]]]]:
        """scan_jobs() reading only the stored `fields` of each record (HMGET, one
        round trip): its key and their values as text (None: not set, or gone)."""
        cursor, keys = await self._scan_keys(cursor, count)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(self.job_id(key), list(fields))
            values = await pipe.execute() if keys else []
        return cursor, [(key, [None if v is None else text(v) for v in found])
                        for key, found in zip(keys, values, strict=True)]

    async def _scan_keys(self, cursor: int, count: int) -> tuple[int, list[str]]:
        cursor, ids = await self.redis.scan(
            cursor=cursor, match=self.keys.job_prefix + "*", count=count
        )
        return int(cursor), [self.job_key_from_id(i) for i in ids]

    async def counts(self) -> Counts:
        """The sizes of this queue's sets, read in one round trip."""
        return await read_counts(self.redis, self.keys)

    async def set_limits(self, limits: dict[str, Limit]) -> None:
        """Replace this queue's concurrency and rate limits, for every worker
        (podq.queue.limits): `{"charge_card": Limit(concurrency=3), "*": Limit(rate=100)}`."""
        await set_limits(self.redis, self.keys, limits)

    async def limits(self) -> dict[str, Limit]:
        """This queue's limits, as set by set_limits()."""
        return await read_limits(self.redis, self.keys)

    async def count(self, kind: str) -> int:
        """queued (ready and due now, also those waiting on a limit), scheduled (due
        later), active (active+aborting), incomplete (all of them)."""
        if kind not in ("queued", "scheduled", "active", "incomplete"):
            raise ValueError(f"Can't count unknown type {kind!r}")
        counts = await self.counts()
        return counts.later if kind == "scheduled" else getattr(counts, kind)

    async def depth(self) -> int:
        """Due-queued + active jobs: what an autoscaler should size workers for."""
        return (await self.counts()).depth

    async def next_scheduled(self) -> float | None:
        """Epoch seconds at which the earliest scheduled job becomes due, or None."""
        first = await self.redis.zrange(self.keys.scheduled, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def waiting_since(self) -> float | None:
        """Epoch seconds (Redis's clock) since when the longest-waiting due job has
        waited: the oldest of the head of each priority in the ready queue (since it
        last became ready to run: its `ready_since`, set by the script that made it
        ready: its enqueue, or its schedule if later; a retry's due time; a requeue's
        put-back) and the earliest scheduled job already due (since its due time). None
        when no job is due. Within a priority jobs are first in, first out, so its head
        has waited longest; a newer job of a higher priority at the head of the queue
        hides no older one. The first WAITING_PRIORITIES priorities in use are looked
        at, in one round trip (waiting_since.lua, which judges what is due on Redis's
        clock); jobs held by a limit or waiting for their dependencies are not."""
        since, _ = await self._waiting()
        return since

    async def waited_s(self) -> float:
        """How long the longest-waiting due job has waited (see waiting_since), in
        seconds of Redis's clock (a host's own clock may be skewed); 0 when none is."""
        since, now = await self._waiting()
        return 0.0 if since is None else max(0.0, now - since)

    async def _waiting(self) -> tuple[float | None, float]:
        """waiting_since() and Redis's clock as it read it (epoch seconds)."""
        raw = await self._scripts.waiting_since(
            keys=[self.keys.queued, self.keys.scheduled],
            args=[self.keys.job_prefix, WAITING_PRIORITIES, PRIORITY_SCALE],
            client=self.redis,
        )
        since = [float(raw[1])] if raw[1] is not None else []
        since += [int(ready) / 1000 for ready in raw[2:] if ready is not None]
        return (min(since) if since else None), float(raw[0])

    async def stats(self) -> dict[str, int]:
        """Lifetime counters of this queue (enqueued, complete, failed, aborted, retried,
        disrupted) plus the current counts."""
        raw = await self.redis.hgetall(self.keys.stats)
        out = {k: 0 for k in ("enqueued", "complete", "failed", "aborted", "retried",
                              "disrupted")}
        out.update({text(k): int(v) for k, v in raw.items()})
        counts = await self.counts()
        out.update(queued=counts.queued, scheduled=counts.later, active=counts.active)
        return out

    async def workers(self, now_ms: int | None = None) -> list[dict[str, t.Any]]:
        """Live workers of this queue, from their liveness records. now_ms: Redis's
        clock (redis_ms()), the one liveness expires on, when the caller read it
        already (`podq web` reads it once for every queue of a page); else read here."""
        if now_ms is None:
            now_ms = await self.redis_ms()
        await self.redis.zremrangebyscore(self.keys.workers, "-inf", now_ms)
        ids = [text(i) for i in await self.redis.zrange(self.keys.workers, 0, -1)]
        if not ids:
            return []
        records = await self.redis.mget([self.keys.worker(i) for i in ids])
        found = []
        for worker_id, record in zip(ids, records, strict=True):
            try:
                info = json.loads(record) if record else None
            except ValueError:  # foreign data under the queue's keys: not a worker
                info = None
                logger.warning("worker record %s of queue %s is not JSON; ignored",
                               self.keys.worker(worker_id), self.name)
            if isinstance(info, dict):
                found.append(info)
        return found

    async def limited(self, counts: Counts | None = None) -> dict[str, tuple[int, str]]:
        """The jobs waiting on each limit and why (concurrency or rate): name -> (count,
        why). Those parked on a function's limit, and under QUEUE_LIMIT the ready jobs
        beyond what the queue's own rate lets start now (Counts.rate_held)."""
        counts = counts or await self.counts()
        found = await limited_counts(self.redis, self.keys, counts.parked)
        if counts.rate_held:
            found[QUEUE_LIMIT] = (counts.rate_held, "rate")
        return found

    async def info(self, jobs: bool = False, offset: int = 0, limit: int = 10) -> QueueInfo:
        """The queue's counts and live workers; with jobs, up to `limit` pending jobs from
        `offset` of each set: active, ready, parked on a limit, waiting for dependencies,
        scheduled (each job's `blocked` says why it waits)."""
        workers = await self.workers()
        counts = await self.counts()
        limited = await self.limited(counts)
        info: QueueInfo = {
            "workers": {w["id"]: w for w in workers},
            "name": self.name,
            "queued": counts.queued,
            "active": counts.active,
            "scheduled": counts.later,
            "ready": counts.ready + counts.due - counts.rate_held,
            "limited": {name: {"jobs": n, "why": why} for name, (n, why) in limited.items()},
            "waiting": counts.blocked,
            "jobs": [],
        }
        if jobs:
            end = offset + limit - 1
            parked = [self.keys.parked(name) for name in limited if name != QUEUE_LIMIT]
            keys = []
            for zset in (self.keys.active, self.keys.queued, *parked, self.keys.waiting,
                         self.keys.scheduled):
                keys += [text(k) for k in await self.redis.zrange(zset, offset, end)]
            found = await self.jobs(keys, queue_held=True)
            info["jobs"] = [j.to_dict() for j in found if j][:limit]
        return info

    # -- workers' liveness -----------------------------------------------------------

    async def write_worker_info(self, worker_id: str, info: dict[str, t.Any], ttl: float) -> int:
        """Write a worker's liveness record; it expires after ttl seconds (Redis's clock).
        Returns when Redis wrote it (epoch ms, Redis's clock)."""
        return await self._scripts.liveness(
            keys=[self.keys.worker(worker_id), self.keys.workers],
            args=[worker_id, json.dumps(info), int(ttl * 1000)],
            client=self.redis,
        )

    async def remove_worker_info(self, worker_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            await pipe.execute()
