"""Pausing and draining a queue, for deploys (`podq drain`, `podq resume`).

A paused queue has its pause key (`podq:{NAME}:paused`, podq.queue.keys); the take
script checks it in the same atomic step in which it would pop jobs, so once `pause`
returns no worker starts a job of that queue. Jobs already running go on; `drain`
waits until none is active. Enqueueing still works: jobs wait, queued, until `resume`.
"""

from __future__ import annotations

import asyncio
import time
import typing as t

from podq.queue.notify import message
from podq.utils import now

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from podq.queue import Queue

def paused_key(queue: Queue) -> str:
    return queue.keys.paused


async def pause(queue: Queue, reason: str = "") -> None:
    """Stop workers taking jobs of this queue (running ones finish). Idempotent."""
    await queue.redis.set(paused_key(queue), f"{now()} {reason}".strip())


async def resume(queue: Queue) -> bool:
    """Lift the pause and wake the workers; False when the queue was not paused."""
    was = bool(await queue.redis.delete(paused_key(queue)))
    # workers wait on the wake channel; a `queued:` message makes them take again
    await queue.redis.spublish(queue.keys.wake, message("queued"))
    return was


async def is_paused(queue: Queue) -> bool:
    return bool(await queue.redis.exists(paused_key(queue)))


async def drain(
    queue: Queue,
    timeout_s: float | None = None,
    progress: Callable[[int, float], None] | None = None,
    interval: float = 0.5,
    report_every: float = 5.0,
) -> bool:
    """Pause the queue, then wait until no job of it is active.

    progress(active, elapsed_s) is called at the start, whenever the number of active
    jobs changes, and every report_every seconds. Returns True once drained, False when
    timeout seconds passed first (the queue stays paused either way).
    """
    await pause(queue, "drain")
    started = time.monotonic()
    last: int | None = None
    reported = started
    while True:
        active = await queue.count("active")
        elapsed = time.monotonic() - started
        if progress and (active != last or time.monotonic() - reported >= report_every):
            progress(active, elapsed)
            reported = time.monotonic()
        last = active
        if active == 0:
            return True
        if timeout_s is not None and elapsed >= timeout_s:
            return False
        wait = interval if timeout_s is None else min(interval, max(timeout_s - elapsed, 0.01))
        await asyncio.sleep(wait)
