"""One download into the cache: remote stream → temp file → published shard, readable meanwhile.

A :class:`Download` runs in its own thread (or a prefetch worker) while holding the shard's lock.
It copies the remote stream into the temp file as fast as the remote allows, whatever its readers
do; readers (:meth:`Download.reader`) *tail* the temp file through their own descriptor and
wait only for bytes not yet written. Hence:

* the first sample is served as soon as the first chunk lands, not after the whole shard;
* a reader that stops early simply closes its descriptor and the download still completes,
  so the cached copy is whole (the chosen behaviour for early close: *finish in background*);
* no download depends on a consumer making progress, so consumers that hold several shards
  open while waiting for others (mixing datasets, several ranks) cannot deadlock on each other.

States of one cache entry (one final path)::

    absent ──(lock taken, temp created)──► downloading: ".<name>.<host>-<pid>.<rand>.part"
    downloading ──(EOF, length ok, fsync, os.replace)──► published ──(eviction)──► absent
    downloading ──(error, short stream)──► absent: temp unlinked; readers get the bytes written
                                           so far, then the error
    downloading ──(more bytes than the whole budget)──► uncacheable: temp unlinked at once and
                  the lock released; bytes keep flowing to readers through the unlinked inode
                  and are dropped when the last reader closes; never published

Invariants: the final name only ever holds a complete object; only the lock holder creates,
writes, renames or deletes the temp file; ``written`` only grows, and every byte below it is in
the file (it is advanced after ``os.write`` returns). The downloader keeps ``LOCK_SH`` on the
temp file's open description and readers get ``dup`` s of it, so after publication the shard
stays pinned against eviction until the last reader closes.
"""

from __future__ import annotations

import enum
import fcntl
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from ..errors import StorageError
from .locks import ShardLock, track_fd_owner
from .tempfiles import make_temp_path

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["CHUNK_SIZE", "Download", "Outcome", "passthrough"]

log = logging.getLogger("cloudwds.cache")

CHUNK_SIZE = 256 * 1024
"""Bytes asked of the remote stream per read: small enough that the first sample comes quickly."""

READ_BUFFER = 1 << 20


class Outcome(enum.Enum):
    PUBLISHED = "published"
    UNCACHEABLE = "uncacheable"
    FAILED = "failed"


class Download:
    """Copy ``stream`` into the cache at ``final_path``; the caller already holds ``lock``.

    The constructor creates the temp file (so a cache directory we cannot write to fails here,
    in the caller, before any thread exists); :meth:`run` does the copy and always releases the
    lock and closes the stream. ``limit`` is the cache budget: a shard larger than the whole
    budget is served but not kept. ``on_published`` runs after the rename while the lock is still
    held (index the entry, evict); ``on_finished`` runs whatever the outcome, after the stream
    is closed and before readers see the end of the data.
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
        self._cond = threading.Condition()
        self._finished = False
        self._done = threading.Event()
        os.makedirs(os.path.dirname(final_path), exist_ok=True)
        self._temp_path: str | None = make_temp_path(final_path)
        self._fd = os.open(self._temp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        fcntl.flock(self._fd, fcntl.LOCK_SH)
        track_fd_owner(self)

    # ----------------------------------------------------------------- the writer
    def run(self) -> None:
        """Copy, verify, publish; never raises (the error is kept for the readers)."""
        start = time.monotonic()
        try:
            self._copy()
            if self._temp_path is not None:
                os.fsync(self._fd)
                os.replace(self._temp_path, self.final_path)
                self._temp_path = None
                _fsync_dir(os.path.dirname(self.final_path))
                self.outcome = Outcome.PUBLISHED
                _safely(self._on_published, self)
            else:
                self.outcome = Outcome.UNCACHEABLE
        except BaseException as exn:
            self.error = exn
            self.outcome = Outcome.FAILED
            self._unlink_temp()
            if not isinstance(exn, Exception):
                raise
        finally:
            self.seconds = time.monotonic() - start
            try:
                self._stream.close()
            except Exception as exn:
                log.debug("closing the stream of %s failed: %s", self.url, exn)
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
        expected = _expected_size(self._stream)
        while True:
            chunk = self._stream.read(CHUNK_SIZE)
            if not chunk:
                break
            _write_all(self._fd, chunk)
            with self._cond:
                self.written += len(chunk)
                self._cond.notify_all()
            if self._limit is not None and self.written > self._limit and self._temp_path:
                self._give_up_caching()
        if expected is not None and self.written != expected:
            raise StorageError(
                f"stream ended after {self.written} of {expected} bytes; not caching it", self.url
            )

    def _give_up_caching(self) -> None:
        log.warning(
            "%s is larger than the whole cache budget (%d bytes): streaming it without caching",
            self.url,
            self._limit,
        )
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
            if self._fd < 0:
                return None
            fd = os.dup(self._fd)
        raw = _TailReader(self, fd)
        track_fd_owner(raw)
        return io.BufferedReader(raw, buffer_size=READ_BUFFER)

    def wait_for(self, pos: int) -> int:
        """Block until bytes past ``pos`` exist or the download ended: how many are available.

        Returns 0 at a clean end; re-raises the download's error once the bytes written before
        it have all been read, so a failed download never looks like a short shard.
        """
        with self._cond:
            while self.written <= pos and not self._finished:
                self._cond.wait()
            if self.written > pos:
                return self.written - pos
            if self.error is not None:
                raise self.error
            return 0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`run` has completely finished (callbacks included)."""
        return self._done.wait(timeout)

    def _forget_fd_after_fork(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._cond = threading.Condition()


class _TailReader(io.RawIOBase):
    """Reads a :class:`Download`'s file through its own descriptor, waiting for the writer."""

    def __init__(self, download: Download, fd: int):
        super().__init__()
        self._download = download
        self._fd = fd
        self._pos = 0

    @property
    def name(self) -> str:
        return self._download.url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        available = self._download.wait_for(self._pos)
        if available == 0:
            return 0
        n = os.preadv(self._fd, [view[: min(len(view), available)]], self._pos)
        self._pos += n
        return n

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # the download goes on; the pin lasts while others hold copies
        super().close()

    def _forget_fd_after_fork(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1


class _Passthrough(io.RawIOBase):
    """Adapts a bare fetched stream (only ``read``/``close`` promised) to a buffered file."""

    def __init__(self, stream: BinaryIO, name: str):
        super().__init__()
        self._stream = stream
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._stream.close()
            finally:
                super().close()


def passthrough(stream: BinaryIO, url: str) -> BinaryIO:
    """Serve ``stream`` uncached, with the same file interface as a cached shard."""
    return io.BufferedReader(_Passthrough(stream, url), buffer_size=READ_BUFFER)


def _expected_size(stream: object) -> int | None:
    """The length the remote announced (fsspec files have ``.size``), if any."""
    size = getattr(stream, "size", None)
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(path: str) -> None:
    """Make the rename durable (a crash must not resurrect the temp name or lose the final one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _safely(callback: Callable[[Download], None], download: Download) -> None:
    try:
        callback(download)
    except Exception:
        log.exception("cache bookkeeping failed after downloading %s", download.url)
