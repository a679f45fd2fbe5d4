"""Byte sizes written the way people write them: ``"50G"``, ``"500M"``, ``"1.5T"``, ``"10GB"``.

Every suffix is a power of 1024, with or without ``i`` and ``B`` and in any case, so ``"10G"``,
``"10GB"`` and ``"10GiB"`` all mean ``10 * 2**30``. A cache budget is compared with what ``du``
and ``df -h`` report, which count in powers of 1024 too; mixing decimal and binary readings of
"GB" would only make the budget look wrong by 7 %.
"""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

_MULTIPLIERS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}

# number, then either a unit letter with optional "i"/"B", or a bare "B", or nothing
_SIZE = re.compile(
    r"(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?:(?P<unit>[kmgtp])(?:i?b)?|b)?", re.IGNORECASE
)


def parse_size(s: str | int) -> int:
    """Turn ``"50G"``/``"1.5T"``/``"10GB"``/``"123"`` or an int into a number of bytes.

    Used for ``cache_size`` and ``WDS_CACHE_SIZE``, so it accepts what a person types in a
    shell and rejects anything ambiguous (negative, empty, unknown unit) with a ``ValueError``
    that quotes the input, instead of silently caching nothing or everything.
    """
    if isinstance(s, bool) or not isinstance(s, (int, str)):
        raise TypeError(f"size must be an int or a string like '50G', got {s!r}")
    if isinstance(s, int):
        if s < 0:
            raise ValueError(f"size must not be negative, got {s}")
        return s
    m = _SIZE.fullmatch(s.strip())
    if m is None:
        raise ValueError(f"cannot parse size {s!r}: expected bytes or a number with K/M/G/T/P")
    unit = (m.group("unit") or "").lower()
    return int(float(m.group("num")) * _MULTIPLIERS[unit])


def format_size(n: int) -> str:
    """Render a byte count for log lines (``"1.5 GiB"``); the inverse of :func:`parse_size` up to rounding."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
