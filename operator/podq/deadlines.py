"""The timeouts of a worker's running jobs on one timer (docs/performance.md).

`asyncio.timeout()` per job costs a timer handle in the event loop, a context manager
and a reschedule for every job: at thousands of jobs a second, about 7% of a worker's
time. Deadlines keeps its own heap and gives the loop one timer, for the earliest
deadline; a job that ends first cancels its deadline by marking it, at no cost.
"""

from __future__ import annotations

import asyncio
import heapq
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable

# [when (loop time), sequence, callback or None once cancelled or fired]
Deadline = list[t.Any]


class Deadlines:
    """Callbacks due at deadlines, on one timer of the running loop."""

    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._timer: asyncio.TimerHandle | None = None
        self._count = 0
        self._live = 0

    def add(self, delay: float, callback: Callable[[], None]) -> Deadline:
        """Call callback in delay seconds, unless cancel() comes first."""
        loop = asyncio.get_running_loop()
        entry: Deadline = [loop.time() + delay, self._count, callback]
        self._count += 1
        self._live += 1
        heapq.heappush(self._heap, entry)
        if self._timer is None or entry[0] < self._timer.when():
            self._arm(loop)
        elif len(self._heap) > 2 * self._live + 1000:  # mostly ended jobs' deadlines
            self._heap = [e for e in self._heap if e[2] is not None]
            heapq.heapify(self._heap)
        return entry

    def cancel(self, entry: Deadline) -> None:
        if entry[2] is not None:
            entry[2] = None
            self._live -= 1

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        heap = self._heap
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
        if heap:
            self._timer = loop.call_at(heap[0][0], self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        heap = self._heap
        while heap and (heap[0][2] is None or heap[0][0] <= now):
            entry = heapq.heappop(heap)
            callback = entry[2]
            if callback is not None:
                entry[2] = None
                self._live -= 1
                callback()
        self._arm(loop)
