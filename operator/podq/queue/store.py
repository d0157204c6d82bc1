"""How a queue is stored in Redis: the Lua scripts, the job hash encoding, and the
counts of a queue's sets read in one pipelined round trip."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from importlib import resources

from podq.utils import now_seconds

if t.TYPE_CHECKING:
    from redis import asyncio as aioredis
    from redis.commands.core import AsyncScript

    from podq.queue.keys import QueueKeys

# the job hash's integer fields, which the scripts read and write without parsing JSON
INT_FIELDS = ("attempts", "started", "touched", "completed", "timeout")
TEXT_FIELDS = ("worker_id", "error")


def text(value: t.Any) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def number(value: t.Any) -> int | float:
    """A Redis reply as a number: int when whole."""
    as_text = text(value)
    try:
        return int(as_text)
    except ValueError:
        as_float = float(as_text)
        return int(as_float) if as_float.is_integer() else as_float


def load_script(name: str) -> str:
    return resources.files("podq").joinpath("scripts", name).read_text()


class Scripts:
    """The Lua scripts of podq/scripts, registered on one client (run with EVALSHA)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.enqueue: AsyncScript = redis.register_script(load_script("enqueue.lua"))
        self.enqueue_many: AsyncScript = redis.register_script(load_script("enqueue_many.lua"))
        self.take: AsyncScript = redis.register_script(load_script("take.lua"))
        self.write: AsyncScript = redis.register_script(load_script("write.lua"))
        self.abort: AsyncScript = redis.register_script(load_script("abort.lua"))
        self.sweep: AsyncScript = redis.register_script(load_script("sweep.lua"))


def job_state(payload: str, job: t.Any) -> list[t.Any]:
    """The job JSON and the hash fields write.lua stores (in its ARGV order)."""
    return [
        payload,
        job.attempts,
        job.started,
        job.touched,
        job.completed,
        job.worker_id or "",
        job.error or "",
        job.timeout or 0,
        job.heartbeat or 0,
    ]


def decode_hash(raw: t.Any, load: t.Callable[[t.Any], t.Any]) -> dict[str, t.Any] | None:
    """The job dict stored in a job hash (HGETALL reply, dict or flat list), or None.

    The scalar fields win over the same names inside the JSON: the scripts update them
    without parsing it."""
    if not raw:
        return None
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    fields = {text(k): v for k, v in raw.items()}
    if "job" not in fields:
        return None
    job_dict = load(fields["job"])
    for name in INT_FIELDS:
        if name in fields:
            job_dict[name] = number(fields[name])
    if "status" in fields:
        job_dict["status"] = text(fields["status"])
    for name in TEXT_FIELDS:
        if name in fields:
            job_dict[name] = text(fields[name]) or None
    return job_dict


@dataclass(frozen=True)
class Counts:
    """The sizes of a queue's sets at one moment."""

    ready: int  # in the queued set
    due: int  # scheduled, due now (a worker promotes them as it takes)
    later: int  # scheduled, due later
    active: int  # active or aborting

    @property
    def queued(self) -> int:
        return self.ready + self.due

    @property
    def incomplete(self) -> int:
        return self.ready + self.due + self.later + self.active

    @property
    def depth(self) -> int:
        """Due work plus running work: what an autoscaler should size workers for."""
        return self.ready + self.due + self.active


async def read_counts(redis: aioredis.Redis, keys: QueueKeys) -> Counts:
    """All the counts of a queue, in one pipelined round trip."""
    current = now_seconds()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.queued)
        pipe.zcount(keys.scheduled, "-inf", current)
        pipe.zcount(keys.scheduled, f"({current}", "+inf")
        pipe.zcard(keys.active)
        ready, due, later, active = await pipe.execute()
    return Counts(ready, due, later, active)
