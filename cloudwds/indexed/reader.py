"""Byte ranges of shards, read the way object stores like: one request per sample or per run.

:class:`RangeSource` is the per-process reading side of :class:`~cloudwds.indexed.IndexedWebDataset`.
It is never pickled (a dataset makes one lazily in each process, so spawned DataLoader workers
start with no inherited handles) and picks, per shard, the cheapest way to a byte range:

- a local file (after ``WDS_REWRITE``): ``os.pread`` on a kept-open descriptor;
- a remote shard with a cache (``cache_dir=`` / ``WDS_CACHE``): the whole shard is downloaded
  into the cache once (the cache's one-download-per-shard guarantee holds across workers and
  ranks), then served by ``pread`` from the pinned cached file — random access over a warm
  cache is local random access and makes no request at all;
- a remote shard without a cache: one ranged GET (``cat_file(path, start, end)``) through the
  storage layer's filesystem resolution and retry policy (:class:`~cloudwds.storage.RetryPolicy`,
  :func:`~cloudwds.storage.remote.classify_error`), covering exactly the requested range.

Before the first read of a shard in a process its size is checked against the index (the
manifest's ``bytes`` when known, else at least the end of the last indexed member): a shard
rewritten since the index was built fails with :class:`~.offsets.IndexMismatchError` instead of
returning someone else's bytes. For a remote shard without a cache this costs one ``info``
request per shard and process (``check_size=False`` skips it). ``verify_checksum=True`` also
hashes each local or cached shard once per process against the manifest's ``sha256`` (a full
read of the shard: for data you do not trust, not for every run).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, BinaryIO

from ..errors import StorageError
from ..stats import COUNTERS
from ..storage import StorageConfig
from ..storage.opening import remote_fetcher
from ..storage.remote import call_fs, object_size
from ..storage.target import resolve_target
from .offsets import IndexMismatchError, NoRandomAccessError, ShardOffsets

__all__ = ["DEFAULT_COALESCE_GAP", "RangeSource", "coalesce"]

# Neighbouring samples whose ranges are at most this far apart are read with one request: the
# gap is the next sample's tar headers and padding (1 KiB for plain members).
DEFAULT_COALESCE_GAP = 64 * 1024
_MAX_OPEN = 64


def coalesce(spans: Sequence[tuple[int, int]], gap: int) -> list[tuple[int, int, list[int]]]:
    """Merge ``(start, end)`` spans closer than ``gap`` bytes: ``[(start, end, [span numbers])]``."""
    order = sorted(range(len(spans)), key=lambda i: spans[i])
    runs: list[tuple[int, int, list[int]]] = []
    for i in order:
        start, end = spans[i]
        if runs and start - runs[-1][1] <= gap:
            r_start, r_end, members = runs[-1]
            members.append(i)
            runs[-1] = (r_start, max(r_end, end), members)
        else:
            runs.append((start, end, [i]))
    return runs


class RangeSource:
    """Reads byte ranges of shards for one process; see the module docstring for the paths."""

    def __init__(
        self, storage: StorageConfig, *, check_size: bool = True, verify_checksum: bool = False
    ):
        self.storage = storage
        self.check_size = check_size
        self.verify_checksum = verify_checksum
        self.requests = 0  # reads issued (local preads, cached preads and remote GETs)
        self.bytes_read = 0
        self._lock = threading.Lock()
        self._files: OrderedDict[str, BinaryIO] = OrderedDict()
        self._remote: dict[str, tuple[Any, str]] = {}
        self._checked: set[str] = set()

    # -- public ---------------------------------------------------------------------------
    def read(self, table: ShardOffsets, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``table``'s shard."""
        return bytes(self.read_many(table, [(start, end)], 0)[0])

    def read_many(
        self, table: ShardOffsets, spans: Sequence[tuple[int, int]], gap: int
    ) -> list[bytes | memoryview]:
        """Bytes of each span, spans closer than ``gap`` read together (one request per run)."""
        out: list[bytes | memoryview] = [b""] * len(spans)
        for start, end, members in coalesce(spans, gap):
            data = memoryview(self._read_run(table, start, end))
            for i in members:
                s, e = spans[i]
                out[i] = data[s - start : e - start]
        return out

    def size(self, table: ShardOffsets) -> int:
        """The shard's size in bytes: ``fstat`` of the local or cached file, else one ``info``.

        A sequential reader starting mid-shard (resume by seeking) needs the end it reads to.
        """
        f = self._file_for(table)
        if f is not None:
            return os.fstat(f.fileno()).st_size
        fs, path = self._fs(table.url)
        return object_size(fs, path, table.url, self.storage.retry)

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()
            self._remote.clear()

    # -- one run ----------------------------------------------------------------------------
    def _read_run(self, table: ShardOffsets, start: int, end: int) -> bytes:
        url = table.url
        f = self._file_for(table)
        if f is not None:
            data = os.pread(f.fileno(), end - start, start)
            if len(data) != end - start:
                raise IndexMismatchError(
                    f"shard ends before byte {end} that its index points to", url
                )
        else:
            data = self._remote_range(table, start, end)
        self.requests += 1
        self.bytes_read += len(data)
        return data

    def _file_for(self, table: ShardOffsets) -> BinaryIO | None:
        """A kept-open local or cached file for the shard, or None to read it remotely."""
        url = table.url
        with self._lock:
            f = self._files.get(url)
            if f is not None:
                self._files.move_to_end(url)
                return f
            if url in self._remote:
                return None
        config = self.storage
        target = resolve_target(url, config)
        if target.scheme in ("-", "pipe"):
            raise NoRandomAccessError("a pipe or stdin shard cannot be read at an offset", url)
        path = target.local_path
        if path is not None:
            try:
                f = open(path, "rb", buffering=0)  # noqa: SIM115 - kept open, closed in close()
            except OSError as exn:
                raise StorageError(f"cannot open shard: {type(exn).__name__}: {exn}", url) from exn
        elif config.cache is not None and target.remote:
            f = self._cached(url)
        if f is None:
            if self.verify_checksum:
                raise NoRandomAccessError(
                    "verify_checksum needs the whole shard: local shards or a cache (cache_dir=)",
                    url,
                )
            self._check(table, self._stat_remote(table))
            return None
        try:
            self._check(table, os.fstat(f.fileno()).st_size)
            if self.verify_checksum:
                self._check_sha256(table, f)
        except BaseException:
            f.close()
            raise
        with self._lock:
            self._files[url] = f
            while len(self._files) > _MAX_OPEN:
                _, old = self._files.popitem(last=False)
                old.close()  # unpins a cached shard: it may be evicted again
        return f

    def _cached(self, url: str) -> BinaryIO | None:
        """The shard's pinned cached file, downloading it whole first on a miss."""
        cache = self.storage.cache
        fetch = remote_fetcher(url, self.storage)
        if not cache.contains(url):
            with cache.open(url, fetch) as stream:  # one download, shared with other workers
                while stream.read(8 << 20):
                    pass
            if not cache.contains(url):
                # Read to the end, but this process's download thread may still be publishing
                # (fsync + rename); another process's download was published before we read.
                cache.wait(self.storage.retry.timeout)
        f = cache.open(url, fetch)
        if hasattr(f, "fileno") and cache.contains(url):
            try:
                f.fileno()
                return f  # type: ignore[no-any-return]
            except (OSError, ValueError, AttributeError):
                pass
        f.close()  # not cached (full disk): ranged reads instead
        return None

    def _fs(self, url: str) -> tuple[Any, str]:
        with self._lock:
            entry = self._remote.get(url)
        if entry is None:
            target = resolve_target(url, self.storage)
            entry = target.backend.filesystem(target)
            with self._lock:
                self._remote[url] = entry
        return entry

    def _stat_remote(self, table: ShardOffsets) -> int | None:
        if not self.check_size or table.url in self._checked:
            self._fs(table.url)
            return None
        fs, path = self._fs(table.url)
        return object_size(fs, path, table.url, self.storage.retry)

    def _check(self, table: ShardOffsets, size: int | None) -> None:
        if size is None or not self.check_size or table.url in self._checked:
            return
        if table.shard_size is not None and size != table.shard_size:
            raise IndexMismatchError(
                f"shard has {size} bytes but its index says {table.shard_size}: the shard "
                "changed after the index was built (rebuild it with 'cloudwds index')",
                table.url,
            )
        if size < table.data_end:
            raise IndexMismatchError(
                f"shard has {size} bytes but its index points to byte {table.data_end}",
                table.url,
            )
        self._checked.add(table.url)

    def _check_sha256(self, table: ShardOffsets, f: BinaryIO) -> None:
        """Hash the local (or cached) file once per process; the manifest's sha256 must match."""
        if table.sha256 is None:
            raise IndexMismatchError(
                "verify_checksum: the index has no sha256 for this shard "
                "(build it with 'cloudwds index --checksum sha256')",
                table.url,
            )
        digest = hashlib.sha256()
        pos = 0
        while chunk := os.pread(f.fileno(), 8 << 20, pos):
            digest.update(chunk)
            pos += len(chunk)
        if digest.hexdigest() != table.sha256:
            raise IndexMismatchError(
                f"shard's sha256 {digest.hexdigest()[:16]}... differs from the index's "
                f"{table.sha256[:16]}...: the shard changed after the index was built",
                table.url,
            )

    def _remote_range(self, table: ShardOffsets, start: int, end: int) -> bytes:
        fs, path = self._fs(table.url)
        policy = self.storage.retry

        def once() -> bytes:
            data = call_fs(
                fs, "_cat_file", "cat_file", path, start=start, end=end, timeout=policy.timeout
            )
            if len(data) != end - start:
                raise OSError(f"short read: got {len(data)} of {end - start} bytes at {start}")
            return bytes(data)

        data: bytes = policy.run(f"read of bytes {start}-{end}", table.url, once)
        COUNTERS.add("bytes_remote", len(data))
        return data
