"""IndexedWebDataset: a map-style (``len`` + ``[i]``) dataset over unmodified tar shards.

Streaming (:class:`~cloudwds.WebDataset`) reads each shard from its start and shuffles within
a buffer; this dataset reads any sample by number, so PyTorch's samplers apply as they are:
``RandomSampler`` (a uniform shuffle over the whole dataset), ``DistributedSampler``, a user's
batch sampler (length-bucketed batches), or :class:`~cloudwds.indexed.ShardAwareSampler` (shards
shuffled, samples shuffled within a window of shards: local I/O with a bounded cache).

Sample ``i`` is the ``i``-th sample of the shards in order, and ``ds[i]`` equals the dict
:class:`~cloudwds.WebDataset` yields for it: ``__key__``, ``__url__`` (the shard URL as given),
the fields by lowercased extension with their raw bytes, and ``__local_path__`` for local
shards, after the fields. Sample-wise stages (``decode``, ``to_tuple``, ``map``, ``map_dict``,
``map_tuple``, ``rename``, ``rename_keys``) are cloudwds's own stage objects applied to that one
sample; batching belongs to the DataLoader. A stage that drops the sample (``select``, a
handler that skips) cannot do so in a map-style dataset: ``ds[i]`` raises
:class:`SampleDroppedError` naming the index.

Reads: one ranged read per sample, from its first member's data to its last member's data end
(never outside it); ``__getitems__`` (what ``DataLoader`` calls with automatic batching)
merges neighbours of the same shard into one read; with a cache, whole shards are fetched once
and served locally (see :mod:`.reader`). Before the first read of a shard in each process its
size is checked against the index, and inside each read the tar header before every member
but the first is checked against the index too: :class:`~.offsets.IndexMismatchError` names
the shard when they disagree.

Pickling (DataLoader workers with ``spawn``): the state is the storage configuration, the
offsets tables (flat arrays) and the stages; the reader with its open files is made again
lazily in each process.
"""

from __future__ import annotations

import copy
import os
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from ..errors import DuplicateMemberError, ShardNotFoundError, StorageError
from ..index import Manifest, find_index, load_index, scan_shard_offsets
from ..stagebase import apply_stage
from ..stages import decode, map, map_dict, map_tuple, rename, rename_keys, to_tuple
from ..storage import StorageConfig, open_shard
from ..storage.local import local_path_of
from ..tario import BLOCK, _parse_number
from ..urls import apply_rewrites, expand_urls
from ..workerproc import settle_worker
from ..world import current_world
from .offsets import (
    IndexMismatchError,
    NoRandomAccessError,
    ShardOffsets,
    is_compressed_url,
    offsets_url,
)
from .reader import DEFAULT_COALESCE_GAP, RangeSource

__all__ = ["IndexedWebDataset", "SampleDroppedError"]

Sample = dict[str, Any]


class SampleDroppedError(ValueError):
    """A stage dropped (or multiplied) a sample, which a map-style dataset cannot return."""


