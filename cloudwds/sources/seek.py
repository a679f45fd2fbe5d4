"""Resume by seeking: open a shard at the first byte of a sample, using its offsets index.

A resumed exact epoch (:mod:`cloudwds.sources.exact`) may stop in the middle of a shard. Without
help it reads the shard from its start and discards the samples already delivered; with the
shard's offsets index (a DALI ``wds2idx`` ``.idx`` file next to it, written by ``cloudwds
index``; :mod:`cloudwds.indexed.offsets`) it reads from the sample's tar header to the end of
the shard instead, through :class:`~cloudwds.indexed.reader.RangeSource`: a local file is read
from the offset, a cached shard (``cache_dir=`` / ``WDS_CACHE``) is fetched into the cache once
as usual and the cached file is read from the offset, and a remote shard without a cache gets
ranged GETs that start at the offset.

The reading starts where the previous sample's last member's data ends (rounded up to the next
512-byte block), so any header records of the sample's first member (pax, GNU long names) and
members that belong to no sample are parsed exactly as in a read from the start.

A stale index (the shard was regenerated after ``cloudwds index``) is detected and the reader
falls back to reading from the start, logging a warning: the sample count of the ``.idx`` must
equal the count the epoch was planned with, the shard must reach the indexed end, and the
first sample read at the offset must parse and carry the key the index gives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import ShardNotFoundError, StorageError
from ..indexed.offsets import (
    NoRandomAccessError,
    OffsetsFormatError,
    ShardOffsets,
    is_compressed_url,
    offsets_url,
)
from ..indexed.reader import RangeSource
from ..samples import Sample
from ..stats import COUNTERS
from ..storage import OpenedShard, StorageConfig, is_remote, open_shard
from ..storage.local import local_path_of
from ..urls import apply_rewrites

__all__ = ["SeekedShard", "StaleOffsetsError", "open_at_sample", "sample_offset"]

log = logging.getLogger("cloudwds")

_BLOCK = 512


class StaleOffsetsError(Exception):
    """The offsets index does not describe the shard any more: read it from its start instead."""


def sample_offset(table: ShardOffsets, sample: int) -> int:
    """Byte offset where the tar header records of sample ``sample`` (may) begin.

    The end of the previous sample's last member's data, rounded up to a 512-byte block:
    everything between there and the sample's first member (its header, pax or long-name
    records, members that carry no field) is what a read from the start would also parse.
    """
    if sample <= 0:
        return 0
    last = table.starts[sample] - 1
    end = table.offsets[last] + table.sizes[last]
    return -(-end // _BLOCK) * _BLOCK


class _RangeStream:
    """A sequential ``read()`` over ``[start, size)`` of a shard, in ranged blocks."""

    def __init__(self, source: RangeSource, table: ShardOffsets, start: int, size: int, block: int):
        self.source = source
        self.table = table
        self.pos = start
        self.size = size
        self.block = max(_BLOCK, block)
        self._buf = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        if not self._buf:
            if self.pos >= self.size:
                return b""
            end = min(self.size, self.pos + self.block)
            self._buf = memoryview(self.source.read(self.table, self.pos, end))
            self.pos = end
        if n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, memoryview(b"")
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return bytes(out)

    def close(self) -> None:
        self._buf = memoryview(b"")
        self.source.close()


@dataclass
class SeekedShard:
    """A shard opened at sample ``sample`` (byte ``offset``); ``key`` is that sample's key."""

    opened: OpenedShard
    sample: int
    offset: int
    key: str
    reader: RangeSource

    @property
    def bytes_read(self) -> int:
        """Bytes of the shard read so far (what a resume cost)."""
        return self.reader.bytes_read

    def verified(self, samples: Iterable[Sample]) -> Iterator[Sample]:
        """``samples``, after checking that the first one is the sample the index promised.

        Raises :class:`StaleOffsetsError` (nothing yielded yet) when the bytes at the offset
        do not parse as the indexed sample.
        """
        it = iter(samples)
        try:
            first = next(it, None)
        except Exception as exn:
            raise StaleOffsetsError(
                f"the bytes at offset {self.offset} do not parse as a tar member "
                f"({type(exn).__name__}: {exn})"
            ) from exn
        if first is None or first.get("__key__") != self.key:
            found = None if first is None else first.get("__key__")
            raise StaleOffsetsError(
                f"the sample at offset {self.offset} is {found!r}, the index says {self.key!r}"
            )
        yield first
        yield from it


def open_at_sample(
    url: str, storage: StorageConfig, sample: int, expected_samples: int | None = None
) -> SeekedShard | None:
    """Open ``url`` at sample number ``sample`` using its offsets index, or None without one.

    None (read from the start instead) when the shard has no usable ``.idx``: a ``pipe:`` or
    stdin shard, a gzip-compressed one, no file, a file that does not parse, or one whose sample
    count differs from ``expected_samples`` or that points past the shard's end (stale: logged).
    """
    target = apply_rewrites(url, storage.rewrites)
    local = local_path_of(target)
    if sample <= 0 or is_compressed_url(url) or (local is None and not is_remote(url, storage)):
        return None
    idx = offsets_url(url)
    try:
        with open_shard(idx, storage) as opened:
            data = opened.stream.read()
        table = ShardOffsets.from_idx(data, url, where=idx)
    except ShardNotFoundError:
        return None
    except (OffsetsFormatError, StorageError) as exn:
        log.warning("%s: offsets index unusable (%s); reading the shard from its start", url, exn)
        return None
    if sample >= len(table) or (expected_samples is not None and len(table) != expected_samples):
        log.warning(
            "%s: offsets index %s lists %d samples, the epoch plans %s: stale index (rebuild it "
            "with 'cloudwds index'); reading the shard from its start",
            url,
            idx,
            len(table),
            expected_samples,
        )
        return None
    reader = RangeSource(storage, check_size=False)
    try:
        size = reader.size(table)
        if size < table.data_end:
            raise StaleOffsetsError(f"shard has {size} bytes, its index points to {table.data_end}")
    except (StaleOffsetsError, NoRandomAccessError) as exn:
        reader.close()
        log.warning("%s: %s; reading the shard from its start", url, exn)
        return None
    except StorageError:  # gone or unreadable: opening it from the start reports it
        reader.close()
        return None
    except BaseException:
        reader.close()
        raise
    offset = sample_offset(table, sample)
    if local is not None:
        COUNTERS.add("bytes_local", size - offset)
    stream = _RangeStream(reader, table, offset, size, storage.block_size)
    opened = OpenedShard(url, stream, local_path=local)
    return SeekedShard(opened, sample, offset, table.key(sample), reader)
