"""Housekeeping of a cache directory: eviction, start-up scans, stale temp files, clearing.

Everything here deletes or re-indexes files that some process may be using, so every step
follows the same two rules:

* a shard is touched only while holding its shard lock, taken *non-blocking* (a busy shard is
  skipped, never waited for: the caller may itself hold another shard's lock, and waiting
  could deadlock), and it is deleted only through :func:`~.locks.remove_unpinned` (a shard a
  reader has open is never deleted);
* whole-directory passes (eviction, scans, clear) hold the cache-wide maintenance lock, so two
  processes never evict from the same stale total at once.

And one rule about *which* files: the cache deletes only files it downloaded itself, recognised
by the identity recorded in the index when it published them (:mod:`.index`). Pre-populated
shards and anything else a person keeps in the directory are never evicted, never removed by a
scan and never cleared, except by an explicit ``clear(everything=True)`` (``cache clear
--all``). Temp files are recognised by the cache's own temp-name pattern only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from .eviction import evict_to_budget
from .index import CacheIndex, IndexRecord
from .layout import BOOKKEEPING_DIR, CacheLayout
from .locks import ShardLock, remove_unpinned
from .sizes import format_size
from .stats import CacheStats
from .tempfiles import TempName, is_stale, parse_temp_name, temps_for

__all__ = ["SCAN_INTERVAL", "Janitor"]

SCAN_INTERVAL = 600.0
"""Seconds between two start-up scans of the same directory (by any process)."""

assert BOOKKEEPING_DIR.startswith("."), "the shard walk relies on bookkeeping being a dot-dir"


class Janitor:
    """Keeps one cache directory within its budget and free of garbage (one per process)."""

    def __init__(
        self,
        layout: CacheLayout,
        index: CacheIndex,
        budget: int | None,
        stats: CacheStats,
        note: Callable[..., None],
    ):
        self.layout = layout
        self.index = index
        self.budget = budget
        self._stats = stats
        self._note = note  # logs at the cache's verbosity

    # ------------------------------------------------------------------ eviction
    def evict(self) -> None:
        """Evict least recently used shards until the budget holds (no-op when unbounded)."""
        if self.budget is None:
            return
        with ShardLock(self.layout.maintenance_lock):
            self._evict_locked()

    def _evict_locked(self) -> None:
        if self.budget is None:
            return
        now = time.time()
        for gone in evict_to_budget(self.index, self.budget, self.remove_entry):
            rec = gone.record
            self._stats.add(evictions=1, bytes_evicted=rec.size)
            self._note(
                "evicted %s (%s, last used %.0f s ago)",
                rec.url or self.layout.path(rec.key),
                format_size(rec.size),
                now - rec.last_used,
            )

    def remove_entry(self, record: IndexRecord) -> str:
        """Delete one shard the cache owns if nobody downloads or reads it.

        Answers ``removed``, ``missing`` (gone already: the entry is dropped), ``busy`` (read or
        downloaded right now) or ``foreign`` (not a file the cache wrote: left alone, and its
        entry no longer claims it).
        """
        if record.owner is None:
            return "foreign"
        lock = ShardLock(self.layout.lock_path(record.key))
        if not lock.acquire(blocking=False):
            return "busy"
        try:
            outcome = remove_unpinned(self.layout.path(record.key), expected=record.owner)
            if outcome in ("removed", "missing"):
                self.index.discard(record.key)
            elif outcome == "foreign":
                self.index.disown(record.key)
            return outcome
        finally:
            lock.release()

    def clear(self, everything: bool = False) -> int:
        """Delete the cache's own shards that are not being read or downloaded; how many went.

        ``everything=True`` also deletes every other file in the tree (pre-populated shards,
        files of your own), still sparing those being read and the ``.cloudwds`` bookkeeping.
        """
        with ShardLock(self.layout.maintenance_lock):
            removed = 0
            for record in self.index.records():
                removed += self.remove_entry(record) == "removed"
            if everything:
                for dirpath, name in list(self.walk()):
                    removed += self._remove_any(os.path.join(dirpath, name)) == "removed"
        return removed

    def _remove_any(self, path: str) -> str:
        key = self.layout.key_of_path(path)
        lock = ShardLock(self.layout.lock_path(key))
        if not lock.acquire(blocking=False):
            return "busy"
        try:
            if os.path.islink(path):  # a link the user made: remove the link, not its target
                os.unlink(path)
                outcome = "removed"
            else:
                outcome = remove_unpinned(path)
            if outcome in ("removed", "missing"):
                self.index.discard(key)
            return outcome
        finally:
            lock.release()

    # ------------------------------------------------------------------ scans
    def scan_due(self) -> bool:
        """Whether no process has scanned this directory for :data:`SCAN_INTERVAL` seconds."""
        try:
            return time.time() - os.stat(self.layout.scan_stamp).st_mtime >= SCAN_INTERVAL
        except FileNotFoundError:
            return True

    def scan(self, blocking: bool) -> None:
        """Drop the cache's stale temp files, forget entries whose file vanished, then evict.

        Files nobody indexed (copied in by hand) are left alone: they are not the cache's.
        Non-blocking: skip if another process scans right now.
        """
        maintenance = ShardLock(self.layout.maintenance_lock)
        if not maintenance.acquire(blocking=blocking):
            return
        try:
            records = {r.key: r for r in self.index.records()}
            seen = set()
            for dirpath, name in self.walk(temps=True):
                path = os.path.join(dirpath, name)
                if name.startswith("."):
                    parsed = parse_temp_name(name)
                    if parsed is not None:
                        self._remove_if_stale(path, parsed)
                    continue
                seen.add(self.layout.key_of_path(path))
            for key in records.keys() - seen:
                self._forget_if_missing(key)
            with open(self.layout.scan_stamp, "w"):
                pass
            self._evict_locked()
        finally:
            maintenance.release()

    def _forget_if_missing(self, key: str) -> None:
        lock = ShardLock(self.layout.lock_path(key))
        if not lock.acquire(blocking=False):
            return  # being (re)downloaded: its publisher will index it
        try:
            if not os.path.exists(self.layout.path(key)):
                self.index.discard(key)
        finally:
            lock.release()

    # ------------------------------------------------------------------ temp files
    def remove_stale_temps(self, final_path: str) -> None:
        """On a miss, with the shard lock held: drop temp files left by dead downloaders."""
        for temp in temps_for(final_path):
            parsed = parse_temp_name(os.path.basename(temp))
            if parsed is not None and is_stale(temp, parsed):
                self._unlink_temp(temp)

    def _remove_if_stale(self, temp: str, parsed: TempName) -> None:
        final = os.path.join(os.path.dirname(temp), parsed.final_name)
        lock = ShardLock(self.layout.lock_path(self.layout.key_of_path(final)))
        if not lock.acquire(blocking=False):
            return  # being downloaded right now
        try:
            if is_stale(temp, parsed):
                self._unlink_temp(temp)
        finally:
            lock.release()

    def _unlink_temp(self, temp: str) -> None:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            return
        self._note("removed stale temp file %s", temp)

    def walk(self, temps: bool = False) -> Iterator[tuple[str, str]]:
        """``(dir, name)`` of every shard file (and, if ``temps``, every dot-file) in the tree."""
        for dirpath, dirnames, filenames in os.walk(self.layout.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # .cloudwds and foreign
            for name in filenames:
                if temps or not name.startswith("."):
                    yield dirpath, name
