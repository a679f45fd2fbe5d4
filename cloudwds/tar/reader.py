"""The streaming tar reader: tar bytes in, ``(name, data)`` of every regular member out.

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
from collections.abc import Iterator

from ..errors import ShardError, TarFormatError, TruncatedShardError
from .buffered import _DIRECT_READ, _REFILL_AFTER_LARGE, Read, _refill, _skip, _take
from .gzipped import _maybe_gunzip, _Prepended
from .headers import (
    _META,
    _NO_DATA,
    _REGULAR,
    _ZERO_BLOCK,
    BLOCK,
    DEFAULT_BUFSIZE,
    Readable,
    _at,
    _bad_size,
    _check_checksum,
    _checksum_ok,
    _header_name,
    _header_size,
    _parse_number,
    _parse_pax,
    _partial_name,
    _too_large,
    resolve_max_member_size,
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


def _check_after_end(
    read: Read,
    buf: bytes,
    pos: int,
    base: int,
    bufsize: int,
    url: str | None,
    last_name: str | None,
) -> None:
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
