"""Throughput and failure-rate charts of the last hour, drawn as inline SVG.

`podq web` samples each queue's lifetime counters (its stats hash) every few seconds
into a sorted set (podq.web.feed); the charts are the differences between samples,
summed per minute. No script and no library: plain SVG the page embeds.
"""

from __future__ import annotations

import itertools
import typing as t
from dataclasses import dataclass
from html import escape

from podq.queue.store import text

if t.TYPE_CHECKING:
    from podq.queue import Queue


MINUTES = 60
HISTORY_S = 2 * 3600  # samples kept


@dataclass(frozen=True)
class Sample:
    at_ms: int
    complete: int
    failed: int
    aborted: int

    def member(self) -> str:
        return f"{self.at_ms} {self.complete} {self.failed} {self.aborted}"

    @classmethod
    def parse(cls, member: t.Any) -> Sample | None:
        parts = text(member).split()
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            return None
        return cls(*(int(p) for p in parts))


@dataclass
class Minute:
    finished: int = 0
    failed: int = 0

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.finished if self.finished else None


async def read_samples(queue: Queue, since_s: float) -> list[Sample]:
    raw = await queue.redis.zrangebyscore(queue.keys.web_samples, since_s, "+inf")
    samples = [s for s in (Sample.parse(m) for m in raw) if s is not None]
    return sorted(samples, key=lambda s: s.at_ms)


def per_minute(samples: list[Sample], now_ms: int, minutes: int = MINUTES) -> list[Minute]:
    """Jobs finished and failed in each of the last `minutes` minutes (oldest first),
    from the counters' growth between consecutive samples. A counter that went down
    (the stats hash was reset) counts as nothing for that step."""
    out = [Minute() for _ in range(minutes)]
    first_ms = now_ms - minutes * 60_000
    for before, after in itertools.pairwise(samples):
        if after.at_ms <= first_ms or after.at_ms > now_ms:
            continue
        complete = after.complete - before.complete
        failed = after.failed - before.failed
        aborted = after.aborted - before.aborted
        if min(complete, failed, aborted) < 0:
            continue
        slot = min(minutes - 1, (after.at_ms - first_ms) // 60_000)
        out[slot].finished += complete + failed + aborted
        out[slot].failed += failed
    return out


def _axis(width: int, height: int, label: str, top: str) -> list[str]:
    return [
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" class="axis"/>',
        f'<text x="2" y="11" class="label">{escape(label)}</text>',
        f'<text x="{width - 2}" y="11" class="label" text-anchor="end">{escape(top)}</text>',
        f'<text x="2" y="{height + 12}" class="label">-60 min</text>',
        f'<text x="{width - 2}" y="{height + 12}" class="label" text-anchor="end">now</text>',
    ]


def throughput_svg(minutes: list[Minute], title: str = "finished jobs / min") -> str:
    """Bars: jobs finished per minute."""
    width, height = 300, 60
    peak = max((m.finished for m in minutes), default=0)
    bar = width / len(minutes)
    parts = _axis(width, height, title, f"max {peak}")
    for i, m in enumerate(minutes):
        if not m.finished:
            continue
        h = max(1.0, height * 0.8 * m.finished / peak)
        parts.append(
            f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}" '
            f'height="{h:.1f}" class="bar"><title>{m.finished} finished, '
            f"{MINUTES - i} min ago</title></rect>"
        )
    return _svg(width, height, "throughput", parts)


def failure_svg(minutes: list[Minute], title: str = "failure rate") -> str:
    """A line: the share of finished jobs that failed, per minute (gaps: none finished)."""
    width, height = 300, 60
    step = width / len(minutes)
    parts = _axis(width, height, title, "100%")
    points: list[str] = []
    for i, m in enumerate(minutes):
        rate = m.failure_rate
        if rate is None:
            if len(points) > 1:
                parts.append(f'<polyline points="{" ".join(points)}" class="line"/>')
            points = []
            continue
        x, y = i * step + step / 2, height - height * 0.8 * rate
        points.append(f"{x:.1f},{y:.1f}")
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.5" class="dot"><title>{rate:.0%} '
            f"failed of {m.finished}, {MINUTES - i} min ago</title></circle>"
        )
    if len(points) > 1:
        parts.append(f'<polyline points="{" ".join(points)}" class="line"/>')
    return _svg(width, height, "failures", parts)


def _svg(width: int, height: int, kind: str, parts: list[str]) -> str:
    return (
        f'<svg class="chart {kind}" viewBox="0 0 {width} {height + 14}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg">' + "".join(parts) + "</svg>"
    )


async def charts(queue: Queue, now_ms: int) -> str:
    """Both charts of a queue, as one HTML fragment."""
    samples = await read_samples(queue, now_ms / 1000 - MINUTES * 60 - 60)
    minutes = per_minute(samples, now_ms)
    return throughput_svg(minutes) + failure_svg(minutes)
