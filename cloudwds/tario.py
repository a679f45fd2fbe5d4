"""Streaming tar reading and writing primitives: headers, pax, GNU long names, gzip. No sample logic.

Why not :mod:`tarfile`: it builds a ``TarInfo`` object per member, verifies every header checksum
in Python and assembles member data from 10 KiB reads. Here the stream is read in large blocks
into one buffer, headers are parsed with a few slices, small members are sliced straight out of
that buffer and large members are read directly into a buffer of their exact size.

Checksums: a header that carries the ``ustar`` magic is trusted without summing its 512 bytes
(a sum per member costs as much as the rest of the parse); any header without the magic
(old v7 archives, garbage, a file that is not a tar at all) must pass the checksum or the read
fails with :class:`TarFormatError`. ``verify_checksums=True`` checks every header.

Invariants of :func:`iter_members`: ``buf[pos:]`` holds the unread bytes that were already
fetched from the stream; ``pos`` is always at a 512-byte boundary of the archive.
"""

from __future__ import annotations

import tarfile
import time
import zlib
from collections.abc import Iterator
from typing import Any, Protocol

from .allocator import tune_for_large_buffers
from .errors import TarFormatError, TruncatedShardError

BLOCK = 512
DEFAULT_BUFSIZE = 1 << 20
# Members at least this large bypass the shared buffer and are read into their own buffer.
_DIRECT_READ = 256 * 1024
# After a large member, refill with a small read: the next large member's data would otherwise
# be read twice (into the shared buffer, then again by its own read after seeking back).
_REFILL_AFTER_LARGE = 64 * 1024

_REGULAR = (b"0", b"\0", b"7")
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")
_ZERO_BLOCK = bytes(BLOCK)


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


