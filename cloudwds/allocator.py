"""Keep glibc from unmapping and re-faulting every multi-MB member buffer.

glibc serves allocations above ``M_MMAP_THRESHOLD`` (dynamic, up to 32 MiB) with fresh ``mmap``s
and gives trimmed heap memory back to the kernel; a loop that allocates and frees a 4 MB
``bytes`` per tar member then pays ~1000 page faults per member and runs at half the speed of
``cat``. Raising both thresholds once lets freed member buffers be reused. This changes process
state, so it happens only when the tar reader first meets a large member, only on glibc, and
not at all with ``WDS_MALLOPT=0``. Memory is still returned when the heap shrinks by more than
the trim threshold (512 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_for_large_buffers() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; True when applied."""
    global _done
    if _done:
        return False
    _done = True
    if os.environ.get("WDS_MALLOPT", "1") in ("0", "false", "no"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 256 << 20) and mallopt(_M_TRIM_THRESHOLD, 512 << 20)
    return bool(ok)
