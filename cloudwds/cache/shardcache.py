"""ShardCache: a local, process-safe copy of remote shards, kept within a byte budget.

The storage layer hands :meth:`ShardCache.open` a URL and a ``fetch`` callable that returns a
fresh sequential stream of the remote object; the cache never learns which storage it talks to.
The moving parts live in their own modules:

===================  ===========================================================
:mod:`.layout`        URL → path under the cache dir (readable, injective, sanitized)
:mod:`.locks`         per-shard download lock, read pins, fork hygiene
:mod:`.tempfiles`     temp names, and when a leftover temp file is garbage
:mod:`.download`      stream → temp file → ``os.replace``, with readers tailing it
:mod:`.readers`       readers tailing a download, the disk-full relay, pass-through
:mod:`.fetching`      starting downloads: in-process claims, prefetch jobs, outcomes
:mod:`.index`         diskcache index of size and last use
:mod:`.eviction`      LRU by bytes within the budget, skipping busy shards
:mod:`.maintenance`   eviction runs, start-up scans, stale temp files, clear
:mod:`.prefetch`      bounded read-ahead pool
===================  ===========================================================

Guarantees, across threads, DataLoader workers, ranks and separate jobs sharing a directory:

1. A final path only ever holds a complete object (temp file + fsync + ``os.replace``).
2. One download per shard at a time: the shard lock is taken before fetching, and the file is
   looked for again once it is held, so whoever waited reads what the winner published.
3. A shard open for reading is never evicted (readers pin it with ``LOCK_SH``).
4. The cache deletes only files it downloaded itself (recorded in the index, by file identity,
   before each publication): pre-populated shards are served and never evicted, and any other
   file in the directory is never touched, except by ``clear(everything=True)``.
5. After each publication the bytes of the cache's own shards fit ``cache_size``, except shards
   being read or downloaded at that moment. ``cache_size`` counts the sizes of the files the
   cache downloaded, not pre-populated shards, other files, the index or lock files.
6. A file copied by hand to :meth:`ShardCache.local_path` is a hit: ``fetch`` is never called.
7. A full disk never fails a read: the shard is served uncached, with one warning naming it.
8. Nothing of an iteration outlives it: downloads nobody reads any more are cancelled, and the
   prefetches of a :class:`~.prefetch.PrefetchGroup` end when the group is closed.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import threading
import time
from typing import Any, BinaryIO, ClassVar

from .download import DISK_FULL, Download, passthrough
from .fetching import Downloads, Fetch
from .index import CacheEntry, CacheIndex, file_identity
from .layout import CacheLayout, url_to_key
from .locks import ShardLock, open_pinned
from .maintenance import Janitor
from .prefetch import Prefetcher, PrefetchGroup
from .sizes import format_size, parse_size
from .stats import CacheStats

__all__ = ["Fetch", "ShardCache"]

log = logging.getLogger("cloudwds.cache")


class ShardCache(Downloads):
    """Serve shards from ``cache_dir``, downloading each at most once, within ``cache_size`` bytes.

    ``cache_size`` is an int or a string like ``"50G"`` (see :func:`parse_size`); ``None`` means
    unbounded. ``verbose`` logs hits, misses, downloads and evictions at INFO on the
    ``cloudwds.cache`` logger (otherwise at DEBUG). ``prefetch_workers`` bounds the read-ahead
    pool; 0 turns :meth:`prefetch` into a no-op.

    Chosen behaviours where there was a choice:

    * **Miss:** :meth:`open` calls ``fetch()`` at once (so "not found" is raised by ``open``),
      then a download thread copies the stream to a temp file while the returned stream tails
      that file: the first bytes arrive before the download ends.
    * **Early close:** when the last reader of a download closes before the end (and no open
      prefetch group keeps it), the download is cancelled: nothing is published, and nothing
      of it touches the directory afterwards. The shard is fetched again next time.
    * **Waiting:** a thread of the same process joins the download in progress (reads the same
      temp file); another process waits on the shard lock, then reads the published file.
    * **Shard larger than the whole budget:** streamed but never cached; its temp file is
      unlinked as soon as it outgrows the budget, and nothing else is evicted for it.
    * **No room for the temp file** (a directory squats the shard's path, a sub-tree is not
      writable): the stream is served uncached, with a warning. A cache directory that cannot
      be created at all is an error.
    * **LRU clock:** a hit is "used" when opened, a miss when its download is published.
    * **Ownership and budget:** only the shards this cache downloaded count against
      ``cache_size`` and are evicted or cleared; pre-populated shards are served, listed and
      left alone (the budget bounds what the cache itself adds to the disk).
    * **Disk full** (``ENOSPC``/``EDQUOT``/``EFBIG``) while downloading: the temp file goes, one
      warning names the URL, and the read goes on uncached from the same byte.
    * **Stats** are per process (each DataLoader worker counts its own).

    Picklable: only the four arguments cross a process boundary; locks, threads and the index
    are reopened lazily in the new process (and after a fork).
    """

    #: How many ShardCache objects this process has built: lets tests check honestly that a
    #: pipeline builds one cache, not one per shard.
    instances_created: ClassVar[int] = 0

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        cache_size: int | str | None = None,
        verbose: bool = False,
        prefetch_workers: int = 2,
    ):
        if not os.fspath(cache_dir):
            raise ValueError("cache_dir must be a non-empty path")
        if prefetch_workers < 0:
            raise ValueError(f"prefetch_workers must be >= 0, got {prefetch_workers}")
        self.cache_dir = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
        self.cache_size = None if cache_size is None else parse_size(cache_size)
        self.verbose = bool(verbose)
        self.prefetch_workers = int(prefetch_workers)
        self.layout = CacheLayout(self.cache_dir)
        ShardCache.instances_created += 1
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        """Per-process state: nothing here may cross a fork or a pickle."""
        self._pid = os.getpid()
        self._mu = threading.Lock()
        self._index: CacheIndex | None = None
        self._janitor: Janitor | None = None
        self._prefetcher: Prefetcher | None = None
        self._downloads: dict[str, Download] = {}  # key → download running in this process
        self._claims: dict[str, threading.Event] = {}  # key → a thread of ours is starting one
        self._stats = CacheStats()

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        return {
            "cache_dir": self.cache_dir,
            "cache_size": self.cache_size,
            "verbose": self.verbose,
            "prefetch_workers": self.prefetch_workers,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        size = "unbounded" if self.cache_size is None else format_size(self.cache_size)
        return f"ShardCache({self.cache_dir!r}, cache_size={size!r})"

    def __enter__(self) -> ShardCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the contract
    def local_path(self, url: str) -> str:
        """Where ``url`` lives in the cache (copy a file there to pre-populate the cache)."""
        return self.layout(url)

    def contains(self, url: str) -> bool:
        """Whether ``url`` is published in the cache (a download in progress does not count)."""
        return os.path.isfile(self.local_path(url))

    def open(self, url: str, fetch: Fetch) -> BinaryIO:
        """A stream of ``url``'s bytes: from the cache if published, else downloaded once and kept.

        Every open marks the shard as just used. The returned stream pins the shard against
        eviction until it is closed. Errors of ``fetch()`` and of the remote stream propagate to
        the caller (a failed download leaves nothing behind).
        """
        try:
            janitor = self._ready()
        except Exception as exn:
            if not _is_disk_full(exn):
                raise
            log.warning("no space left for the cache index (%s): reading %s uncached", exn, url)
            self._stats.add(uncached=1)
            return passthrough(fetch(), url)
        key = url_to_key(url)
        path = self.layout.path(key)
        while True:
            f = open_pinned(path)
            if f is not None:
                return self._serve_hit(janitor, url, key, f)
            download, busy, mine = self._claim(key)
            if download is not None:  # this process is already fetching it: read along
                reader = download.reader()
                if reader is not None:
                    self._stats.add(misses=1)
                    self._log("miss %s: reading along with the download in progress", url)
                    return reader
                download.wait()
                continue
            if busy is not None:  # another thread of ours is starting it: wait, then read along
                busy.wait()
                continue
            assert mine is not None
            try:
                lock = ShardLock(self.layout.lock_path(key))
                lock.acquire()  # held by whoever downloads it (another process), until publication
                try:
                    f = open_pinned(path)  # re-check: we may have waited for a download
                except BaseException:
                    lock.release()
                    raise
                if f is not None:
                    lock.release()
                    return self._serve_hit(janitor, url, key, f)
                reader = self._download(janitor, url, key, path, fetch, lock, mine, prefetch=False)
                assert reader is not None
                return reader
            finally:
                self._unclaim(key, mine)

    def prefetch(self, url: str, fetch: Fetch, group: PrefetchGroup | None = None) -> None:
        """Start downloading ``url`` in the background; return at once.

        A no-op if the shard is cached, already being fetched by this process, or the bounded
        pool is full. Errors are logged, never raised: the later :meth:`open` fetches again and
        raises properly. With a ``group`` (one per iteration), closing the group ends this
        prefetch (see :class:`~.prefetch.PrefetchGroup`); without one it runs to completion.
        """
        if self.prefetch_workers == 0 or (group is not None and group.closed):
            return
        try:
            janitor = self._ready()
            key = url_to_key(url)
            path = self.layout.path(key)
            if os.path.isfile(path):
                return
            with self._mu:
                if key in self._downloads or key in self._claims:
                    return
                if self._prefetcher is None:
                    self._prefetcher = Prefetcher(self.prefetch_workers)
                prefetcher = self._prefetcher
            ticket = group.ticket() if group is not None else None
            if group is not None and ticket is None:
                return
            job = functools.partial(self._prefetch_job, janitor, url, key, path, fetch, ticket)
            future = prefetcher.submit(key, job)
            if future is None:
                log.debug("prefetch of %s skipped: already pending or the pool is full", url)
            elif ticket is not None:
                with ticket.mu:
                    ticket.future = future
        except Exception:
            log.exception("prefetch of %s could not start", url)

    def entries(self) -> list[CacheEntry]:
        """Every shard on disk with its URL (if known), size and last use, sorted by path."""
        janitor = self._ready()
        records = {r.key: r for r in janitor.index.records()}
        out = []
        for dirpath, name in janitor.walk():
            path = os.path.join(dirpath, name)
            try:
                lst = os.lstat(path)  # a symlink is never the cache's (it writes regular files)
                st = os.stat(path) if stat.S_ISLNK(lst.st_mode) else lst
            except OSError:
                continue
            rec = records.get(self.layout.key_of_path(path))
            url = rec.url if rec is not None else None
            last_used = rec.last_used if rec is not None else st.st_mtime
            owned = rec is not None and rec.owner == file_identity(lst)
            out.append(CacheEntry(path, url, st.st_size, last_used, owned))
        return sorted(out, key=lambda e: e.path)

    def stats(self) -> dict[str, int]:
        """This process's counters: hits, misses, downloads, evictions, bytes_downloaded, ..."""
        return self._stats.snapshot()

    def clear(self, everything: bool = False) -> int:
        """Delete the shards this cache downloaded, except those being read or downloaded.

        Pre-populated shards and other files stay, unless ``everything=True`` (then every file
        under ``cache_dir`` goes, except those in use and the ``.cloudwds`` bookkeeping).
        Returns how many files were removed.
        """
        removed = self._ready().clear(everything)
        self._log("cleared %s: %d files removed", self.cache_dir, removed)
        return removed

    def maintain(self) -> None:
        """Scan the directory: drop the cache's stale temp files, forget entries whose file
        vanished, then evict to the budget. Runs by itself at start-up
        (at most every ``maintenance.SCAN_INTERVAL`` seconds per directory); call it to force one."""
        self._ready().scan(blocking=True)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for this process's background work (downloads after early close, prefetches)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._mu:
            downloads = [d for d in self._downloads.values() if not d.cancelled]
            prefetcher = self._prefetcher
        if prefetcher is not None:
            prefetcher.wait(timeout)
        for download in downloads:
            download.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Cancel queued prefetches, wait for running downloads, close the index.

        The object stays usable: the next call reopens what it needs.
        """
        if self._pid != os.getpid():
            self._reset_runtime()
            return
        with self._mu:
            prefetcher, self._prefetcher = self._prefetcher, None
        if prefetcher is not None:
            prefetcher.shutdown()
        self.wait()
        with self._mu:
            index, self._index, self._janitor = self._index, None, None
        if index is not None:
            index.close()

    # ------------------------------------------------------------------ internals
    def _ready(self) -> Janitor:
        """Open the index on first use in this process (and scan the directory if due)."""
        if self._pid != os.getpid():  # forked: threads, locks and downloads stayed behind
            self._reset_runtime()
        with self._mu:
            janitor = self._janitor
            first = janitor is None
            if janitor is None:
                os.makedirs(self.layout.meta, exist_ok=True)
                self._index = CacheIndex(self.layout.index_dir)
                janitor = Janitor(self.layout, self._index, self.cache_size, self._stats, self._log)
                self._janitor = janitor
        if first and janitor.scan_due():
            try:
                janitor.scan(blocking=False)
            except Exception:
                log.exception("start-up scan of %s failed", self.cache_dir)
        return janitor

    def _serve_hit(self, janitor: Janitor, url: str, key: str, f: BinaryIO) -> BinaryIO:
        st = os.fstat(f.fileno())
        size = st.st_size
        try:  # safe: the pin keeps the file from being evicted
            janitor.index.used(key, url, size, file_identity(st))
        except Exception:
            log.exception("could not record the use of %s", url)
        self._stats.add(hits=1, bytes_served_from_cache=size)
        self._log("hit %s (%s)", url, format_size(size))
        return f

    def _log(self, msg: str, *args: object) -> None:
        log.log(logging.INFO if self.verbose else logging.DEBUG, msg, *args)


def _is_disk_full(exn: BaseException) -> bool:
    """ENOSPC and friends, also as SQLite reports them through the diskcache index."""
    if isinstance(exn, OSError):
        return exn.errno in DISK_FULL
    return type(exn).__name__ == "OperationalError" and "full" in str(exn).lower()
