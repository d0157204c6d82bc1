"""Limits written as text, for `podq worker --limit NAME=SPEC` and the chart's
`workers.limits` (docs/limits.md): `charge_card=concurrency:3`, `send_email=rate:100/60`,
`*=concurrency:50`, or several parts at once: `api_call=concurrency:5,rate:10/1,burst:3`.

SPEC is parts separated by commas, each at most once:
- `concurrency:N`: at most N running at once;
- `rate:N/PER`: at most N starts per PER, seconds (`60`, `0.5`) or with a unit (`90s`,
  `1m`, `1h`);
- `burst:N` (with a rate): N may start at once after an idle spell.
"""

from __future__ import annotations

import math
import re

from podq.queue import QUEUE_LIMIT, Limit

_POSITIVE = re.compile(r"[1-9][0-9]*")
_PER = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)(?P<unit>[smh]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600}
EXAMPLE = "e.g. charge_card=concurrency:3, send_email=rate:100/60 or *=concurrency:50"


class InvalidLimitSpec(ValueError):
    """A limit's text that does not say a limit; the message says why."""


def _count(part: str, value: str) -> int:
    if not _POSITIVE.fullmatch(value):
        raise InvalidLimitSpec(f"{part}: expected a whole number of 1 or more, got {value!r}")
    return int(value)


def _per_seconds(value: str) -> float:
    match = _PER.fullmatch(value)
    seconds = float(match["number"]) * _UNIT_S[match["unit"]] if match else 0.0
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidLimitSpec(
            f"rate: the period after '/' must be a positive number of seconds (60, 0.5) or"
            f" have a unit (90s, 1m, 1h), got {value!r}")
    return seconds


def parse_spec(spec: str) -> Limit:
    """The Limit that SPEC (`concurrency:3`, `rate:100/60,burst:5`, ...) says."""
    parts: dict[str, str] = {}
    for part in spec.split(","):
        kind, colon, value = part.strip().partition(":")
        if kind not in ("concurrency", "rate", "burst") or not colon:
            raise InvalidLimitSpec(
                f"unknown part {part.strip()!r}: expected concurrency:N, rate:N/SECONDS"
                f" or burst:N")
        if kind in parts:
            raise InvalidLimitSpec(f"{kind} given twice")
        parts[kind] = value.strip()
    rate = per = None
    if "rate" in parts:
        count, slash, period = parts["rate"].partition("/")
        if not slash:
            raise InvalidLimitSpec(f"rate: expected N/SECONDS such as rate:100/60, got"
                                   f" {parts['rate']!r}")
        rate, per = _count("rate", count), _per_seconds(period)
    if "burst" in parts and rate is None:
        raise InvalidLimitSpec("burst needs a rate (rate:N/SECONDS,burst:N)")
    return Limit(
        concurrency=_count("concurrency", parts["concurrency"]) if "concurrency" in parts
        else None,
        rate=rate,
        per=per if per is not None else 60.0,
        burst=_count("burst", parts["burst"]) if "burst" in parts else 1,
    )


def parse_limit(text: str) -> tuple[str, Limit]:
    """NAME=SPEC -> (NAME, Limit); NAME is a function's name or `*` (the whole queue)."""
    name, equals, spec = text.rpartition("=")
    name = name.strip()
    if not equals or not name:
        raise InvalidLimitSpec(f"expected NAME=SPEC, {EXAMPLE}")
    if "," in name:
        raise InvalidLimitSpec(f"the name {name!r} has a comma: a function's name or"
                               f" {QUEUE_LIMIT!r} (the whole queue)")
    return name, parse_spec(spec)


def parse_limits(texts: list[str], flag: str = "--limit") -> dict[str, Limit]:
    """Every NAME=SPEC of a repeated flag; a bad one raises InvalidLimitSpec naming the
    flag and the text, as does a name given twice."""
    limits: dict[str, Limit] = {}
    for text in texts:
        try:
            name, limit = parse_limit(text)
        except InvalidLimitSpec as invalid:
            raise InvalidLimitSpec(f"{flag} {text!r}: {invalid}") from None
        if name in limits:
            raise InvalidLimitSpec(f"{flag} {text!r}: a second limit for {name!r}")
        limits[name] = limit
    return limits


def format_limit(name: str, limit: Limit) -> str:
    """NAME=SPEC as parse_limit reads it (for logs and tests)."""
    parts = [f"concurrency:{limit.concurrency}"] if limit.concurrency else []
    if limit.rate:
        parts.append(f"rate:{limit.rate}/{limit.per:g}")
        if limit.burst > 1:
            parts.append(f"burst:{limit.burst}")
    return f"{name}={','.join(parts)}"
