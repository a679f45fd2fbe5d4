"""Inter-process locks and read pins, both built on ``flock(2)``.

Two kinds of lock, on two kinds of file:

* **Shard lock** (:class:`ShardLock`, exclusive, on ``.cloudwds/locks/<xx>/<sha>.lock``): whoever holds
  it is the only one in the world allowed to create, write, rename or delete the temp files of
  that shard. It is what makes "exactly one downloader per shard" true across DataLoader
  workers, ranks and unrelated jobs sharing the directory. Unlike ``filelock.FileLock`` (whose
  lock count is thread-local by default) it may be released by another thread than the one that
  took it: ``ShardCache.open`` takes it and hands it to the download thread.
* **Read pin** (:func:`open_pinned`, shared, on the shard file itself): every reader holds
  ``LOCK_SH`` for as long as its file is open, and eviction only deletes a file on which it got
  ``LOCK_EX | LOCK_NB`` (:func:`remove_unpinned`). So a shard being read is never evicted.

``flock`` locks belong to the open file description and vanish when the process dies, so a
crashed downloader never leaves a shard locked. They would, however, be *inherited* by a forked
child (a fork-started DataLoader worker) and stay held until the child closes its copy; a child
that then asked for the same shard would wait for itself forever. :func:`os.register_at_fork`
closes the child's copies of the descriptors this package owns (closing a copy releases nothing
in the parent).
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import weakref
from typing import BinaryIO, Protocol

__all__ = ["ShardLock", "open_pinned", "remove_unpinned", "track_fd_owner"]


class _FdOwner(Protocol):
    def _forget_fd_after_fork(self) -> None: ...


_OWNERS: weakref.WeakSet[_FdOwner] = weakref.WeakSet()
_OWNERS_MU = threading.Lock()


def track_fd_owner(owner: _FdOwner) -> None:
    """Register an object whose raw descriptors must not survive into a forked child."""
    with _OWNERS_MU:
        _OWNERS.add(owner)


def _after_fork_in_child() -> None:
    global _OWNERS_MU
    _OWNERS_MU = threading.Lock()  # it may have been held by a parent thread at fork time
    for owner in list(_OWNERS):
        owner._forget_fd_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ShardLock:
    """Exclusive lock on one shard, shared by threads and processes; release from any thread.

    The lock file is opened afresh on every ``acquire`` (flock conflicts between two descriptors
    of the same process too, so two threads exclude each other just like two processes) and
    closed on ``release``. Lock files are never deleted: removing a file someone else is about
    to lock would let two holders lock two different inodes.
    """

    def __init__(self, path: str):
        self.path = path
        self._fd = -1
        self._mu = threading.Lock()

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; wait for it if ``blocking``, else return ``False`` when it is held."""
        if self._fd >= 0:
            raise RuntimeError(f"ShardLock({self.path!r}) is already held by this object")
        fd = _open_lock_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        with self._mu:
            self._fd = fd
        track_fd_owner(self)
        return True

    def release(self) -> None:
        """Drop the lock (idempotent; closing the descriptor releases the flock)."""
        with self._mu:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def __enter__(self) -> ShardLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _forget_fd_after_fork(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._mu = threading.Lock()


def _open_lock_file(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)


def open_pinned(path: str, buffering: int = -1) -> BinaryIO | None:
    """Open a published shard for reading and pin it with ``LOCK_SH``; ``None`` if it is gone.

    The pin lasts until the returned file is closed. If an evictor won the race (it held
    ``LOCK_EX`` and unlinked the file before our ``LOCK_SH`` was granted), the path no longer
    names the inode we opened and we report the shard as absent rather than serve a file that
    the index already forgot.
    """
    try:
        f = open(path, "rb", buffering=buffering)  # noqa: SIM115 (returned to the caller)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        if not _same_file(f.fileno(), path):
            f.close()
            return None
    except BaseException:
        f.close()
        raise
    return f


def remove_unpinned(path: str, expected: tuple[int, int] | None = None) -> str:
    """Delete ``path`` unless a reader pins it: returns ``"removed"``, ``"busy"`` or ``"missing"``.

    With ``expected`` (a ``(st_dev, st_ino)``), only that very file is deleted; another file at
    the path is left alone and ``"foreign"`` returned (the cache deletes only what it wrote).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as exn:
        if exn.errno == errno.ELOOP:  # a symlink: never the cache's (it writes regular files)
            return "foreign"
        raise
    try:
        if expected is not None:
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) != expected:
                return "foreign"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "busy"
        if not _same_file(fd, path):
            return "missing"
        try:
            os.unlink(path)
        except FileNotFoundError:
            return "missing"
        return "removed"
    finally:
        os.close(fd)  # readers blocked in open_pinned() now see the path gone


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError as exn:
        if exn.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)
