"""Taking jobs from a Redis queue (take.lua): what workers, dequeue() and schedule()
use; a job taken atomically becomes active with a fresh attempt id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import typing as t

from redis.exceptions import ResponseError

from podq.job import Job, Status
from podq.queue.redis_core import RedisQueueCore
from podq.queue.store import TAKE_FIELDS, text
from podq.utils import new_request_id, now_seconds

logger = logging.getLogger("podq")


class TakeMixin(RedisQueueCore):
    """RedisQueue's take side."""

    # -- take (used by workers) --------------------------------------------------------

    async def take(
        self,
        n: int,
        worker_id: str,
        default_timeout: int | None = None,
        *,
        request: str | None = None,
        previous: str | None = None,
        lease: float = 0.0,
    ) -> tuple[list[Job], float | None]:
        """Atomically take up to n ready jobs and mark them active for worker_id.

        Also promotes due scheduled jobs. Returns (jobs, next scheduled time in epoch
        seconds or None). Each job gets an attempt id (`job.attempt_id`) that guarded
        write-backs present. `request` names this take: sent again (after a lost reply)
        it returns the same jobs instead of taking more; `previous` is the taker's last
        request whose reply arrived (its record is dropped); a copy of an older request
        of worker_id that Redis runs after this one (sent again on another connection
        while Redis was frozen or unreachable, run late) takes nothing. `lease` (s): how long after
        the take a missing liveness record of worker_id is not yet taken for its death.
        """
        jobs, nxt, _ = await self._take(n, worker_id, default_timeout, request, previous, lease)
        return jobs, nxt

    async def _take(
        self,
        n: int,
        worker_id: str,
        default_timeout: int | None = None,
        request: str | None = None,
        previous: str | None = None,
        lease: float = 0.0,
    ) -> tuple[list[Job], float | None, list[str]]:
        """take(), and the keys of the scheduled jobs it promoted to the ready queue."""
        keys, args = self._take_call(n, worker_id, default_timeout, request, previous, lease)
        raw = await self._scripts.take(keys=keys, args=args, client=self.redis)
        return await self._taken(raw)

    def _take_call(
        self,
        n: int,
        worker_id: str,
        default_timeout: int | None,
        request: str | None,
        previous: str | None,
        lease: float,
    ) -> tuple[list[t.Any], list[t.Any]]:
        """take.lua's keys and arguments."""
        request = request or new_request_id()
        # the pause flag of `podq drain` (podq/drain.py), then the requests' records
        keys = [self.keys.queued, self.keys.scheduled, self.keys.active, self.keys.seq,
                self.keys.paused, self.keys.take_record(request),
                self.keys.take_record(previous or request), self.keys.limits,
                self.keys.limited, self.keys.ready, self.keys.take_last(worker_id)]
        args = [
            n,
            request,
            worker_id,
            self.keys.job_prefix,
            self.keys.changes,
            "" if default_timeout is None else default_timeout,
            int(lease * 1000),
            self.keys.slot_prefix,
            self.keys.parked_prefix,
            self.keys.rate_prefix,
            *TAKE_FIELDS,
        ]
        return keys, args

    async def _taken(self, raw: t.Any) -> tuple[list[Job], float | None, list[str]]:
        """take.lua's reply as (jobs, next scheduled time, promoted keys)."""
        nxt = float(text(raw[0])) if raw[0] else None
        promoted = [text(key) for key in raw[1]]
        jobs = []
        for i in range(2, len(raw), 2):
            try:
                job = self._from_hash(raw[i + 1], TAKE_FIELDS)
            except Exception as error:  # corrupted or foreign data: that job fails, not us
                await self._fail_unreadable(text(raw[i]), raw[i + 1], error)
                continue
            if job:
                jobs.append(job)
        return jobs, nxt, promoted

    async def take_when_ready(
        self,
        n: int,
        worker_id: str,
        default_timeout: int | None,
        wait: float,
        *,
        request: str | None = None,
        previous: str | None = None,
        lease: float = 0.0,
    ) -> tuple[list[Job], float | None]:
        """take(), run by Redis as soon as work is ready, for an idle worker: on one
        connection, a blocking pop (BLPOP, up to wait s) of the queue's ready token
        (pushed by enqueue.lua, and by take.lua while ready jobs are left) or of the
        worker's own waker list (`wake_taker`), with take.lua pipelined behind it. Redis
        runs the take the moment the pop returns: an enqueued job reaches an idle
        worker in one message from Redis, not a pub/sub message and then a take's round
        trip. Nothing is held in Redis for the worker: if it dies, its connection and
        the take queued on it go with it."""
        keys, args = self._take_call(n, worker_id, default_timeout, request, previous, lease)
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        popped = False
        try:
            await conn.send_packed_command(conn.pack_commands([
                ("BLPOP", self.keys.ready, self.keys.waker(worker_id), max(wait, 0.001)),
                ("EVALSHA", self._scripts.take.sha, len(keys), *keys, *args),
            ]))
            await conn.read_response(timeout=wait + 30)
            popped = True
            raw = await conn.read_response(timeout=30)
        except ResponseError as e:
            # NOSCRIPT (Redis restarted or flushed its scripts), a cluster's TRYAGAIN:
            # a plain take, under the same request (it returns the jobs if this one ran)
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raw = None
            if not popped:  # the pop itself was refused (an ACL without BLPOP?): poll
                logger.warning("podq: a waiting take on queue %s failed (%s); taking every"
                               " %.1fs instead", self.name, e, wait)
        except BaseException:
            with contextlib.suppress(Exception):  # its replies are not read: not reusable
                await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)
        if raw is None:
            jobs, nxt, _ = await self._take(n, worker_id, default_timeout, request, previous,
                                            lease)
            if not jobs and not popped:
                await asyncio.sleep(wait)
            return jobs, nxt
        jobs, nxt, _ = await self._taken(raw)
        return jobs, nxt

    async def wake_taker(self, worker_id: str) -> None:
        """End a take_when_ready of worker_id now (a stop, or work its token does not
        announce: a bulk enqueue, a retry, a resume)."""
        key = self.keys.waker(worker_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, "1")
            pipe.pexpire(key, 60_000)  # a worker gone before popping it leaves nothing
            await pipe.execute()

    async def _fail_unreadable(self, key: str, raw: t.Any, error: Exception) -> None:
        """A job just taken whose record cannot be read as a job: write it back as a
        readable Failed job saying why (guarded by the attempt take.lua gave it)."""
        fields = dict(zip(TAKE_FIELDS, raw or (), strict=False))  # take.lua's reply
        message = f"job record {self.job_id(key)} cannot be read: {type(error).__name__}: {error}"
        logger.warning("%s; marked failed", message)
        job = Job(function=text(fields.get("function", b"")) or "?", key=key, queue=self)
        job.attempt_id = text(fields.get("attempt_id", b""))
        job.attempts = 1
        await self.finish(job, Status.FAILED, error=message[:2000], expect=True)

    async def take_one(
        self,
        timeout: float | None,
        worker_id: str = "",
        default_timeout: int | None = None,
        lease: float = 0.0,
    ) -> Job | None:
        """Take one job, marked active for worker_id, waiting up to timeout seconds for
        one (None: until one arrives); None if none came. lease: as take()'s."""
        deadline = None if timeout is None else now_seconds() + timeout
        request = new_request_id()  # one take, however often it is sent
        async with self.subscribe() as sub:
            while True:
                sub.changed.clear()
                jobs, next_at = await self.take(
                    1, worker_id, default_timeout, request=request, lease=lease
                )
                if jobs:
                    return jobs[0]
                wait = 1.0  # a fallback only: a new job wakes the subscription
                if next_at is not None:
                    wait = max(0.0, min(wait, next_at - now_seconds()))
                if deadline is not None:
                    remaining = deadline - now_seconds()
                    if remaining <= 0:
                        return None
                    wait = min(wait, remaining)
                await sub.wait(wait)

    async def dequeue(
        self, timeout: float = 0.0, poll_interval: float = 0.0, worker_id: str = ""
    ) -> Job | None:
        """SAQ's dequeue: take one job, waiting up to timeout seconds (0: until one
        arrives; poll_interval is accepted and unused, podq is woken by pub/sub).

        The take is atomic (fix 1): in Redis the job is active, its attempt counted, at
        once. The returned Job shows it as SAQ's dequeue does, before its attempt:
        status queued, `attempts` not yet counted, `started` 0, no `worker_id`, so code
        that counts the attempt itself (as SAQ's Worker.process() does) counts it once.
        """
        job = await self.take_one(timeout or None, worker_id)
        if job is not None:
            job.attempts -= 1
            job.status = Status.QUEUED
            job.started = 0
            job.worker_id = None
        return job

    async def schedule(self, lock: int = 1) -> list[str]:
        """Promote due scheduled jobs to the ready queue and return their ids (workers
        promote them as they take; `lock` is accepted for SAQ and unused: the promotion
        is atomic)."""
        _, _, promoted = await self._take(0, "")
        return [self.job_id(key) for key in promoted]
