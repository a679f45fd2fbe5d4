"""Eviction: least recently *used* first, until the bytes the cache downloaded fit the budget.

Only files the cache owns (it downloaded them, see :mod:`.index`) are counted and evicted. A
pre-populated shard or any other file in the directory is the user's: never deleted, and not
counted, so ``cache_size`` bounds what the cache itself adds to the disk.

"Used" means opened (a hit or a finished download), not inserted, so a shard read every epoch
outlives one downloaded once. The policy is one pure function (:func:`lru_order`); the
procedure (:func:`evict_to_budget`) applies it and skips any shard that cannot go right now:

* a shard pinned by a reader (``LOCK_SH`` on the file) stays; a shard whose lock is held
  (a download or a re-check in progress) stays. So the total can stay above the budget, but only
  by shards being read at that moment, and the next eviction catches up;
* a file that vanished (deleted by hand) only loses its entry;
* a file that is no longer the one the cache wrote (replaced by hand) loses its ownership and
  stays (``"foreign"``).

The caller holds the cache-wide maintenance lock, so two processes never evict at once and the
total they compute is not stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .index import CacheIndex, IndexRecord

__all__ = ["Evicted", "evict_to_budget", "lru_order"]


@dataclass(frozen=True)
class Evicted:
    """A shard removed to make room, for stats and log lines."""

    record: IndexRecord


def lru_order(records: Iterable[IndexRecord]) -> list[IndexRecord]:
    """Eviction candidates, least recently used first (ties broken by key, so it is deterministic)."""
    return sorted(records, key=lambda r: (r.last_used, r.key))


def evict_to_budget(
    index: CacheIndex,
    budget: int,
    remove: Callable[[IndexRecord], str],
) -> list[Evicted]:
    """Remove LRU owned shards until their total is at most ``budget``; returns what went.

    ``remove(record)`` deletes one shard if it may go and answers ``"removed"``, ``"missing"``
    (already gone), ``"foreign"`` (not the file the cache wrote any more: no longer counted)
    or ``"busy"`` (pinned or locked: skip it, try the next one).
    """
    records = [r for r in index.records() if r.owned]
    total = sum(r.size for r in records)
    evicted: list[Evicted] = []
    for record in lru_order(records):
        if total <= budget:
            break
        outcome = remove(record)
        if outcome == "busy":
            continue
        total -= record.size
        if outcome == "removed":
            evicted.append(Evicted(record))
    return evicted