def iter_members(
    stream: Readable,
    url: str | None = None,
    *,
    bufsize: int = DEFAULT_BUFSIZE,
    verify_checksums: bool = False,
    skip_meta: bool = True,
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, data)`` for every regular file in a tar stream, in archive order.

    Directories, links, devices and global pax headers are skipped; top-level ``__*__`` members
    (webdataset metadata) are skipped when ``skip_meta``. gzip-compressed streams are detected by
    their magic bytes and decompressed on the fly. A stream that ends inside a header, inside a
    member's data, or without the end-of-archive marker raises :class:`TruncatedShardError`
    naming ``url`` and the member (the one whose header or data was cut). A stream shorter
    than one header raises :class:`TarFormatError` unless it carries the ustar magic.
    """
    stream = _maybe_gunzip(stream, url)
    read = stream.read
    seek = stream.seek_after_head if isinstance(stream, _Prepended) and stream.seekable() else None
    buf = b""
    pos = 0
    pending_name: str | None = None  # from a GNU 'L' record or a pax 'path'
    pending_size: int | None = None  # from a pax 'size'
    last_name: str | None = None
    first = True
    refill = bufsize

    while True:
        # --- header block -------------------------------------------------------------
        if len(buf) - pos < BLOCK:
            buf, pos = _refill(read, buf, pos, BLOCK, refill)
            refill = bufsize
            if len(buf) - pos < BLOCK:
                if len(buf) == pos and not first:
                    raise TruncatedShardError(
                        "tar stream ended without an end-of-archive marker", url, last_name
                    )
                if first and len(buf) == pos:
                    raise TarFormatError("empty stream: not a tar archive", url)
                if first and buf[pos + 257 : pos + 262] != b"ustar":
                    # Too short to check: only a cut ustar header counts as a truncated tar.
                    raise TarFormatError(f"not a tar archive (only {len(buf) - pos} bytes)", url)
                # Name the member whose header was cut when its name field arrived whole.
                cut = _partial_name(buf[pos:]) or last_name
                raise TruncatedShardError("tar stream ended inside a header block", url, cut)
        header = buf[pos : pos + BLOCK]
        pos += BLOCK

        if header == _ZERO_BLOCK:
            return  # end-of-archive; the second zero block and any padding are not needed

        if verify_checksums or header[257:262] != b"ustar":
            _check_checksum(header, url, last_name, first)
        first = False

        typeflag = header[156:157]
        if typeflag in (b"L", b"x", b"K", b"X"):
            # --- metadata records that describe the next member ---------------------------
            # Their own size is in their header; pending pax values apply to the member only.
            size = _parse_number(header[124:136])
            padded = (size + BLOCK - 1) & ~(BLOCK - 1)
            data, buf, pos = _take(read, buf, pos, size, padded, bufsize, url, last_name)
            if typeflag == b"L":
                pending_name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            elif typeflag in (b"x", b"X"):
                pax_name, pax_size = _parse_pax(data, url, last_name)
                if pax_name is not None:
                    pending_name = pax_name
                if pax_size is not None:
                    pending_size = pax_size
            continue

        size = pending_size if pending_size is not None else _parse_number(header[124:136])
        name = pending_name if pending_name is not None else _header_name(header)
        pending_name = None
        pending_size = None
        padded = (size + BLOCK - 1) & ~(BLOCK - 1)

        if typeflag in _REGULAR:
            last_name = name
            data, buf, pos = _take(read, buf, pos, size, padded, bufsize, url, name, seek)
            if size >= _DIRECT_READ:
                refill = _REFILL_AFTER_LARGE
            if skip_meta and name.startswith("__") and name.endswith("__") and "/" not in name:
                continue
            yield name, data
            continue

        # Directories, links, devices, global pax headers and unknown types: skipped.
        last_name = name
        if typeflag in _NO_DATA:
            padded = 0  # links and directories carry no data even if a size is set
        buf, pos = _skip(read, buf, pos, padded, bufsize, url, name)


def _refill(read, buf: bytes, pos: int, need: int, bufsize: int) -> tuple[bytes, int]:
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


def _take(read, buf, pos, size, padded, bufsize, url, name, seek=None) -> tuple[bytes, bytes, int]:
    """Return a member's data and the buffer positioned after its padding."""
    avail = len(buf) - pos
    if padded <= avail:
        return buf[pos : pos + size], buf, pos + padded
    if size <= avail:  # data buffered, only (part of) the padding is missing
        data = buf[pos : pos + size]
        buf, pos = _skip(read, buf, pos + size, padded - size, bufsize, url, name)
        return data, buf, pos
    if size >= _DIRECT_READ:
        # Large member: one read of exactly its size instead of growing the shared buffer; on a
        # seekable file, rewind over the part already buffered so no concatenation copy is made.
        tune_for_large_buffers()
        if seek is not None and avail:
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


def _read_exact(read, n: int, url, name) -> bytes:
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


def _skip(read, buf, pos, nbytes, bufsize, url, name) -> tuple[bytes, int]:
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
    if field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _check_checksum(header: bytes, url, last_name, first: bool) -> None:
    try:
        stored = _parse_number(header[148:156])
    except ValueError:
        stored = -1
    rest = header[:148] + b"        " + header[156:]
    # Some old tars summed signed chars; accept either sum, as tarfile and GNU tar do.
    if stored != sum(rest) and stored != sum(rest) - 256 * sum(b >= 128 for b in rest):
        if first:
            raise TarFormatError("not a tar archive (bad header checksum)", url)
        raise TarFormatError("bad tar header checksum after member", url, last_name)


def _parse_pax(data: bytes, url, last_name) -> tuple[str | None, int | None]:
    """Return the ``path`` and ``size`` of a pax extended header, the only keys we need."""
    path: str | None = None
    size: int | None = None
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError as exn:
            raise TarFormatError("malformed pax header", url, last_name) from exn
        record = data[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            path = value.decode("utf-8", "surrogateescape")
        elif key == b"size":
            size = int(value)
        pos += length
    return path, size


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
        return self._stream.seek(offset, whence)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


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
