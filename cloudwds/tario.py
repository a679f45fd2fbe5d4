"""Streaming tar reading and writing primitives: headers, pax, GNU long names, gzip. No sample logic.

Why not :mod:`tarfile`: it builds a ``TarInfo`` object per member, verifies every header checksum
in Python and assembles member data from 10 KiB reads. Here the stream is read in large blocks
into one buffer, headers are parsed with a few slices, small members are sliced straight out of
that buffer and large members are read directly into a buffer of their own.

Checksums: a header that carries the ``ustar`` magic is trusted without summing its 512 bytes
(a sum per member costs as much as the rest of the parse); any header without the magic
(old v7 archives, garbage, a file that is not a tar at all) must pass the checksum or the read
fails with :class:`TarFormatError`. ``verify_checksums=True`` checks every header.

Hostile or damaged input (shards come from other people's buckets): the reader terminates on
every input in time linear in the bytes it reads, because every header moves the position
forward by at least one block and every size is checked to be a non-negative number before it
is used. It never allocates much more than the data that has actually arrived: a header's size
is a claim, so a member larger than ``_READ_AHEAD`` grows its buffer as its bytes come in, and
no member may be larger than ``max_member_size`` (:class:`MemberTooLargeError`). Every
malformation is a :class:`TarFormatError` or :class:`TruncatedShardError` whose ``member`` is:

- the member whose header or data was being read, when its name is known (from a pax ``path``,
  a GNU long name, or the name field of a header that passed its checks);
- otherwise the last member read before the damage (the message then says "after" it and
  gives the archive offset);
- otherwise, before any member, ``"<header at offset N>"``.

The end-of-archive marker is a zero block. What follows it must be zeros too (tar pads to a
record size); anything else — typically a second archive appended to the first — is reported
as a :class:`TarFormatError` after the members before the marker were yielded, instead of
being dropped silently as :mod:`tarfile` does.

Invariants of :func:`iter_members`: ``buf[pos:]`` holds the unread bytes that were already
fetched from the stream; ``pos`` is always at a 512-byte boundary of the archive; ``base`` is
the archive offset of ``buf[0]``.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
import zlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from .allocator import tune_for_large_buffers
from .errors import MemberTooLargeError, ShardError, TarFormatError, TruncatedShardError

BLOCK = 512
DEFAULT_BUFSIZE = 1 << 20
# Per-member limit: generous (video members of a few GiB are fine), but a header claiming a
# terabyte is refused before anything is read. Also bounds what a gzip member may inflate to.
DEFAULT_MAX_MEMBER_SIZE = 8 << 30
MAX_MEMBER_SIZE_ENV = "WDS_MAX_MEMBER_SIZE"
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
# gzip members are inflated in pieces of this many bytes (input and output).
_GZIP_PIECE = 1 << 20

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
        from .cache.sizes import parse_size

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


def iter_members(
    stream: Readable,
    url: str | None = None,
    *,
    bufsize: int = DEFAULT_BUFSIZE,
    verify_checksums: bool = False,
    skip_meta: bool = True,
    max_member_size: int | None = None,
    offsets: list[tuple[int, int]] | None = None,
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, data)`` for every regular file in a tar stream, in archive order.

    ``offsets``, when given, receives ``(header_offset, data_offset)`` for each yielded member,
    appended just before it is yielded: where its first header record starts (a pax or GNU
    long-name record when it has one) and where its data starts, in the (decompressed) archive.
    The random-access index (:mod:`cloudwds.indexed`) is built from them in the same pass.

    Directories, links, devices and global pax headers are skipped; top-level ``__*__`` members
    (webdataset metadata) are skipped when ``skip_meta``. gzip-compressed streams are detected by
    their magic bytes and decompressed on the fly. A stream that ends inside a header, inside a
    member's data, or without the end-of-archive marker raises :class:`TruncatedShardError`
    naming ``url`` and the member (the one whose header or data was cut). A stream shorter
    than one header raises :class:`TarFormatError` unless it carries the ustar magic. Damaged
    headers, malformed pax records and data after the end-of-archive marker raise
    :class:`TarFormatError`; a member larger than ``max_member_size`` (default:
    :func:`resolve_max_member_size`) raises :class:`MemberTooLargeError`. Every error names
    ``url`` and a member (see the module docstring for which one).
    """
    limit = resolve_max_member_size(max_member_size)
    raw = stream
    stream = _maybe_gunzip(stream, url)
    read = stream.read
    seek = None
    readinto = None
    if isinstance(stream, _Prepended):
        if stream.seekable():
            seek = stream.seek_after_head
        # Only real files: io.RawIOBase subclasses inherit a readinto that may not work.
        if isinstance(raw, io.FileIO | io.BufferedReader):
            readinto = raw.readinto
    buf = b""
    pos = 0
    base = 0  # archive offset of buf[0]
    pending_name: str | None = None  # from a GNU 'L' record or a pax 'path'
    pending_size: int | None = None  # from a pax 'size'
    last_name: str | None = None
    first = True
    refill = bufsize
    entry_start: int | None = None  # offset of the first metadata record of the next member

    try:
        while True:
            # --- header block -------------------------------------------------------------
            if len(buf) - pos < BLOCK:
                base += pos
                buf, pos = _refill(read, buf, pos, BLOCK, refill)
                refill = bufsize
                if len(buf) < BLOCK:
                    if not buf and not first:
                        raise TruncatedShardError(
                            f"tar stream ended at offset {base} without an end-of-archive marker",
                            url,
                            _at(pending_name or last_name, base),
                        )
                    if first and not buf:
                        raise TarFormatError("empty stream: not a tar archive", url, _at(None, 0))
                    if first and buf[257:262] != b"ustar":
                        # Too short to check: only a cut ustar header counts as a truncated tar.
                        raise TarFormatError(
                            f"not a tar archive (only {len(buf)} bytes)", url, _at(None, 0)
                        )
                    # Name the member whose header was cut when its name field arrived whole.
                    cut = pending_name or _partial_name(buf) or last_name
                    raise TruncatedShardError(
                        f"tar stream ended inside the header block at offset {base}",
                        url,
                        _at(cut, base),
                    )
            header = buf[pos : pos + BLOCK]
            pos += BLOCK

            if header == _ZERO_BLOCK:
                # End of archive: only zeros may follow (the second zero block, padding).
                _check_after_end(read, buf, pos, base, bufsize, url, last_name)
                return

            if verify_checksums or header[257:262] != b"ustar":
                _check_checksum(header, url, last_name, first, base + pos - BLOCK)
            first = False

            typeflag = header[156:157]
            if typeflag in _META:
                # --- metadata records that describe the next member -----------------------
                # Their own size is in their header; pending pax values apply to the member only.
                where = _at(pending_name or last_name, base + pos - BLOCK)
                if entry_start is None:
                    entry_start = base + pos - BLOCK
                size = _header_size(header, url, where, base + pos - BLOCK)
                if size > limit:
                    raise _too_large(size, limit, url, where)
                padded = (size + BLOCK - 1) & ~(BLOCK - 1)
                start = base + pos
                data, buf, pos = _take(
                    read, readinto, buf, pos, size, padded, bufsize, url, where, seek
                )
                base = start + padded - pos
                if typeflag == b"L":
                    nul = data.find(b"\0")
                    pending_name = (data if nul < 0 else data[:nul]).decode(
                        "utf-8", "surrogateescape"
                    )
                elif typeflag in (b"x", b"X"):
                    pax_name, pax_size = _parse_pax(data, url, where, start - BLOCK)
                    if pax_name is not None:
                        pending_name = pax_name
                    if pax_size is not None:
                        pending_size = pax_size
                continue

            name = pending_name if pending_name is not None else _header_name(header)
            pending_name = None
            if pending_size is not None:
                size = pending_size
                pending_size = None
            elif typeflag in _NO_DATA:
                size = 0  # links and directories carry no data even if a size is set
            else:
                try:
                    size = _parse_number(header[124:136])
                except ValueError:
                    raise _bad_size(header, url, name, base + pos - BLOCK) from None
            last_name = name
            header_start = base + pos - BLOCK if entry_start is None else entry_start
            entry_start = None

            if typeflag in _REGULAR:
                if size > limit:
                    raise _too_large(size, limit, url, _at(name, base + pos - BLOCK))
                padded = (size + BLOCK - 1) & ~(BLOCK - 1)
                data_start = base + pos
                if padded <= len(buf) - pos:  # the common case: data already buffered
                    data = buf[pos : pos + size]
                    pos += padded
                else:
                    start = base + pos
                    data, buf, pos = _take(
                        read, readinto, buf, pos, size, padded, bufsize, url, name, seek
                    )
                    base = start + padded - pos
                    if size >= _DIRECT_READ:
                        refill = _REFILL_AFTER_LARGE
                if skip_meta and name.startswith("__") and name.endswith("__") and "/" not in name:
                    continue
                if offsets is not None:
                    offsets.append((header_start, data_start))
                yield name, data
                continue

            if typeflag in _NO_DATA:
                continue
            # Global pax headers, sparse files and unknown types: skipped without holding them.
            padded = (size + BLOCK - 1) & ~(BLOCK - 1)
            start = base + pos
            buf, pos = _skip(read, buf, pos, padded, bufsize, url, name)
            base = start + padded - pos
    except ShardError as exn:
        # Errors raised below the parse (corrupt gzip data) know the URL but not the member.
        if exn.member is None or exn.url is None:
            exn.url = url if exn.url is None else exn.url
            if exn.member is None:
                exn.member = _at(pending_name or last_name, base + pos)
            exn.args = (exn.message, exn.url, exn.member)
        raise


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


