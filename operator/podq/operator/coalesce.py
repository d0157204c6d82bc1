"""Coalescing and rate limiting for the status writer: many Redis events, few patches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class TokenBucket:
    """At most `rate` operations a second on average, bursts up to `burst`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, wanted: int) -> int:
        """Take up to `wanted` whole tokens now; returns how many were granted."""
        self._refill()
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted

    async def acquire(self) -> None:
        """Wait for one token."""
        while True:
            if self.take(1):
                return
            await asyncio.sleep(self.seconds_until(1))

    def seconds_until(self, tokens: int = 1) -> float:
        self._refill()
        missing = tokens - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate


class Coalescer(Generic[K]):
    """A set of dirty keys with a wake-up signal.

    Marking a key that is already dirty costs nothing, so a job that changes ten times
    between two flushes is written once. `take(n)` hands out at most n keys, oldest
    first; the rest stay dirty for the next flush.
    """

    def __init__(self) -> None:
        self._dirty: dict[K, None] = {}  # insertion-ordered set
        self._signal = asyncio.Event()
        self._later: dict[K, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._dirty)

    def mark(self, key: K) -> None:
        self._dirty[key] = None
        self._signal.set()

    def mark_later(self, key: K, delay_s: float) -> bool:
        """Mark key once delay_s has passed, unless a mark_later of it is pending
        already; returns whether this call scheduled one."""
        if key in self._later:
            return False

        def due() -> None:
            del self._later[key]
            self.mark(key)
        self._later[key] = asyncio.get_running_loop().call_later(delay_s, due)
        return True

    def mark_many(self, keys: list[K]) -> None:
        for key in keys:
            self._dirty[key] = None
        if keys:
            self._signal.set()

    def take(self, limit: int) -> list[K]:
        taken = []
        for key in self._dirty:
            if len(taken) >= limit:
                break
            taken.append(key)
        for key in taken:
            del self._dirty[key]
        if not self._dirty:
            self._signal.clear()
        return taken

    async def wait(self, within_s: float) -> bool:
        """Wait until something is dirty or the timeout passes; True if dirty."""
        if self._dirty:
            return True
        try:
            await asyncio.wait_for(self._signal.wait(), within_s)
        except TimeoutError:
            return bool(self._dirty)
        return True
