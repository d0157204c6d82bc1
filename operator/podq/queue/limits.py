"""Flow control: concurrency and rate limits per function and per queue (docs/limits.md).

A queue's limits live in Redis (the hash `podq:{QUEUE}:limits`), so every worker, every
client and take.lua see the same ones: `await queue.set_limits({"charge_card":
Limit(concurrency=3)})`, or `Worker(limits=...)` (a settings key) which sets them as the
worker starts. The name QUEUE_LIMIT ("*") limits the whole queue. take.lua enforces them
atomically with the take: a job whose limit has no room waits (parked), it never fails.
"""

from __future__ import annotations

import typing as t

from podq.queue.store import QUEUE_CONCURRENCY_HELD, QUEUE_LIMIT, QUEUE_RATE_HELD, Limit, text

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from redis import asyncio as aioredis

    from podq.queue.keys import QueueKeys

def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or "," in name:
        raise ValueError(f"invalid limit name {name!r}: a function name or {QUEUE_LIMIT!r}")
    return name


async def set_limits(redis: aioredis.Redis, keys: QueueKeys, limits: dict[str, Limit]) -> None:
    """Replace the queue's limits with these, atomically (no limits: {})."""
    encoded = {_check_name(name): limit.encode() for name, limit in limits.items()}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.limits)
        if encoded:
            pipe.hset(keys.limits, mapping=encoded)
        await pipe.execute()


async def read_limits(redis: aioredis.Redis, keys: QueueKeys) -> dict[str, Limit]:
    """The queue's limits, as every worker applies them."""
    raw = await redis.hgetall(keys.limits)
    return {text(name): Limit.decode(value) for name, value in raw.items()}


async def limited_counts(
    redis: aioredis.Redis, keys: QueueKeys, parked: Sequence[tuple[str, int]]
) -> dict[str, tuple[int, str]]:
    """The ready jobs parked on each limit (waiting for room; `parked`: Counts.parked, the
    sizes read_counts read), and why the first of them waits, as take.lua recorded it
    (Job.blocked: concurrency or rate): name -> (count, why). For `podq info`: two
    round trips while jobs are parked, none otherwise."""
    if not parked:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for name, _ in parked:
            pipe.zrange(keys.parked(name), 0, 0)
        heads = [text(h[0]) if h else "" for h in await pipe.execute()]
    async with redis.pipeline(transaction=False) as pipe:
        for head in heads:
            pipe.hget(keys.job(head), "blocked")
        whys = [text(w) if w else "" for w in await pipe.execute()]
    return {name: (size, why) for (name, size), why in zip(parked, whys, strict=True)}


__all__ = ["QUEUE_CONCURRENCY_HELD", "QUEUE_LIMIT", "QUEUE_RATE_HELD", "Limit", "limited_counts",
           "read_limits", "set_limits"]
