"""Starting downloads for a :class:`~.shardcache.ShardCache`: claims, prefetch jobs, outcomes.

The part of the cache between "this shard is not published" and a running
:class:`~.download.Download`: in-process arbitration (a thread either reads along with a
download of this process, waits for a sibling that is starting one, or claims the shard and
starts it under the shard lock), the prefetch pool's jobs, and the bookkeeping run by the
download's callbacks (index ownership before the rename, eviction after it, statistics).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable
from typing import BinaryIO

from .download import Download, Outcome, passthrough
from .layout import CacheLayout
from .locks import ShardLock
from .maintenance import Janitor
from .prefetch import PrefetchTicket
from .stats import CacheStats

__all__ = ["Downloads", "Fetch"]

log = logging.getLogger("cloudwds.cache")

_NO_LOCK = contextlib.nullcontext()

Fetch = Callable[[], BinaryIO]
"""Returns a fresh sequential binary stream of the remote object (retries are its own business)."""


class Downloads:
    """Mixed into :class:`~.shardcache.ShardCache`: how a miss or a prefetch becomes a download.

    Uses the cache's per-process state (set up by ``ShardCache._reset_runtime``).
    """

    layout: CacheLayout
    cache_size: int | None
    _mu: threading.Lock
    _stats: CacheStats
    _downloads: dict[str, Download]
    _claims: dict[str, threading.Event]

    def _log(self, msg: str, *args: object) -> None:
        raise NotImplementedError

    def _download(
        self,
        janitor: Janitor,
        url: str,
        key: str,
        path: str,
        fetch: Fetch,
        lock: ShardLock,
        claim: threading.Event,
        prefetch: bool,
        ticket: PrefetchTicket | None = None,
    ) -> BinaryIO | None:
        """Fetch ``url`` into the cache; we hold its lock, which passes to the download.

        For :meth:`open` (``prefetch=False``) the copy runs in a new thread and a reader is
        returned; for a prefetch it runs here, in the pool thread. A prefetch ``ticket``
        cancelled meanwhile stops it before each step that would change the directory.
        """
        try:
            with ticket.mu if ticket is not None else _NO_LOCK:
                if ticket is not None and ticket.cancelled:
                    lock.release()
                    return None
                janitor.remove_stale_temps(path)
            if not prefetch:
                self._stats.add(misses=1)
            self._log("%s %s: downloading", "prefetch" if prefetch else "miss", url)
            stream = fetch()
        except BaseException:
            lock.release()
            raise
        try:
            if os.path.isdir(path):
                raise IsADirectoryError(f"{path} is a directory")
            with ticket.mu if ticket is not None else _NO_LOCK:
                if ticket is not None and ticket.cancelled:
                    lock.release()
                    stream.close()
                    return None
                download = Download(
                    url,
                    key,
                    path,
                    stream,
                    lock,
                    self.cache_size,
                    on_published=functools.partial(self._on_published, janitor),
                    on_finished=functools.partial(self._on_finished, prefetch=prefetch),
                    on_commit=functools.partial(self._on_commit, janitor),
                    fetch=fetch,
                    kept=prefetch,
                )
                if ticket is not None:
                    ticket.download = download
        except OSError as exn:
            lock.release()
            log.warning("cannot cache %s (%s): streaming it without caching", url, exn)
            self._stats.add(uncached=1)
            if prefetch:
                stream.close()
                return None
            return passthrough(stream, url)
        reader = None if prefetch else download.reader()
        with self._mu:
            self._downloads[key] = download
        self._unclaim(key, claim)  # siblings waiting on it now find the download: read along
        if prefetch:
            download.run()
        else:
            threading.Thread(target=download.run, name=f"cloudwds-download {key}").start()
        return reader

    def _prefetch_job(
        self,
        janitor: Janitor,
        url: str,
        key: str,
        path: str,
        fetch: Fetch,
        ticket: PrefetchTicket | None,
    ) -> None:
        if ticket is not None and ticket.cancelled:
            return
        _, _, mine = self._claim(key)
        if mine is None:
            return  # an open() of this process got there first
        try:
            lock = ShardLock(self.layout.lock_path(key))
            lock.acquire()
            if os.path.isfile(path):  # published while we were queued or waiting
                lock.release()
                return
            self._download(janitor, url, key, path, fetch, lock, mine, prefetch=True, ticket=ticket)
        finally:
            self._unclaim(key, mine)

    def _claim(
        self, key: str
    ) -> tuple[Download | None, threading.Event | None, threading.Event | None]:
        """In-process arbitration before anyone blocks on the shard lock.

        Returns ``(download, busy, mine)`` with exactly one set: the download of ``key`` running
        in this process (read along), or another thread's claim (wait on it, then look again),
        or our own new claim (go ahead; :meth:`_unclaim` it). Without this, a thread would block
        on the flock behind a sibling's download instead of reading along with it.
        """
        with self._mu:
            download = self._downloads.get(key)
            if download is not None and download.cancelled:  # its thread may linger: ignore it
                del self._downloads[key]
                download = None
            if download is not None:
                return download, None, None
            busy = self._claims.get(key)
            if busy is not None:
                return None, busy, None
            mine = self._claims[key] = threading.Event()
            return None, None, mine

    def _unclaim(self, key: str, mine: threading.Event) -> None:
        """Drop our claim (idempotent; never someone else's) and wake the threads waiting on it."""
        with self._mu:
            if self._claims.get(key) is mine:
                del self._claims[key]
        mine.set()

    def _on_commit(self, janitor: Janitor, download: Download, owner: tuple[int, int]) -> None:
        """Runs in the download thread just before the rename, the shard lock held: the index
        records that the cache owns this file (so a crash after the rename loses nothing).

        A miss counts as used when its download completes, not when it was opened: the shard
        was being read all along, and dating it from the open would make a long download the
        first candidate for eviction the moment it lands.
        """
        janitor.index.claim(download.key, download.url, download.written, owner)

    def _on_published(self, janitor: Janitor, _download: Download) -> None:
        """Runs in the download thread right after the rename, the shard lock still held."""
        janitor.evict()

    def _on_finished(self, download: Download, prefetch: bool) -> None:
        self._record_outcome(download, prefetch)
        with self._mu:  # after the stats: wait() returning means they are settled
            if self._downloads.get(download.key) is download:
                del self._downloads[download.key]

    def _record_outcome(self, download: Download, prefetch: bool) -> None:
        self._stats.add(bytes_downloaded=download.written)
        if download.outcome is Outcome.PUBLISHED:
            self._stats.add(downloads=1, prefetches=int(prefetch))
            rate = download.written / max(download.seconds, 1e-9) / (1 << 20)
            self._log(
                "downloaded %s: %d bytes in %.3f s (%.1f MiB/s)",
                download.url,
                download.written,
                download.seconds,
                rate,
            )
        elif download.outcome is Outcome.UNCACHEABLE:
            self._stats.add(uncached=1)
        elif download.outcome is Outcome.CANCELLED:
            self._stats.add(cancelled=1)
            self._log("download of %s cancelled: nobody reads it any more", download.url)
        else:
            self._stats.add(failed_downloads=1)
            log.warning("download of %s failed: %s", download.url, download.error)
