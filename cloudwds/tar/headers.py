"""Tar header fields: numbers (octal, GNU base-256), names (ustar prefix, cut headers),
checksums, pax records, and the per-member size limit.

Pure functions over one 512-byte header or one pax record block: the reader
(:mod:`cloudwds.tar.reader`) calls them on its hot path, the random-access index reads sizes
with :func:`_parse_number`. Every malformation becomes a :class:`TarFormatError` naming the URL
and the member the reader was at (see :mod:`cloudwds.tar.reader` for which member that is).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from ..errors import MemberTooLargeError, TarFormatError

BLOCK = 512
DEFAULT_BUFSIZE = 1 << 20
# Per-member limit: generous (video members of a few GiB are fine), but a header claiming a
# terabyte is refused before anything is read. Also bounds what a gzip member may inflate to.
DEFAULT_MAX_MEMBER_SIZE = 8 << 30
MAX_MEMBER_SIZE_ENV = "WDS_MAX_MEMBER_SIZE"
_REGULAR = (b"0", b"\0", b"7")
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")
_META = (b"L", b"x", b"K", b"X")
_ZERO_BLOCK = bytes(BLOCK)


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def resolve_max_member_size(
    value: int | str | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """The per-member size limit: ``value`` if given, else ``WDS_MAX_MEMBER_SIZE``, else 8 GiB.

    Accepts bytes or sizes such as ``"512M"``/``"16G"`` (powers of 1024). Called where the user
    hands configuration over (``tarfile_to_samples``, ``Decoder``) and, for the readers that get
    no explicit value (``cloudwds verify``/``index``), once per shard.
    """
    if value is None:
        env = os.environ if environ is None else environ
        value = env.get(MAX_MEMBER_SIZE_ENV) or DEFAULT_MAX_MEMBER_SIZE
        source = MAX_MEMBER_SIZE_ENV
    else:
        source = "max_member_size"
    if isinstance(value, str):
        from ..cache.sizes import parse_size

        try:
            value = parse_size(value)
        except ValueError as exn:
            raise ValueError(f"{source}: {exn}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{source} must be a positive number of bytes, got {value!r}")
    return value


def _at(name: str | None, offset: int) -> str:
    """The ``member`` of an error: a known name, else where the damaged header starts."""
    return name if name else f"<header at offset {offset}>"


def _too_large(size: int, limit: int, url: str | None, member: str) -> MemberTooLargeError:
    return MemberTooLargeError(
        f"tar member claims {size} bytes, more than the limit of {limit} bytes "
        f"(raise it with max_member_size= or {MAX_MEMBER_SIZE_ENV})",
        url,
        member,
    )


def _header_name(header: bytes) -> str:
    name = header[0:100]
    nul = name.find(b"\0")
    if nul >= 0:
        name = name[:nul]
    # Only POSIX ustar ("ustar\0") has a name prefix; GNU's "ustar  " keeps atime/ctime there.
    if header[257:263] == b"ustar\0" and header[345] != 0:
        prefix = header[345:500]
        nul = prefix.find(b"\0")
        if nul >= 0:
            prefix = prefix[:nul]
        name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _partial_name(partial: bytes) -> str | None:
    """The name in a header cut short, when its whole name field was read."""
    nul = partial.find(b"\0", 0, 100)
    if nul > 0:
        return partial[:nul].decode("utf-8", "surrogateescape")
    if len(partial) >= 100 and partial[0] != 0:
        return partial[:100].decode("utf-8", "surrogateescape")
    return None


def _parse_number(field: bytes) -> int:
    """A non-negative numeric header field: octal text, or GNU base-256; ``ValueError`` if not."""
    if field[0] & 0x80:
        if field[0] != 0x80:  # 0xff starts a negative base-256 number; others are garbage
            raise ValueError("negative or malformed base-256 number")
        value = 0
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    value = int(text, 8)
    if value < 0:
        raise ValueError("negative number")
    return value


def _bad_size(header: bytes, url: str | None, name: str | None, offset: int) -> TarFormatError:
    return TarFormatError(
        f"bad size field {header[124:136]!r} in the tar header at offset {offset}",
        url,
        _at(name, offset),
    )


def _header_size(header: bytes, url: str | None, member: str, offset: int) -> int:
    try:
        return _parse_number(header[124:136])
    except ValueError:
        raise _bad_size(header, url, member, offset) from None


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _parse_number(header[148:156])
    except ValueError:
        return False
    rest = header[:148] + b"        " + header[156:]
    # Some old tars summed signed chars; accept either sum, as tarfile and GNU tar do.
    unsigned = sum(rest)
    return stored == unsigned or stored == unsigned - 256 * sum(b >= 128 for b in rest)


def _check_checksum(
    header: bytes, url: str | None, last_name: str | None, first: bool, offset: int
) -> None:
    if _checksum_ok(header):
        return
    if first:
        raise TarFormatError("not a tar archive (bad header checksum)", url, _at(None, offset))
    # The header failed its check, so its name is not trusted: name the member before it.
    raise TarFormatError(
        f"bad tar header checksum at offset {offset}" + (" after member" if last_name else ""),
        url,
        _at(last_name, offset),
    )


def _parse_pax(
    data: bytes, url: str | None, member: str, offset: int
) -> tuple[str | None, int | None]:
    """Return the ``path`` and ``size`` of a pax extended header, the only keys we need.

    Records are ``"<length> <key>=<value>\\n"`` where ``length`` counts the whole record; a
    record that does not fit that shape is an error (a length of 0 would never advance).
    """
    path: str | None = None
    size: int | None = None
    pos = 0
    end = len(data)
    while pos < end:
        space = data.find(b" ", pos, min(end, pos + 21))
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            if data.count(0, pos) == end - pos:  # NUL padding after the last record
                break
            raise TarFormatError(
                f"malformed pax record at byte {pos} of the extended header at offset {offset}",
                url,
                member,
            )
        stop = pos + int(digits)
        record = data[space + 1 : stop - 1]
        if stop > end or stop <= space + 1 or data[stop - 1] != 0x0A or b"=" not in record:
            raise TarFormatError(
                f"malformed pax record {data[pos : pos + 40]!r} in the extended "
                f"header at offset {offset}",
                url,
                member,
            )
        key, _, value = record.partition(b"=")
        if key == b"path":
            path = value.decode("utf-8", "surrogateescape")
        elif key == b"size":
            if not value.isdigit() or len(value) > 20:
                raise TarFormatError(
                    f"bad pax size {value[:40]!r} in the extended header at offset {offset}",
                    url,
                    member,
                )
            size = int(value)
        pos = stop
    return path, size
