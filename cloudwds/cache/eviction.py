"""Eviction: least recently *used* first, until the published bytes fit the budget.

"Used" means opened (a hit or a finished download), not inserted, so a shard read every epoch
outlives one downloaded once. The policy is one pure function (:func:`lru_order`); the
procedure (:func:`evict_to_budget`) applies it and skips any shard that cannot go right now:

* a shard pinned by a reader (``LOCK_SH`` on the file) stays; a shard whose lock is held
  (a download or a re-check in progress) stays. So the total can stay above the budget, but only
  by shards being read at that moment, and the next eviction catches up;
* a file that vanished (deleted by hand) only loses its entry.

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
    """Remove LRU shards until the indexed total is at most ``budget``; returns what went.

    ``remove(record)`` deletes one shard if it may go and answers ``"removed"``, ``"missing"``
    (already gone) or ``"busy"`` (pinned or locked: skip it, try the next one).
    """
    records = index.records()
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
