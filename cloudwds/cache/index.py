"""The cache index: size and last use of every published shard, shared by all processes.

Backed by :class:`diskcache.Cache` (SQLite in WAL mode, safe across processes and threads, and
re-opened by diskcache itself after a fork). diskcache's own culling is switched off: the
index stores a few bytes per shard, and losing an entry would hide a file from eviction.

Keys are layout keys (``s3/bucket/a/b.tar``), values are ``(url, size, last_used)``. The index
*describes* the files and never outranks them: a file without an entry (copied in by hand) is
indexed when first opened or scanned, and an entry without a file is dropped when seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import diskcache

__all__ = ["CacheEntry", "CacheIndex", "IndexRecord"]


@dataclass(frozen=True)
class CacheEntry:
    """One shard in the cache, as shown by ``ShardCache.entries()`` (and ``cloudwds cache ls``).

    ``url`` is the URL it was last opened for, or ``None`` for a file found on disk that no one
    has opened yet; ``last_used`` is a ``time.time()`` stamp (file mtime until first use).
    """

    path: str
    url: str | None
    size: int
    last_used: float


@dataclass(frozen=True)
class IndexRecord:
    """What the index holds for one key."""

    key: str
    url: str | None
    size: int
    last_used: float


class CacheIndex:
    """Per-shard ``(url, size, last_used)`` in a diskcache directory; all methods are process-safe."""

    def __init__(self, directory: str):
        self.directory = directory
        self._db = diskcache.Cache(directory, eviction_policy="none", statistics=False)

    def touch(self, key: str, url: str | None, size: int, when: float | None = None) -> None:
        """Record that ``key`` (``size`` bytes) was used now (or at ``when``)."""
        self._db.set(key, (url, int(size), time.time() if when is None else float(when)))

    def get(self, key: str) -> IndexRecord | None:
        value = self._db.get(key)
        return None if value is None else IndexRecord(key, *value)

    def discard(self, key: str) -> None:
        self._db.delete(key)

    def records(self) -> list[IndexRecord]:
        """A snapshot of every entry (read in one transaction, so it is self-consistent)."""
        out = []
        with self._db.transact():
            for key in self._db.iterkeys():
                value = self._db.get(key)
                if isinstance(key, str) and value is not None:
                    out.append(IndexRecord(key, *value))
        return out

    def close(self) -> None:
        self._db.close()
