"""Keep freed memory in the process while a run trains (glibc only).

Every training step allocates the same activation caches and frees them
after backward.  glibc returns large freed blocks to the system (``munmap``,
or trimming the heap top once more than a moving threshold is free), so the
next step page-faults the same megabytes back in, zero-filled by the
kernel: measured on ``examples/sine.yaml``, 6.2-7.2 s against 4.5-4.6 s
with the thresholds below (docs/performance.md, "Memory the allocator
keeps").  Fixing both thresholds keeps blocks under ``MMAP_THRESHOLD`` on
the heap and up to ``TRIM_THRESHOLD`` of free heap in the process, so the
steady state of a training loop allocates without faults.

The CLI calls :func:`retain_freed_memory` (it owns its process); a library
user can call it too, or set glibc's ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` environment variables, which it leaves alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_done: bool | None = None


def retain_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds once per process; True if they are set.

    False (and nothing changed) off glibc, or when the user set either
    threshold in the environment.
    """
    global _done
    if _done is None:
        _done = _apply()
    return _done


def _apply() -> bool:
    if not sys.platform.startswith("linux") or any(k in os.environ for k in _ENV):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's malloc has no such knobs
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
