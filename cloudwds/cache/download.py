"""One download into the cache: remote stream → temp file → published shard, readable meanwhile.

A :class:`Download` runs in its own thread (or a prefetch worker) while holding the shard's lock.
It copies the remote stream into the temp file as fast as the remote allows, whatever its readers
do; readers (:meth:`Download.reader`) *tail* the temp file through their own descriptor and
wait only for bytes not yet written. Hence:

* the first sample is served as soon as the first chunk lands, not after the whole shard;
* no download depends on a consumer making progress, so consumers that hold several shards
  open while waiting for others (mixing datasets, several ranks) cannot deadlock on each other;
* a download lives only as long as someone wants it (a reader, or the prefetch group of a
  running iteration): when the last reader closes before the end and no group keeps it, it is
  **cancelled** at once, so nothing of a finished or closed iteration keeps writing, publishing
  or evicting in the background (the chosen behaviour for early close);
* a full disk (``ENOSPC``, ``EDQUOT``, or ``EFBIG`` from a file-size limit) never fails the
  read: the temp file goes, one warning names the URL, and the readers continue from the same
  byte with the remote stream itself (see :class:`Relay`).

States of one cache entry (one final path)::

    absent ──(lock taken, temp created)──► downloading: ".<name>.<host>-<pid>.<rand>.part"
    downloading ──(EOF, length ok, fsync, owner recorded, os.replace)──► published
    published ──(eviction: only a file the index says the cache wrote)──► absent
    downloading ──(error, short stream)──► absent: temp unlinked; readers get the bytes written
                                           so far, then the error
    downloading ──(more bytes than the whole budget)──► uncacheable: temp unlinked at once and
                  the lock released; bytes keep flowing to readers through the unlinked inode
                  and are dropped when the last reader closes; never published
    downloading ──(disk full)──► uncacheable: temp unlinked, lock released; readers go on with
                  the rest of the remote stream, uncached
    downloading ──(last reader / group let go)──► cancelled: temp unlinked, lock released

Invariants: the final name only ever holds a complete object; only the lock holder creates,
writes, renames or deletes the temp file (cancellation does it on the holder's behalf, under
the download's condition, and then no step of the copy touches the directory again);
``written`` only grows, and every byte below it is in the file (it is advanced after
``os.write`` returns). The downloader keeps ``LOCK_SH`` on the temp file's open description and
readers get ``dup`` s of it, so after publication the shard stays pinned against eviction until
the last reader closes.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from ..errors import StorageError
from .index import file_identity
from .locks import ShardLock, track_fd_owner
from .readers import (
    READ_BUFFER,
    Relay,
    TailReader,
    close_quietly,
    expected_size,
    passthrough,
    skip_bytes,
)
from .tempfiles import fsync_dir, make_temp_path

__all__ = ["CHUNK_SIZE", "DISK_FULL", "Download", "Outcome", "passthrough"]

log = logging.getLogger("cloudwds.cache")

CHUNK_SIZE = 256 * 1024
"""Bytes asked of the remote stream per read: small enough that the first sample comes quickly."""

TAIL_GRACE = 1 << 20
"""A download whose last reader closes with at most this much left to fetch is finished, not
cancelled: a tar reader stops at the end-of-archive block, before the record padding, and the
shard it read is worth keeping. The close then waits for the publication (a moment), so even
this tail never outlives the iteration."""


DISK_FULL = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # EFBIG: RLIMIT_FSIZE or the file system's limit
)
"""Write errors that mean "no room for the cache", not "the data is bad": the read goes on."""

RELAY = -1
"""What :meth:`Download.wait_for` answers once the file will grow no more but the data goes on."""


class Outcome(enum.Enum):
    PUBLISHED = "published"
    UNCACHEABLE = "uncacheable"  # larger than the budget, the disk filled up, or not indexable
    FAILED = "failed"
    CANCELLED = "cancelled"  # nobody wanted it any more (readers closed, prefetch group closed)


class Download:
    """Copy ``stream`` into the cache at ``final_path``; the caller already holds ``lock``.

    The constructor creates the temp file (so a cache directory we cannot write to fails here,
    in the caller, before any thread exists); :meth:`run` does the copy and always releases the
    lock. ``limit`` is the cache budget: a shard larger than the whole budget is served but not
    kept. ``on_commit(download, identity)`` runs before the rename, the lock held (record that
    the cache owns the file; if it raises, nothing is published); ``on_published`` after it
    (evict); ``on_finished`` whatever the outcome, before readers see the end of the data.

    A download lives as long as somebody wants it: each reader holds it, and so does its prefetch
    group (``kept=True``) until :meth:`let_go`; when the last one lets go before the end it is *cancelled* on the spot:
    temp file unlinked, lock released, nothing published, and the copying thread, whenever its
    current read returns, touches nothing in the cache again. ``fetch`` reopens the remote
    object for a reader that must continue on its own after the disk filled up.
    """

    def __init__(
        self,
        url: str,
        key: str,
        final_path: str,
        stream: BinaryIO,
        lock: ShardLock,
        limit: int | None,
        on_published: Callable[[Download], None],
        on_finished: Callable[[Download], None],
        on_commit: Callable[[Download, tuple[int, int]], None] | None = None,
        fetch: Callable[[], BinaryIO] | None = None,
        kept: bool = False,
    ):
        self.url = url
        self.key = key
        self.final_path = final_path
        self.written = 0
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._stream = stream
        self._lock = lock
        self._limit = limit
        self._on_published = on_published
        self._on_finished = on_finished
        self._on_commit = on_commit
        self._fetch = fetch
        self._cond = threading.Condition()
        self._finished = False
        self._cancelled = False
        self._committing = False
        self._relay: Relay | None = None
        self._stopped_early = False  # the file ends before the data does (disk full)
        self._readers = 0
        self._keepers = 1 if kept else 0
        self._expected = expected_size(stream)
        self._done = threading.Event()
        os.makedirs(os.path.dirname(final_path), exist_ok=True)
        self._temp_path: str | None = make_temp_path(final_path)
        self._fd = os.open(self._temp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        track_fd_owner(self)

    # ----------------------------------------------------------------- who wants it
    def let_go(self) -> bool:
        """Drop the hold of its prefetch group (``kept=True``); cancels it if nobody else wants it.

        Returns ``True`` when nothing of this download can touch the cache any more *or* readers
        still hold it; ``False`` when it is publishing right now (wait for :meth:`wait`).
        """
        with self._cond:
            self._keepers -= 1
            self._cancel_if_unwanted()
            return not self._committing or self._finished

    def _release_reader(self) -> None:
        """A reader closed; the last one out cancels an unfinished copy (or finishes its tail)."""
        with self._cond:
            self._readers -= 1
            nearly_done = (
                self._expected is not None
                and self._expected - self.written <= TAIL_GRACE
                and not self._stopped_early
            )
            if self._readers == 0 and self._keepers == 0 and nearly_done:
                finish = not (self._finished or self._cancelled)
            else:
                finish = False
                self._cancel_if_unwanted()
        if self._relay is not None and self._readers == 0:
            self._relay.close()
        if finish:
            self._done.wait()  # publish and evict now, not after the caller has moved on

    def _cancel_if_unwanted(self) -> None:
        """With ``_cond`` held: nobody reads or keeps it and it is still copying: stop now."""
        if self._readers > 0 or self._keepers > 0 or self._finished or self._committing:
            return
        if self._cancelled:
            return
        self._cancelled = True
        self._unlink_temp()
        self._lock.release()
        self._cond.notify_all()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    # ----------------------------------------------------------------- the writer
    def run(self) -> None:
        """Copy, verify, publish; never raises (the error is kept for the readers)."""
        start = time.monotonic()
        handed_over = False
        try:
            self._copy()
            handed_over = self._relay is not None
            if self._stopped_early or self._cancelled or self._temp_path is None:
                self.outcome = Outcome.CANCELLED if self._cancelled else Outcome.UNCACHEABLE
            elif self._publish():
                self.outcome = Outcome.PUBLISHED
                _safely(self._on_published, self)
            else:
                self.outcome = Outcome.CANCELLED if self._cancelled else Outcome.UNCACHEABLE
        except BaseException as exn:
            if self._cancelled and isinstance(exn, Exception):  # nobody reads it: not a failure
                self.outcome = Outcome.CANCELLED
            else:
                self.error = exn
                self.outcome = Outcome.FAILED
            with self._cond:
                self._unlink_temp()
            if not isinstance(exn, Exception):
                raise
        finally:
            self.seconds = time.monotonic() - start
            if not handed_over:
                close_quietly(self._stream)
            _safely(self._on_finished, self)  # before readers see the end: stats are settled
            with self._cond:
                self._finished = True
                fd, self._fd = self._fd, -1
                self._cond.notify_all()
            if fd >= 0:
                os.close(fd)
            self._lock.release()
            self._done.set()

    def _copy(self) -> None:
        expected = self._expected
        while not self._cancelled:
            chunk = self._stream.read(CHUNK_SIZE)
            if not chunk:
                break
            if self._cancelled:
                return
            if not self._write(chunk):
                return  # disk full: the rest goes to readers without caching
            if self._limit is not None and self.written > self._limit and self._temp_path:
                self._give_up_caching()
        if self._cancelled:
            return
        if expected is not None and self.written != expected:
            raise StorageError(
                f"stream ended after {self.written} of {expected} bytes; not caching it", self.url
            )

    def _write(self, chunk: bytes) -> bool:
        """Append ``chunk`` to the file; ``False`` if the disk filled up (see :meth:`_disk_full`)."""
        view = memoryview(chunk)
        done = 0
        while done < len(view):
            try:
                n = os.write(self._fd, view[done:])
            except OSError as exn:
                if exn.errno not in DISK_FULL:
                    raise
                self._disk_full(exn, bytes(view[done:]))
                return False
            done += n
            with self._cond:
                self.written += n
                self._cond.notify_all()
        return True

    def _disk_full(self, exn: OSError, leftover: bytes) -> None:
        """No room for the cache: drop the temp file and hand the stream to the readers.

        The bytes already written stay readable through the readers' descriptors (the inode
        lives until they close it); the bytes after them come from ``leftover`` and then the
        remote stream itself, from exactly where the copy stopped.
        """
        log.warning(
            "no space left to cache %s (%s): reading it on without caching",
            self.url,
            exn.strerror or exn,
        )
        with self._cond:
            self._unlink_temp()
            self._stopped_early = True
            if self._readers > 0 and not self._cancelled:
                self._relay = Relay(self._stream, leftover, self.written)
            self._cond.notify_all()
        self._lock.release()  # others need not wait: nothing will be published

    def _publish(self) -> bool:
        """fsync, record ownership, rename: ``True`` once the shard is in place."""
        try:
            os.fsync(self._fd)
        except OSError as exn:
            if exn.errno not in DISK_FULL:
                raise
            log.warning("no space left to cache %s (%s): not caching it", self.url, exn.strerror)
            with self._cond:
                self._unlink_temp()
            return False
        with self._cond:
            if self._cancelled or self._temp_path is None:
                return False
            self._committing = True  # from here on, letting go does not cancel
        identity = file_identity(os.fstat(self._fd))
        if self._on_commit is not None:
            try:
                self._on_commit(self, identity)
            except Exception as exn:  # noqa: BLE001 - any index failure only means "not cached"
                log.warning(
                    "cannot record %s in the cache index (%s): not caching it", self.url, exn
                )
                with self._cond:
                    self._unlink_temp()
                return False
        temp, self._temp_path = self._temp_path, None
        assert temp is not None  # only cancellation clears it, and _committing rules that out
        os.replace(temp, self.final_path)
        fsync_dir(os.path.dirname(self.final_path))
        return True

    def _give_up_caching(self) -> None:
        log.warning(
            "%s is larger than the whole cache budget (%d bytes): streaming it without caching",
            self.url,
            self._limit,
        )
        with self._cond:
            self._unlink_temp()
        self._lock.release()  # others need not wait: there will be nothing to read

    def _unlink_temp(self) -> None:
        temp, self._temp_path = self._temp_path, None
        if temp is not None:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass

    # ----------------------------------------------------------------- the readers
    def reader(self) -> BinaryIO | None:
        """A new stream over this download from byte 0, or ``None`` if it has already finished."""
        with self._cond:
            if self._fd < 0 or self._cancelled:
                return None
            fd = os.dup(self._fd)
            self._readers += 1
        raw = TailReader(self, fd)
        track_fd_owner(raw)
        return io.BufferedReader(raw, buffer_size=READ_BUFFER)

    def wait_for(self, pos: int) -> int:
        """Block until bytes past ``pos`` exist or the download ended: how many are available.

        Returns 0 at a clean end and :data:`RELAY` when the file stopped growing before the end
        of the data (the disk filled up); re-raises the download's error once the bytes written
        before it have all been read, so a failed download never looks like a short shard.
        """
        with self._cond:
            while self.written <= pos and not self._finished and not self._stopped_early:
                self._cond.wait()
            if self.written > pos:
                return self.written - pos
            if self.error is not None:
                raise self.error
            return RELAY if self._stopped_early else 0

    def relay_read(self, reader: object, pos: int, n: int) -> bytes | None:
        """Bytes at ``pos`` past the end of the file for ``reader``; ``None``: fetch your own."""
        relay = self._relay
        if relay is None:
            return None
        with relay.mu:
            if relay.owner is None and relay.pos == pos:
                relay.owner = reader
            if relay.owner is not reader or relay.stream is None:
                return None
            if relay.leftover:
                out, relay.leftover = relay.leftover[:n], relay.leftover[n:]
            else:
                out = relay.stream.read(n)
            relay.pos += len(out)
            return out

    def refetch(self, pos: int) -> BinaryIO:
        """A fresh remote stream positioned at ``pos`` (for a reader that cannot use the relay)."""
        if self._fetch is None:
            raise StorageError(f"the cache could not keep this shard after byte {pos}", self.url)
        stream = self._fetch()
        try:
            skip_bytes(stream, pos, self.url)
        except BaseException:
            close_quietly(stream)
            raise
        return stream

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`run` has completely finished (callbacks included)."""
        return self._done.wait(timeout)

    def _forget_fd_after_fork(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._cond = threading.Condition()


def _safely(callback: Callable[[Download], None], download: Download) -> None:
    try:
        callback(download)
    except Exception:
        log.exception("cache bookkeeping failed after downloading %s", download.url)
