"""Enqueueing into a Redis queue: one job (enqueue.lua, batched) or many at once
(enqueue_many.lua, pipelined); jobs with dependencies go one by one.
"""

from __future__ import annotations

import logging
import math
import typing as t

from podq.job import Job
from podq.queue.redis_core import RedisQueueCore
from podq.queue.store import text
from podq.utils import new_request_id

if t.TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger("podq")


class EnqueueMixin(RedisQueueCore):
    """RedisQueue's enqueue side."""

    # -- enqueue ---------------------------------------------------------------------

    def _enqueue_script(self, job: Job) -> t.Any:
        """enqueue.lua, batched with the other calls of this loop turn (safe to resend:
        its request id makes a resent enqueue report the job it stored)."""
        key = job.key
        return self._batcher.call(
            self._scripts.enqueue,
            [
                self.keys.job(key),
                self.keys.queued,
                self.keys.scheduled,
                self.keys.abort(key),
                self.keys.seq,
                self.keys.stats,
                self.keys.waiting,
                self.keys.ready,
            ],
            [
                key,
                self.keys.changes,
                self.keys.wake,
                job.scheduled or 0,
                new_request_id(),
                job.priority,
                "\n".join(job.depends_on or ()),
                self.keys.job_prefix,
                self.keys.pending_prefix,
                self.keys.dependents_prefix,
                *self._hash(job, "enqueue", fresh=True),
            ],
        )

    async def _enqueue(self, job: Job) -> bool:
        if not self._registered:
            await self._register()
        if not await self._enqueue_call(job):
            return False
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Enqueued %s", job.info(False))
        return True

    async def _enqueue_call(self, job: Job) -> bool:
        """enqueue.lua (_enqueue_script); whether it enqueued the job, whose ready_since
        it sets to the one the script stamped."""
        reply = await self._enqueue_script(job)
        if reply and not isinstance(reply, int):  # 1: resent, before ready_since
            job.ready_since = int(reply)
        return bool(reply)

    async def enqueue_many(self, jobs: Iterable[Job | str | dict[str, t.Any]]) -> list[Job]:
        """Pipelined bulk enqueue; returns the jobs actually enqueued (not duplicates).

        Items are Job objects, function names, or dicts of Queue.enqueue keyword
        arguments with a "function" entry.
        """
        prepared: list[Job] = []
        for item in jobs:
            if isinstance(item, dict):
                kw = dict(item)
                prepared.append(self._prepare(kw.pop("function"), kw))
            else:
                prepared.append(self._prepare(item, {}))
        if not prepared:
            return []
        for job in prepared:
            for cb in list(self._before_enqueues.values()):
                await cb(job)
        if not self._registered:
            await self._register()
        # jobs with dependencies go one by one, after the others, in order: each finds
        # those it depends on already stored (enqueue.lua)
        after = [job for job in prepared if job.depends_on]
        plain = [job for job in prepared if not job.depends_on]
        flags = await self._enqueue_plain(plain) if plain else ""
        ok = {id(job) for job, flag in zip(plain, flags, strict=True) if flag == "1"}
        for job in after:
            if await self._enqueue_call(job):
                ok.add(id(job))
        return [job for job in prepared if id(job) in ok]

    async def _enqueue_plain(self, prepared: list[Job]) -> str:
        """enqueue_many.lua for jobs without dependencies: '1' per job enqueued (its
        ready_since set as the script stamped it), '0' per duplicate."""
        chunk = 200
        async with self.redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(prepared), chunk):
                args: list[t.Any] = [
                    self.keys.changes,
                    new_request_id(),
                    self.keys.job_prefix,
                    self.keys.abort_prefix,
                    self.keys.wake,
                ]
                for job in prepared[start : start + chunk]:
                    pairs = self._hash(job, "enqueue", fresh=True)
                    args += [job.key, job.scheduled or 0, job.priority, len(pairs), *pairs]
                await self._scripts.enqueue_many(
                    keys=[self.keys.queued, self.keys.scheduled, self.keys.seq, self.keys.stats],
                    args=args,
                    client=pipe,
                )
            results = await pipe.execute()
        flags = ""
        for start, (chunk_flags, now_s) in zip(range(0, len(prepared), chunk), results,
                                              strict=True):
            chunk_flags = text(chunk_flags)
            for job, flag in zip(prepared[start : start + chunk], chunk_flags, strict=True):
                if flag == "1":  # as enqueue_many.lua: now, or its schedule if later
                    job.ready_since = math.floor(
                        max(float(now_s), float(job.scheduled or 0)) * 1000)
            flags += chunk_flags
        return flags
