"""gzip on both sides of the tar format: a compressed shard read as a stream
(:class:`_GzipReader`, chosen by :func:`_maybe_gunzip` from the first two bytes) and a
compressed member (``x.json.gz``) inflated with a size limit (:func:`gunzip_member`).

Both refuse to inflate without bound: a small hostile input must not become gigabytes of
memory. :class:`_Prepended` puts back the two bytes read to decide, for uncompressed streams.
"""

from __future__ import annotations

import io
import zlib
from typing import Any

from ..errors import MemberTooLargeError, TarFormatError
from .headers import DEFAULT_BUFSIZE, MAX_MEMBER_SIZE_ENV, Readable, resolve_max_member_size

# gzip members are inflated in pieces of this many bytes (input and output).
_GZIP_PIECE = 1 << 20


class _GzipReader:
    """Incremental gzip decompression with large reads (``gzip.GzipFile`` reads 8 KiB chunks).

    ``read(n)`` returns at most ``n`` bytes (decompression is bounded with ``max_length``, so
    a highly compressible member never inflates into one huge chunk). Concatenated gzip
    members and zero padding after a member are accepted, as :mod:`gzip` does. A stream cut
    inside a gzip member reads as EOF, so the tar reader reports which member was cut.
    """

    def __init__(self, stream: Readable, first: bytes, url: str | None):
        self._stream = stream
        self._url = url
        self._d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self._input = first  # compressed bytes not yet given to the decompressor
        self._in_member = False
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            parts = []
            while chunk := self.read(DEFAULT_BUFSIZE):
                parts.append(chunk)
            return b"".join(parts)
        while n and not self._eof:
            data, self._input = self._input, b""
            ended = False
            if not data:
                data = self._stream.read(DEFAULT_BUFSIZE)
                if not data:
                    if not self._in_member:
                        self._eof = True
                        break
                    ended = True  # flush what zlib still holds, then report EOF
            if not self._in_member:
                data = data.lstrip(b"\0")
                if not data:
                    continue
                self._d = zlib.decompressobj(zlib.MAX_WBITS | 16)
                self._in_member = True
            try:
                out = self._d.decompress(data, n)
            except zlib.error as exn:
                raise TarFormatError(f"corrupt gzip data: {exn}", self._url) from exn
            if self._d.eof:
                self._input = self._d.unused_data
                self._in_member = False
            else:
                self._input = self._d.unconsumed_tail
            if out:
                return out
            if ended:
                # Cut inside a gzip member: report EOF, and the tar reader names the member
                # it was reading (a cut inside the gzip trailer after the tar end is harmless).
                self._eof = True
                break
        return b""

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


def _maybe_gunzip(stream: Readable, url: str | None) -> Readable:
    first = stream.read(2)
    while 0 < len(first) < 2:  # a pipe may deliver a single byte first
        more = stream.read(2 - len(first))
        if not more:
            break
        first += more
    if first[:2] == b"\x1f\x8b":
        return _GzipReader(stream, first, url)
    return _Prepended(stream, first)


class _Prepended:
    """A stream with a few already-read bytes put back in front."""

    def __init__(self, stream: Readable, head: bytes):
        self._stream = stream
        self._head = head

    def read(self, n: int = -1) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            if n < 0:
                return head + self._stream.read()
            if n <= len(head):
                self._head = head[n:]
                return head[:n]
            return head + self._stream.read(n - len(head))
        return self._stream.read(n)

    def seekable(self) -> bool:
        try:
            return bool(self._stream.seekable())  # type: ignore[attr-defined]
        except (AttributeError, ValueError, OSError):
            return False

    def seek_after_head(self, offset: int, whence: int) -> int:
        """Relative seek; valid once the put-back bytes are consumed (after the first header)."""
        if self._head:
            raise ValueError("cannot seek before the put-back bytes are read")
        where: int = self._stream.seek(offset, whence)  # type: ignore[attr-defined]
        return where


def gunzip_member(data: bytes, limit: int | None = None) -> bytes:
    """Decompress a gzip member's bytes (``x.json.gz``), refusing to inflate past ``limit``.

    :func:`gzip.decompress` grows its output without bound (a 1 GiB bomb peaked at 2.3 GB);
    here input and output go through in pieces, the output is collected in one buffer that
    is handed over without a copy, and :class:`MemberTooLargeError` is raised as soon as the
    output would exceed ``limit`` (default :func:`resolve_max_member_size`). Concatenated gzip
    members are joined, as :mod:`gzip` does; data cut inside a member raises ``EOFError`` and
    garbage raises ``zlib.error`` (the decoder turns both into a ``DecodingError`` naming the
    member).
    """
    if limit is None:
        limit = resolve_max_member_size()
    src = memoryview(data)
    out = io.BytesIO()
    total = 0
    start = 0
    while start < len(src):
        d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        piece: Any = src[start : start + _GZIP_PIECE]
        start += len(piece)
        while True:
            chunk = d.decompress(piece, _GZIP_PIECE)
            if chunk:
                total += len(chunk)
                if total > limit:
                    raise MemberTooLargeError(
                        f"gzip data inflates to more than the limit of {limit} bytes "
                        f"(raise it with max_member_size= or {MAX_MEMBER_SIZE_ENV})"
                    )
                out.write(chunk)
            if d.eof:
                start -= len(d.unused_data)  # the next gzip member starts there
                break
            piece = d.unconsumed_tail
            if not piece and len(chunk) < _GZIP_PIECE:  # zlib needs more input
                if start >= len(src):
                    raise EOFError("gzip data ends inside a gzip member")
                piece = src[start : start + _GZIP_PIECE]
                start += len(piece)
    return out.getvalue()