def _take(
    read, readinto, buf, pos, size, padded, bufsize, url, name, seek
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


def _read_growing(read, readinto, head: bytes, size: int, url, name) -> bytes:
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


def _check_after_end(read, buf: bytes, pos: int, base: int, bufsize: int, url, last_name) -> None:
    """Read to the end of the stream after the end-of-archive block; raise if it is not all zero.

    ``tarfile`` stops at the first zero block, so two archives concatenated with ``cat`` (or a
    stray zero block inside one) silently lose every member after it. Zero padding is normal.
    """
    marker = base + pos - BLOCK
    start = pos
    while True:
        if buf.count(0, start) != len(buf) - start:
            nonzero = start + (len(buf) - start - len(buf[start:].lstrip(b"\0")))
            offset = base + nonzero
            block = offset - offset % BLOCK
            header = buf[block - base : block - base + BLOCK]
            what = "non-zero data"
            if len(header) == BLOCK and (
                header[257:262] == b"ustar" or _checksum_ok(header) and header[0] != 0
            ):
                what = f"a tar header for {_header_name(header)!r}"
            raise TarFormatError(
                f"{what} at offset {block} follows the end-of-archive block at offset "
                f"{marker}; members after it would be lost (concatenated archives?)",
                url,
                _at(last_name, marker),
            )
        # Keep the last partial block so a header straddling two reads can still be described.
        keep = len(buf) - (base + len(buf)) % BLOCK
        base += keep
        tail = buf[keep:]
        chunk = read(bufsize)
        if not chunk:
            return
        buf = tail + chunk
        start = len(tail)


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


def _bad_size(header: bytes, url, name: str | None, offset: int) -> TarFormatError:
    return TarFormatError(
        f"bad size field {header[124:136]!r} in the tar header at offset {offset}",
        url,
        _at(name, offset),
    )


def _header_size(header: bytes, url, member: str, offset: int) -> int:
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


def _check_checksum(header: bytes, url, last_name, first: bool, offset: int) -> None:
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


def _parse_pax(data: bytes, url, member: str, offset: int) -> tuple[str | None, int | None]:
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