class IndexedWebDataset:
    """Map-style dataset over tar shards with offsets files; see the module docstring.

    ``urls_or_index`` is a manifest (a :class:`~cloudwds.index.Manifest` or the URL of a
    ``cloudwds-index.json``), or shards (a brace pattern or a list) whose ``.idx`` files lie
    next to them (``cloudwds index`` writes both). ``build_missing=True`` reads shards that have
    no offsets file, once, in this process (nothing is written; ``cloudwds index`` keeps them).
    ``cache_dir`` / ``cache_size`` / ``storage_options`` as in :class:`~cloudwds.WebDataset`
    (``WDS_CACHE`` applies too; unlike WebDataset, no default cache: whole-shard downloads
    would defeat byte-range reads) and the other :meth:`StorageConfig.resolve
    <cloudwds.storage.StorageConfig.resolve>` keywords (``rewrites``, ``ais_endpoint``,
    ``use_ais_for``, ``retries``, ``timeout``), or a ready ``storage`` configuration. ``coalesce_gap``: in
    ``__getitems__``, samples of one shard at most this many bytes apart are read together.
    ``check_size=False`` skips the per-shard size check (one ``info`` request per remote
    shard and process without a cache). ``verify_checksum=True`` hashes each shard once per
    process against the manifest's sha256 before its first sample (local shards or a cache
    only). ``workers``: threads loading offsets files.
    """

    def __init__(
        self,
        urls_or_index: str | Manifest | Iterable[str],
        *,
        cache_dir: str | os.PathLike[str] | bool | None = None,
        cache_size: int | str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        storage: StorageConfig | None = None,
        build_missing: bool = False,
        check_size: bool = True,
        verify_checksum: bool = False,
        coalesce_gap: int = DEFAULT_COALESCE_GAP,
        allow_pipe: bool = False,
        workers: int | None = None,
        **storage_kwargs: Any,
    ):
        if cache_dir is None and "WDS_CACHE" not in os.environ:
            # random access reads byte ranges: the per-user default cache (which downloads
            # whole shards, see cloudwds.cache.defaults) applies only when asked for
            cache_dir = False
        self.storage = storage or StorageConfig.resolve(
            storage_options=storage_options,
            cache_dir=cache_dir,
            cache_size=cache_size,
            **storage_kwargs,
        )
        self.check_size = check_size
        self.verify_checksum = verify_checksum
        self.coalesce_gap = coalesce_gap
        self.tables = _load_tables(
            urls_or_index, self.storage, build_missing, allow_pipe, workers or 8
        )
        self._ends = array("q")
        total = 0
        for table in self.tables:
            total += len(table)
            self._ends.append(total)
        self._local = [
            local_path_of(apply_rewrites(t.url, self.storage.rewrites)) for t in self.tables
        ]
        self.stages: list[Any] = []
        self._source: RangeSource | None = None
        self._pid = os.getpid()

    # -- size and lookup ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard number, sample number within the shard)`` of dataset index ``index``."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        shard = bisect_right(self._ends, index)
        return shard, index - (self._ends[shard - 1] if shard else 0)

    @property
    def urls(self) -> list[str]:
        return [t.url for t in self.tables]

    # -- reading ------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Any:
        return self._finish(self.raw(index), index)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """Samples for ``indices`` (DataLoader's batched fetch): neighbours share one read."""
        return [self._finish(s, i) for s, i in zip(self.raw_many(indices), indices)]

    def raw(self, index: int) -> Sample:
        """Sample ``index`` as WebDataset yields it, before this dataset's stages."""
        return self.raw_many([index])[0]

    def raw_many(self, indices: Sequence[int]) -> list[Sample]:
        """Samples for ``indices`` before the stages, one read per run of close neighbours."""
        source = self._reader()
        located = [self.locate(i) for i in indices]
        by_shard: dict[int, list[int]] = {}
        for pos, (shard, _) in enumerate(located):
            by_shard.setdefault(shard, []).append(pos)
        out: list[Sample | None] = [None] * len(indices)
        for shard, positions in by_shard.items():
            table = self.tables[shard]
            spans = [table.span(located[p][1]) for p in positions]
            gap = self.coalesce_gap if len(positions) > 1 else 0
            chunks = source.read_many(table, spans, gap)
            for p, chunk, (start, _) in zip(positions, chunks, spans):
                out[p] = self._sample(shard, located[p][1], chunk, start)
        return out  # type: ignore[return-value]

    def _sample(self, shard: int, number: int, data: bytes | memoryview, start: int) -> Sample:
        table = self.tables[shard]
        url = table.url
        sample: Sample = {"__key__": table.key(number), "__url__": url}
        first = True
        for m in table.members(number):
            name = table.names[m]
            offset, size = table.offsets[m] - start, table.sizes[m]
            if not first:
                _check_header(data, offset, size, url, name)
            first = False
            slash = name.rfind("/")
            suffix = name[name.find(".", slash + 1) + 1 :].lower()
            if suffix in sample:
                raise DuplicateMemberError(
                    f"duplicate field {suffix!r} in sample {sample['__key__']!r}", url, name
                )
            sample[suffix] = bytes(data[offset : offset + size])
        local = self._local[shard]
        if local is not None:
            sample["__local_path__"] = local
        return sample

    def _finish(self, sample: Sample, index: int) -> Any:
        if not self.stages:
            return sample
        world = current_world()
        out: Any = sample
        for stage in self.stages:
            results = list(apply_stage(stage, [out], world))
            if len(results) != 1:
                raise SampleDroppedError(
                    f"stage {stage!r} turned sample {index} into {len(results)} samples; "
                    "a map-style dataset returns exactly one (filter with the sampler instead)"
                )
            out = results[0]
        return out

    def _reader(self) -> RangeSource:
        if self._source is None or self._pid != os.getpid():
            # A forked worker must not share the parent's descriptors' positions or pins.
            settle_worker()  # and its GC must not copy the parent's heap (see workerproc)
            self._source = RangeSource(
                self.storage, check_size=self.check_size, verify_checksum=self.verify_checksum
            )
            self._pid = os.getpid()
        return self._source

    @property
    def reader(self) -> RangeSource:
        """This process's reader (its ``requests`` and ``bytes_read`` count what was read)."""
        return self._reader()

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    # -- pickling -------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_source"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return (
            f"IndexedWebDataset({len(self.tables)} shards, {len(self)} samples, "
            f"stages={self.stages!r})"
        )

    # -- sample-wise stages (each returns a new dataset sharing the offsets) ----------------------
    def compose(self, *stages: Any) -> Self:
        """A copy with ``stages`` (cloudwds stages or ``iterator -> iterator`` callables) added."""
        new = copy.copy(self)
        new.stages = [*self.stages, *stages]
        new._source = None
        return new

    def decode(self, *args: Any, **kw: Any) -> Self:
        return self.compose(decode(*args, **kw))

    def to_tuple(self, *args: str, **kw: Any) -> Self:
        return self.compose(to_tuple(*args, **kw))

    def map(self, f: Callable[[Any], Any], **kw: Any) -> Self:
        return self.compose(map(f, **kw))

    def map_dict(self, **kw: Any) -> Self:
        return self.compose(map_dict(**kw))

    def map_tuple(self, *args: Any, **kw: Any) -> Self:
        return self.compose(map_tuple(*args, **kw))

    def rename(self, **kw: Any) -> Self:
        return self.compose(rename(**kw))

    def rename_keys(self, *args: Any, **kw: Any) -> Self:
        return self.compose(rename_keys(*args, **kw))


