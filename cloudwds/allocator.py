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
from collections.abc import Mapping

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False
_enabled: bool | None = None  # None: configure_allocator() not called yet


def configure_allocator(environ: Mapping[str, str] | None = None) -> bool:
    """Read ``WDS_MALLOPT`` once, at an explicit entry point (building a tar stage).

    Keeps the environment lookup off the per-member hot path; the tuning itself still waits
    for the first large member. Returns whether tuning is enabled.
    """
    global _enabled
    env = os.environ if environ is None else environ
    _enabled = env.get("WDS_MALLOPT", "1").strip().lower() not in ("0", "false", "no", "off")
    return _enabled


def tune_for_large_buffers() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; True when applied."""
    global _done
    if _done:
        return False
    _done = True
    if not (configure_allocator() if _enabled is None else _enabled):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 256 << 20) and mallopt(_M_TRIM_THRESHOLD, 512 << 20)
    return bool(ok)
