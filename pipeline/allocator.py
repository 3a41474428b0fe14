"""Keep freed memory in the process for reuse instead of returning it to the system
(glibc only; docs/performance.md, Memory allocator).

A training step allocates and frees the same tens of megabytes of tensors every call. By
default glibc serves each allocation over its threshold (128 KiB, rising up to 32 MiB) with
a fresh ``mmap`` and returns it with ``munmap`` on free, and trims the heap's free top, so
every step faults in its memory page by page again: at 8,192 products x 50 periods that
took more system time than the arithmetic. Raising the mmap and trim thresholds and the top
pad keeps the pages mapped; resident memory then stays near the step's peak. Applied once
when ``pipeline`` is imported (every job, Ray worker and benchmark); ``SIDBP_MALLOC_TUNING=0``
turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters
SETTINGS = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 1 << 28}
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply ``SETTINGS`` with glibc's ``mallopt`` once per process; True when in force
    (False off glibc or with ``SIDBP_MALLOC_TUNING=0``)."""
    global _applied
    if _applied is None:
        _applied = False
        if os.environ.get("SIDBP_MALLOC_TUNING", "1") != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt"):
                    _applied = all(libc.mallopt(k, v) == 1 for k, v in SETTINGS.items())
            except OSError:
                pass
    return _applied
