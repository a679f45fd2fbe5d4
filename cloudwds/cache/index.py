"""The cache index: size and last use of every published shard, shared by all processes.

Backed by :class:`diskcache.Cache` (SQLite in WAL mode, safe across processes and threads, and
re-opened by diskcache itself after a fork). diskcache's own culling is switched off: the
index stores a few bytes per shard, and losing an entry would hide a file from eviction.

Keys are layout keys (``s3/bucket/a/b.tar``), values are ``(url, size, last_used, owner)``.
``owner`` is how the cache knows which files are *its own*: the ``(st_dev, st_ino)`` of the file
it downloaded, written here before the file is renamed into place (so ownership survives a crash
at any point), or ``None`` for a file someone else put there (a pre-populated shard, opened
through the cache and so given an entry for ``cloudwds cache ls``). Only a file whose current
identity equals its recorded owner is the cache's to evict or clear: a shard that was replaced
by hand, or a path the cache once used and a person later filled, is theirs again. Entries of
older versions (three fields) have no owner: nothing is deleted that the cache cannot prove it
wrote.

The index *describes* the files and never outranks them: an entry without a file is dropped
when seen.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import diskcache

__all__ = ["CacheEntry", "CacheIndex", "IndexRecord", "file_identity"]


@dataclass(frozen=True)
class CacheEntry:
    """One shard in the cache, as shown by ``ShardCache.entries()`` (and ``cloudwds cache ls``).

    ``url`` is the URL it was last opened for, or ``None`` for a file found on disk that no one
    has opened yet; ``last_used`` is a ``time.time()`` stamp (file mtime until first use).
    ``owned`` says the cache downloaded this very file: it counts against ``cache_size`` and
    may be evicted or cleared. Anything else (pre-populated shards, files of your own) is
    listed but never deleted by the cache.
    """

    path: str
    url: str | None
    size: int
    last_used: float
    owned: bool = False


@dataclass(frozen=True)
class IndexRecord:
    """What the index holds for one key."""

    key: str
    url: str | None
    size: int
    last_used: float
    owner: tuple[int, int] | None = None

    @property
    def owned(self) -> bool:
        """The cache downloaded the file recorded here (whether it is still there is another matter)."""
        return self.owner is not None


def file_identity(st: os.stat_result) -> tuple[int, int]:
    """``(st_dev, st_ino)``: names one file for as long as it exists, across renames."""
    return (st.st_dev, st.st_ino)


def _record(key: str, value: Any) -> IndexRecord:
    url, size, last_used, *rest = value
    owner = tuple(rest[0]) if rest and rest[0] is not None else None
    return IndexRecord(key, url, int(size), float(last_used), owner)


class CacheIndex:
    """Per-shard ``(url, size, last_used, owner)`` in a diskcache directory; process-safe."""

    def __init__(self, directory: str):
        self.directory = directory
        self._db = diskcache.Cache(directory, eviction_policy="none", statistics=False)

    def touch(
        self,
        key: str,
        url: str | None,
        size: int,
        when: float | None = None,
        owner: tuple[int, int] | None = None,
    ) -> None:
        """Record that ``key`` (``size`` bytes) was used now (or at ``when``), owned or not."""
        stamp = time.time() if when is None else float(when)
        self._db.set(key, (url, int(size), stamp, owner))

    def claim(self, key: str, url: str, size: int, owner: tuple[int, int]) -> None:
        """Record that the cache wrote the file ``owner`` for ``key``: it may evict it later.

        Called with the shard lock held, *before* the file is renamed into place: a crash right
        after the rename still leaves a file the cache knows it owns.
        """
        self.touch(key, url, size, owner=owner)

    def used(self, key: str, url: str, size: int, identity: tuple[int, int]) -> None:
        """A hit on the file ``identity``: refresh its last use, keeping ownership only if the
        file is still the one the cache wrote (a file replaced by hand is not the cache's)."""
        with self._db.transact():
            old = self.get(key)
            owner = identity if old is not None and old.owner == identity else None
            self.touch(key, url, size, owner=owner)

    def disown(self, key: str) -> None:
        """Keep the entry (for listings) but no longer treat its file as the cache's."""
        with self._db.transact():
            old = self.get(key)
            if old is not None and old.owner is not None:
                self._db.set(key, (old.url, old.size, old.last_used, None))

    def get(self, key: str) -> IndexRecord | None:
        value = self._db.get(key)
        return None if value is None else _record(key, value)

    def discard(self, key: str) -> None:
        self._db.delete(key)

    def records(self) -> list[IndexRecord]:
        """A snapshot of every entry (read in one transaction, so it is self-consistent)."""
        out = []
        with self._db.transact():
            for key in self._db.iterkeys():
                value = self._db.get(key)
                if isinstance(key, str) and value is not None:
                    out.append(_record(key, value))
        return out

    def close(self) -> None:
        self._db.close()