def _check_header(data: bytes | memoryview, offset: int, size: int, url: str, name: str) -> None:
    """The header block before a member's data (inside the read) must give the indexed size.

    Free (the block is part of the sample's read) and catches a shard rewritten under its
    index: the bytes at the indexed offset would otherwise be returned as the member.
    """
    header = bytes(data[offset - BLOCK : offset])
    try:
        recorded: int | None = _parse_number(header[124:136])
    except ValueError:
        recorded = None
    regular = header[156:157] in (b"0", b"\0", b"7")
    if not regular or (recorded != size and size < _PAX_SIZE):  # larger: size in a pax record
        raise IndexMismatchError(
            f"the tar header before the member's data gives size {recorded}, the index {size}: "
            "the shard changed after the index was built (rebuild it with 'cloudwds index')",
            url,
            name,
        )


_PAX_SIZE = 8**11  # the largest size an octal ustar size field holds, plus one


# ---------------------------------------------------------------------------------------------
# loading the offsets
# ---------------------------------------------------------------------------------------------


def _load_tables(
    source: str | Manifest | Iterable[str],
    storage: StorageConfig,
    build_missing: bool,
    allow_pipe: bool,
    workers: int,
) -> list[ShardOffsets]:
    manifest: Manifest | None
    entries: list[tuple[str, str | None, int | None, int | None, bool, str | None]]
    if isinstance(source, Manifest):
        manifest = source
    elif isinstance(source, str) and source.endswith(".json"):
        manifest = load_index(source, storage, allow_pipe=allow_pipe)
    else:
        manifest = None
    if manifest is not None:
        entries = [
            (s.url, s.offsets, s.bytes, s.samples, s.compressed, s.sha256) for s in manifest.shards
        ]
    else:
        urls = expand_urls(source)  # type: ignore[arg-type]
        if not urls:
            raise ValueError(f"no shard URLs in {source!r}")
        try:
            found = find_index(urls, storage)
        except (ValueError, StorageError):
            found = None
        entries = []
        for url in urls:
            info = found.get(url) if found is not None else None
            if info is None:
                entries.append((url, None, None, None, is_compressed_url(url), None))
            else:
                entries.append(
                    (url, info.offsets, info.bytes, info.samples, info.compressed, info.sha256)
                )
    for url, _, _, _, compressed, _ in entries:
        if compressed or is_compressed_url(url):
            raise NoRandomAccessError(
                "gzip-compressed shard: a gzip stream can only be read from its start, so it "
                "has no random access (stream it with WebDataset, or store it as .tar)",
                url,
            )

    def load(
        entry: tuple[str, str | None, int | None, int | None, bool, str | None],
    ) -> ShardOffsets:
        url, idx, size, samples, _, sha256 = entry
        idx = idx or offsets_url(url)
        try:
            with open_shard(idx, storage) as opened:
                data = opened.stream.read()
        except ShardNotFoundError:
            if not build_missing:
                raise NoRandomAccessError(
                    f"no offsets file {idx}: write it with 'cloudwds index' "
                    "(or pass build_missing=True to read the shard once here)",
                    url,
                ) from None
            info, table = scan_shard_offsets(url, storage, checksum=None)
            assert table is not None
            return table
        table = ShardOffsets.from_idx(data, url, where=idx)
        table.shard_size = size
        table.sha256 = sha256
        if samples is not None and samples != len(table):
            raise IndexMismatchError(
                f"the manifest gives {samples} samples but the offsets file {idx} has {len(table)}",
                url,
            )
        return table

    if len(entries) == 1 or workers <= 1:
        return [load(e) for e in entries]
    with ThreadPoolExecutor(min(workers, len(entries)), thread_name_prefix="cloudwds-idx") as pool:
        return list(pool.map(load, entries))
