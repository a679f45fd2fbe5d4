"""The writing side of the tar format: member headers, padding, the end-of-archive marker.

Used by :class:`cloudwds.writer.TarWriter` and ``cloudwds create``; not on the read hot path,
so headers are built with :mod:`tarfile`'s builder, which every tar tool reads.
"""

from __future__ import annotations

import tarfile
import time
from typing import Any, Protocol

from .headers import BLOCK


def member_header(name: str, size: int, mtime: float | None = None, mode: int = 0o444) -> bytes:
    """Return the header block(s) for a regular file: ustar, with a pax record for long names.

    Written with :mod:`tarfile`'s header builder so every tar tool reads the result; this is
    not on the read hot path.
    """
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(time.time() if mtime is None else mtime)
    info.mode = mode
    info.uname = info.gname = "bigdata"
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def padding(size: int) -> bytes:
    """Zero bytes that round a member's data up to the 512-byte block size."""
    return bytes(-size % BLOCK)


END_OF_ARCHIVE = bytes(2 * BLOCK)


class Writable(Protocol):
    def write(self, data: Any, /) -> Any: ...


class TarStreamWriter:
    """Write regular-file members to a binary stream; ``finish()`` adds the end-of-archive marker."""

    def __init__(self, stream: Writable, mtime: float | None = None):
        self._stream = stream
        self._mtime = mtime
        self.bytes_written = 0

    def add(self, name: str, data: bytes | bytearray | memoryview) -> None:
        header = member_header(name, len(data), self._mtime)
        pad = padding(len(data))
        self._stream.write(header)
        self._stream.write(data)
        if pad:
            self._stream.write(pad)
        self.bytes_written += len(header) + len(data) + len(pad)

    def finish(self) -> None:
        self._stream.write(END_OF_ARCHIVE)
        self.bytes_written += len(END_OF_ARCHIVE)
