"""Streaming tar reading and writing primitives: headers, pax, GNU long names, gzip. No sample logic.

The public face of :mod:`cloudwds.tar`, where the format is implemented by job:

- :mod:`cloudwds.tar.reader` — :func:`iter_members`, the streaming reader (why not
  :mod:`tarfile`, how hostile input is bounded, which member an error names);
- :mod:`cloudwds.tar.buffered` — a member's bytes out of the stream (shared buffer, direct
  reads of large members, allocation bounded by the bytes that arrive);
- :mod:`cloudwds.tar.headers` — numeric and name fields, checksums, pax records, and the
  per-member size limit (:func:`resolve_max_member_size`);
- :mod:`cloudwds.tar.gzipped` — gzip-compressed shards as a stream, and
  :func:`gunzip_member` for compressed members with a size limit;
- :mod:`cloudwds.tar.writer` — :class:`TarStreamWriter` and the header/padding helpers.

Import from here (``from cloudwds.tario import iter_members``): every name that was defined in
this module before the split is still available under it.
"""

from __future__ import annotations

from .tar.buffered import _DIRECT_READ as _DIRECT_READ
from .tar.buffered import _READ_AHEAD as _READ_AHEAD
from .tar.buffered import _READ_PIECE as _READ_PIECE
from .tar.buffered import _REFILL_AFTER_LARGE as _REFILL_AFTER_LARGE
from .tar.buffered import _read_exact as _read_exact
from .tar.buffered import _read_growing as _read_growing
from .tar.buffered import _refill as _refill
from .tar.buffered import _skip as _skip
from .tar.buffered import _take as _take
from .tar.gzipped import _GZIP_PIECE as _GZIP_PIECE
from .tar.gzipped import _GzipReader as _GzipReader
from .tar.gzipped import _maybe_gunzip as _maybe_gunzip
from .tar.gzipped import _Prepended as _Prepended
from .tar.gzipped import gunzip_member as gunzip_member
from .tar.headers import _META as _META
from .tar.headers import _NO_DATA as _NO_DATA
from .tar.headers import _REGULAR as _REGULAR
from .tar.headers import _ZERO_BLOCK as _ZERO_BLOCK
from .tar.headers import BLOCK as BLOCK
from .tar.headers import DEFAULT_BUFSIZE as DEFAULT_BUFSIZE
from .tar.headers import DEFAULT_MAX_MEMBER_SIZE as DEFAULT_MAX_MEMBER_SIZE
from .tar.headers import MAX_MEMBER_SIZE_ENV as MAX_MEMBER_SIZE_ENV
from .tar.headers import Readable as Readable
from .tar.headers import _at as _at
from .tar.headers import _bad_size as _bad_size
from .tar.headers import _check_checksum as _check_checksum
from .tar.headers import _checksum_ok as _checksum_ok
from .tar.headers import _header_name as _header_name
from .tar.headers import _header_size as _header_size
from .tar.headers import _parse_number as _parse_number
from .tar.headers import _parse_pax as _parse_pax
from .tar.headers import _partial_name as _partial_name
from .tar.headers import _too_large as _too_large
from .tar.headers import resolve_max_member_size as resolve_max_member_size
from .tar.reader import _check_after_end as _check_after_end
from .tar.reader import iter_members as iter_members
from .tar.writer import END_OF_ARCHIVE as END_OF_ARCHIVE
from .tar.writer import TarStreamWriter as TarStreamWriter
from .tar.writer import Writable as Writable
from .tar.writer import member_header as member_header
from .tar.writer import padding as padding

__all__ = [
    "BLOCK",
    "DEFAULT_BUFSIZE",
    "DEFAULT_MAX_MEMBER_SIZE",
    "END_OF_ARCHIVE",
    "MAX_MEMBER_SIZE_ENV",
    "Readable",
    "TarStreamWriter",
    "Writable",
    "gunzip_member",
    "iter_members",
    "member_header",
    "padding",
    "resolve_max_member_size",
]
