"""Tar members → samples (grouped by key), and the CBOR / MsgPack sample sources.

A sample is the run of *consecutive* members whose names share everything up to the first dot of
the file name: ``dir/a.b.jpg`` → key ``dir/a``, field ``b.jpg`` (lowercased). Groups never span
two shards, because each shard is grouped on its own. Members without a dot in their file name
(or whose name starts with a dot) carry no field and are skipped, as in webdataset.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from .errors import DuplicateMemberError, ShardError
from .tario import DEFAULT_BUFSIZE, Readable, iter_members

Sample = dict[str, Any]


def split_name(name: str) -> tuple[str, str] | None:
    """``dir/a.b.JPG`` → ``("dir/a", "b.jpg")``; None for names that carry no field."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot <= slash + 1:
        return None
    return name[:dot], name[dot + 1 :].lower()


def group_members(
    members: Iterator[tuple[str, bytes]],
    url: str | None,
    local_path: str | None = None,
) -> Iterator[Sample]:
    """Group consecutive members of one shard into samples with ``__key__``/``__url__``.

    ``__local_path__`` (local files only) comes after the fields, as in webdataset, so a
    sample prints ``{'__key__': ..., '__url__': ..., 'jpg': ...}`` like webdataset's.

    Raises :class:`DuplicateMemberError` when one sample has the same field twice. When the
    member stream fails (truncated shard) while reading a member of the next sample, the
    complete sample before it is still yielded, then the error is raised.
    """
    current: Sample | None = None
    current_key = None
    try:
        for name, data in members:
            # inlined split_name(): this loop runs once per tar member
            slash = name.rfind("/")
            dot = name.find(".", slash + 1)
            if dot <= slash + 1:
                continue
            key = name[:dot]
            suffix = name[dot + 1 :].lower()
            if key != current_key:
                if current is not None:
                    if local_path is not None:
                        current["__local_path__"] = local_path
                    yield current
                current = {"__key__": key, "__url__": url}
                current_key = key
            elif suffix in current:  # type: ignore[operator]
                raise DuplicateMemberError(
                    f"duplicate field {suffix!r} in sample {key!r}", url, name
                )
            current[suffix] = data  # type: ignore[index]
    except ShardError as exn:
        # The shard broke while reading a member of the *next* sample: the one in hand is
        # complete, so hand it out before the error.
        if current is not None and exn.member is not None:
            cut = split_name(exn.member)
            if cut is not None and cut[0] != current_key:
                if local_path is not None:
                    current["__local_path__"] = local_path
                yield current
                raise
        if current is not None and len(current) > 2 and not isinstance(exn, DuplicateMemberError):
            # The sample in hand was cut by a read error: not yielded, but kept on the error, so
            # a handler that swallows it can still get the fields read so far (as webdataset).
            exn.partial_sample = current  # type: ignore[attr-defined]
        raise
    if current is not None:
        if local_path is not None:
            current["__local_path__"] = local_path
        yield current


def tar_samples(
    stream: Readable,
    url: str | None,
    local_path: str | None = None,
    bufsize: int = DEFAULT_BUFSIZE,
    max_member_size: int | None = None,
) -> Iterator[Sample]:
    """All samples of one tar stream; ``max_member_size`` as in :func:`~cloudwds.tario.iter_members`."""
    members = iter_members(stream, url, bufsize=bufsize, max_member_size=max_member_size)
    return group_members(members, url, local_path)


class _RawAdapter(io.RawIOBase):
    """Give a ``read()``-only stream the ``readinto`` that :class:`io.BufferedReader` needs.

    Once the stream has returned EOF it is not read again: a finished ``pipe:`` stream is
    closed, and decoders probe for more data after the last value.
    """

    def __init__(self, stream: Readable):
        self._stream = stream
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._eof:
            return 0
        data = self._stream.read(len(buffer))
        if not data:
            self._eof = True
        buffer[: len(data)] = data
        return len(data)


def cbor_items(stream: Readable) -> Iterator[Any]:
    """Decode a concatenation of CBOR values (a ``.cbors`` file) one value at a time."""
    import cbor2

    buffered = io.BufferedReader(_RawAdapter(stream), 1 << 20)
    decoder = cbor2.CBORDecoder(buffered)
    while buffered.peek(1):
        yield decoder.decode()


def msgpack_items(stream: Readable) -> Iterator[Any]:
    """Decode a concatenation of MsgPack values one value at a time."""
    import msgpack

    buffered = io.BufferedReader(_RawAdapter(stream), 1 << 20)
    yield from msgpack.Unpacker(buffered, raw=False, max_buffer_size=1 << 31)
