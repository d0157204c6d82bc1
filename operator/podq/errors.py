"""Errors of podq's queue API (the module `saq.errors` of SAQ)."""

from __future__ import annotations


class MissingDependencyError(Exception):
    """An optional dependency needed for this is not installed."""


class InvalidUrlError(ValueError):
    """A queue URL podq cannot serve (podq queues live on Redis: redis://, rediss://,
    unix://). A ValueError, as redis-py raised before."""
