"""The read side of a cache download: readers tailing the temp file, the disk-full relay, and
uncached pass-through streams.

A :class:`TailReader` reads a :class:`~.download.Download`'s temp file through its own
descriptor and waits only for bytes not yet written; past the end of a file that stopped growing
(the disk filled up) it reads the :class:`Relay` — the bytes the copy read but could not write,
then the remote stream itself — or, if another reader has taken the relay, a fresh remote stream
of its own from the same byte. :func:`passthrough` serves a stream the cache could not keep with
the same file interface.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from typing import TYPE_CHECKING, BinaryIO

from ..errors import StorageError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from .download import Download

__all__ = [
    "READ_BUFFER",
    "Passthrough",
    "Relay",
    "TailReader",
    "close_quietly",
    "expected_size",
    "passthrough",
    "skip_bytes",
]

log = logging.getLogger("cloudwds.cache")

READ_BUFFER = 1 << 20


class Relay:
    """The rest of a shard after the disk filled up: bytes read but not written, then the stream.

    The first reader to reach the end of the file takes it over (and closes the stream when it
    closes); a reader that arrives later, or at another position, fetches its own copy.
    """

    def __init__(self, stream: BinaryIO, leftover: bytes, pos: int):
        self.stream: BinaryIO | None = stream
        self.leftover = leftover
        self.pos = pos
        self.owner: object | None = None
        self.mu = threading.Lock()

    def close(self) -> None:
        with self.mu:
            stream, self.stream = self.stream, None
            self.owner = self  # nobody can take it over any more
        if stream is not None:
            close_quietly(stream)


class TailReader(io.RawIOBase):
    """Reads a :class:`Download`'s file through its own descriptor, waiting for the writer.

    Past the end of a file that stopped growing (disk full) it reads the relay, or a stream of
    its own from the remote, from the same byte on.
    """

    def __init__(self, download: Download, fd: int):
        super().__init__()
        self._download = download
        self._fd = fd
        self._pos = 0
        self._own: BinaryIO | None = None

    @property
    def name(self) -> str:
        return self._download.url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        if self._own is None:
            available = self._download.wait_for(self._pos)
            if available == 0:
                return 0
            if available > 0:
                n = os.preadv(self._fd, [view[: min(len(view), available)]], self._pos)
                self._pos += n
                return n
            data = self._download.relay_read(self, self._pos, len(view))
            if data is None:
                self._own = self._download.refetch(self._pos)
        if self._own is not None:
            data = self._own.read(len(view))
        assert data is not None
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # the pin lasts while others hold copies
            own, self._own = self._own, None
            if own is not None:
                close_quietly(own)
            relay = self._download._relay
            if relay is not None and relay.owner is self:
                relay.close()
            self._download._release_reader()  # the last reader out cancels an unfinished copy
        super().close()

    def _forget_fd_after_fork(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1


class Passthrough(io.RawIOBase):
    """Adapts a bare fetched stream (only ``read``/``close`` promised) to a buffered file."""

    def __init__(self, stream: BinaryIO, name: str):
        super().__init__()
        self._stream = stream
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._stream.close()
            finally:
                super().close()


def passthrough(stream: BinaryIO, url: str) -> BinaryIO:
    """Serve ``stream`` uncached, with the same file interface as a cached shard."""
    return io.BufferedReader(Passthrough(stream, url), buffer_size=READ_BUFFER)


def close_quietly(stream: object) -> None:
    try:
        stream.close()  # type: ignore[attr-defined]
    except Exception as exn:  # noqa: BLE001 - a stream we are done with; its close error changes nothing
        log.debug("closing a remote stream failed: %s", exn)


def expected_size(stream: object) -> int | None:
    """The length the remote announced (fsspec files have ``.size``), if any."""
    size = getattr(stream, "size", None)
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    return None


def skip_bytes(stream: BinaryIO, n: int, url: str, chunk_size: int = 1 << 18) -> None:
    """Read and drop the first ``n`` bytes of ``stream`` (the remote streams cannot seek)."""
    while n > 0:
        chunk = stream.read(min(n, chunk_size))
        if not chunk:
            raise StorageError(f"stream ended before byte {n} while resuming", url)
        n -= len(chunk)
