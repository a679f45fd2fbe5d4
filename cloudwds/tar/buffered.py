"""Taking a member's bytes out of a tar stream: the shared read buffer, direct reads of large
members, and allocation bounded by the bytes that actually arrive.

The reader (:mod:`cloudwds.tar.reader`) parses headers; these helpers move the stream past a
member's data and padding and return the data. A header's size is only a claim, so a member
larger than ``_READ_AHEAD`` grows its buffer as its bytes come in (:func:`_read_growing`), and
every short read becomes a :class:`TruncatedShardError` naming the member.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from ..allocator import tune_for_large_buffers
from ..errors import TruncatedShardError

# Members at least this large bypass the shared buffer and are read into their own buffer.
_DIRECT_READ = 256 * 1024
# The most bytes allocated for a member before they have arrived. Larger members grow their
# buffer (at most doubling it) as data comes in, so a lying size field costs no memory.
_READ_AHEAD = 16 << 20
# Streams without ``readinto`` deliver large members in pieces of at most this size.
_READ_PIECE = 4 << 20
# After a large member, refill with a small read: the next large member's data would otherwise
# be read twice (into the shared buffer, then again by its own read after seeking back).
_REFILL_AFTER_LARGE = 64 * 1024

# The stream operations the helpers below take (bound methods, looked up once per shard).
Read = Callable[[int], bytes]
ReadInto = Callable[[Any], int | None]
Seek = Callable[[int, int], int]


def _refill(read: Read, buf: bytes, pos: int, need: int, bufsize: int) -> tuple[bytes, int]:
    """Return a buffer holding at least ``need`` unread bytes, or all that is left."""
    rest = buf[pos:]
    chunks = [rest]
    have = len(rest)
    while have < need:
        chunk = read(max(bufsize, need - have))
        if not chunk:
            break
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks), 0


def _take(
    read: Read,
    readinto: ReadInto | None,
    buf: bytes,
    pos: int,
    size: int,
    padded: int,
    bufsize: int,
    url: str | None,
    name: str,
    seek: Seek | None,
) -> tuple[bytes, bytes, int]:
    """Return a member's data and the buffer positioned after its padding."""
    avail = len(buf) - pos
    if padded <= avail:
        return buf[pos : pos + size], buf, pos + padded
    if size <= avail:  # data buffered, only (part of) the padding is missing
        data = buf[pos : pos + size]
        buf, pos = _skip(read, buf, pos + size, padded - size, bufsize, url, name)
        return data, buf, pos
    if size >= _DIRECT_READ:
        # Large member: read into its own buffer instead of growing the shared one.
        tune_for_large_buffers()
        if size > _READ_AHEAD:
            data = _read_growing(read, readinto, buf[pos:], size, url, name)
        elif seek is not None and avail:
            # On a seekable file, rewind over the part already buffered: one read of exactly
            # the member's size, no concatenation copy.
            seek(-avail, 1)
            data = _read_exact(read, size, url, name)
        elif avail:
            data = buf[pos:] + _read_exact(read, size - avail, url, name)
        else:
            data = _read_exact(read, size, url, name)
        buf, pos = _skip(read, b"", 0, padded - size, bufsize, url, name)
        return data, buf, pos
    buf, pos = _refill(read, buf, pos, padded, bufsize)
    if len(buf) - pos < padded:
        what = "data" if len(buf) - pos < size else "padding"
        raise TruncatedShardError(f"tar stream ended inside a member's {what}", url, name)
    return buf[pos : pos + size], buf, pos + padded


def _read_exact(read: Read, n: int, url: str | None, name: str) -> bytes:
    first = read(n)
    if len(first) == n:
        return first
    parts = [first]
    got = len(first)
    while got < n:
        chunk = read(n - got)
        if not chunk:
            raise TruncatedShardError("tar stream ended inside a member's data", url, name)
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _read_growing(
    read: Read, readinto: ReadInto | None, head: bytes, size: int, url: str | None, name: str
) -> bytes:
    """Read a member of ``size`` bytes whose first bytes are ``head``, allocating as data arrives.

    The member's buffer grows to at most twice (or ``_READ_AHEAD`` beyond) what has arrived,
    so a header that lies about its size costs memory in proportion to the bytes that really
    follow, and a true member costs about its size: with ``readinto`` (real files) the data goes
    straight into the buffer, otherwise in pieces of ``_READ_PIECE`` bytes copied into it.
    ``BytesIO.getvalue()`` hands the buffer over without a copy.
    """
    out = io.BytesIO()
    out.write(head)
    got = cap = len(head)
    while got < size:
        want = min(size - got, max(got, _READ_AHEAD))
        if cap < got + want:
            cap = got + want
            out.seek(cap - 1)
            out.write(b"\0")  # grow the buffer to receive the next piece
        if readinto is not None:
            with out.getbuffer() as view, view[got : got + want] as part:
                n = readinto(part)
        else:
            chunk = read(min(want, _READ_PIECE))
            out.seek(got)
            out.write(chunk)
            n = len(chunk)
        if not n:
            raise TruncatedShardError("tar stream ended inside a member's data", url, name)
        got += n
    out.truncate(size)
    return out.getvalue()


def _skip(
    read: Read, buf: bytes, pos: int, nbytes: int, bufsize: int, url: str | None, name: str
) -> tuple[bytes, int]:
    avail = len(buf) - pos
    if nbytes <= avail:
        return buf, pos + nbytes
    nbytes -= avail
    while nbytes > 0:
        chunk = read(min(nbytes, max(bufsize, 1 << 16)))
        if not chunk:
            raise TruncatedShardError("tar stream ended inside a member's data", url, name)
        if len(chunk) > nbytes:  # a stream may return more than asked only in theory
            return chunk, nbytes
        nbytes -= len(chunk)
    return b"", 0
