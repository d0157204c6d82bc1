"""Errors of podq's queue API (the module `saq.errors` of SAQ)."""

from __future__ import annotations


class MissingDependencyError(Exception):
    """An optional dependency needed for this is not installed."""


class InvalidUrlError(ValueError):
    """A queue URL podq cannot serve (podq queues live on Redis: redis://, rediss://,
    unix://). A ValueError, as redis-py raised before."""


class RedisVersionError(Exception):
    """The Redis server is older than podq needs (7.0: sharded pub/sub, SPUBLISH and
    SSUBSCRIBE, and the Lua of its scripts), or reports a version podq cannot read.
    Raised by Queue.connect()."""
