"""The Redis queue's shared part: its state, key names, registration and the
reading of a job hash, which every other part (podq.queue.redis_*) builds on.
"""

from __future__ import annotations

import typing as t
from collections.abc import Sequence

from redis import asyncio as aioredis

from podq.job import STORED_FIELDS, Job
from podq.queue import cluster
from podq.queue import keys as redis_keys
from podq.queue.base import Queue
from podq.queue.batch import ScriptBatcher
from podq.queue.store import APART, Scripts, decode_fields, decode_hash, job_hash

STORED_NAMES = frozenset(f.name for f in STORED_FIELDS)


class RedisQueueCore(Queue):
    """The state and helpers that the parts of RedisQueue share (RedisQueue sets them
    up in its __init__)."""

    redis: aioredis.Redis
    keys: redis_keys.QueueKeys
    max_disruptions: int
    _scripts: Scripts
    _batcher: ScriptBatcher
    _registered: bool

    # -- keys ------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    @property
    def job_prefix(self) -> str:
        return self.keys.job_prefix

    @property
    def channel(self) -> str:
        return self.keys.changes

    def job_id(self, job_key: str) -> str:
        return self.keys.job(job_key)

    def job_key_from_id(self, job_id: str | bytes) -> str:
        return redis_keys.key_from_id(job_id)

    def abort_id(self, job_key: str) -> str:
        return self.keys.abort(job_key)

    def worker_key(self, worker_id: str) -> str:
        return self.keys.worker(worker_id)

    async def redis_ms(self) -> int:
        """Now on Redis's clock (TIME), epoch milliseconds."""
        seconds, micros = await self.redis.time()
        return seconds * 1000 + micros // 1000

    # -- registration ----------------------------------------------------------------

    async def _register(self) -> None:
        if not self._registered:
            async with cluster.client_for(self.redis, redis_keys.QUEUES_KEY) as client:
                await client.sadd(redis_keys.QUEUES_KEY, self.name)
            self._registered = True

    # -- (de)serialisation ---------------------------------------------------------

    _apart = APART  # in hash fields of their own, not in the job's JSON

    def _hash(self, job: Job, what: str = "store", fresh: bool = False) -> list[t.Any]:
        """The job's hash as field/value pairs (job_hash), encoded by this queue."""
        return job_hash(job, self._json(job, what), fresh, self._dumper(job, what))

    def _from_hash(
        self, raw: t.Any, names: Sequence[str] = (), *, key: str = "", json_size: int | None = None
    ) -> Job | None:
        """The Job of a job hash: an HGETALL reply, or the values of `names` (take.lua's
        reply: TAKE_FIELDS). A brief read (the values of BRIEF_READ, and json_size: the
        size of the JSON, which it does not read; see decode_fields) gives the Job of
        `key` with its brief fields alone: no kwargs, meta or other field of the JSON,
        and it cannot be written back."""
        fields = (dict(zip(names, raw, strict=True)) if raw else {}) if names else None
        decoded = (decode_fields(fields, self._load, json_size) if fields is not None
                   else decode_hash(raw, self._load))
        if decoded is None:
            return None
        job_dict, timeout_chosen = decoded
        if json_size is not None:
            job_dict["key"] = key
        job = t.cast(Job, self.deserialize(job_dict))
        job.choose("timeout", timeout_chosen)
        # the stored fields as read: a guarded finish sends only those changed since
        job._read_as = {name: getattr(job, name) for name in STORED_NAMES}  # type: ignore[attr-defined]
        job._brief = json_size is not None  # type: ignore[attr-defined]
        return job
