"""Keeping the long-running daemon's memory to what it holds, not to what it once needed."""

from __future__ import annotations

import ctypes


def release_memory() -> None:
    """Hand the heap a reconcile freed back to the kernel. glibc keeps freed memory for reuse,
    so without this the daemon's RSS would stay at the peak of its biggest reconcile (parsing
    and writing a 100k-entry list: tens of MB) while it idles."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)
