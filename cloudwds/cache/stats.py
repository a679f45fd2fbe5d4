"""Counters of one ShardCache in one process (thread-safe; each DataLoader worker has its own).

Counting is per process on purpose: it costs a lock, not a SQLite write per read, and a worker's
own numbers are what one wants when profiling it. Aggregate across workers by summing.
"""

from __future__ import annotations

import threading

__all__ = ["CacheStats"]

FIELDS = (
    "hits",  # open() served from a published file
    "misses",  # open() that had to fetch (or join a download in progress)
    "downloads",  # shards fetched and published, by open() or prefetch()
    "prefetches",  # of those, the ones started by prefetch()
    "failed_downloads",  # fetch or copy errors (the reader got the error)
    "uncached",  # shards streamed without caching (larger than the budget, disk full, ...)
    "cancelled",  # downloads stopped because nobody read or prefetched them any more
    "evictions",  # shards this process deleted to respect the budget
    "bytes_downloaded",  # bytes read from remote streams
    "bytes_served_from_cache",  # sizes of the published shards opened by hits
    "bytes_evicted",
)


class CacheStats:
    """A dict of integer counters behind a lock; :meth:`snapshot` returns a plain copy."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._counts = dict.fromkeys(FIELDS, 0)

    def add(self, **increments: int) -> None:
        with self._mu:
            for name, value in increments.items():
                self._counts[name] += value

    def snapshot(self) -> dict[str, int]:
        with self._mu:
            return dict(self._counts)
