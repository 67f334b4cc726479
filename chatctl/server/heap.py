"""Giving freed memory back to the system.

After a burst (attackers' output queues dropped, a big replay sent) CPython frees its objects,
but glibc's malloc keeps the freed pages in the process unless asked to return them: the
server's RSS would stay at its peak. `release()` asks (malloc_trim); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to ask
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release() -> bool:
    """Return free heap pages to the system; True when some were."""
    return bool(_TRIM(0)) if _TRIM is not None else False
