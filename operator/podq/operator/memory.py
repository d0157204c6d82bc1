"""Giving freed memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any


def _load_malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS. A burst (thousands of watch events, each
    a decoded JSON body) leaves glibc's heap fragmented and RSS at its peak long after
    the objects are gone; malloc_trim returns the free pages."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
