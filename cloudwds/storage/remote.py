"""Object-store reads through fsspec: large ranged blocks, read-ahead, retries, resume by offset.

Every backend (s3fs, gcsfs, adlfs, fsspec's HTTP, AIStore's REST API over HTTP) is read the same
way: one ``info`` for the object's size, then ``cat_file(path, start, end)`` for consecutive
blocks, with the next blocks already in flight on a small thread pool. A block is one request, so
a dropped connection, a timeout or a 5xx costs only that block: it is fetched again from the same
byte offset after a backoff, and the tar stream above never sees a gap or a repeated byte.
A block that comes back shorter than asked is retried too; after the bounded retries the error
names the URL. Servers that ignore ``Range`` (the stdlib ``http.server``) are detected on the first
block and read as one sequential stream instead.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Self

from ..errors import StorageError
from ..stats import COUNTERS
from .fs import call_fs, filesystem, object_size
from .retry import (
    DENIED,
    MISSING,
    PERMANENT,
    TRANSIENT,
    RangeIgnoredError,
    RetryPolicy,
    classify_error,
    permanent_error,
)

# Re-exported: the retry policy and the fsspec helpers lived here before (public import paths).
__all__ = [
    "BLOCK_SIZE",
    "DENIED",
    "FIRST_BLOCK",
    "MISSING",
    "PERMANENT",
    "READAHEAD",
    "TRANSIENT",
    "RangeReader",
    "RemoteReader",
    "RetryPolicy",
    "call_fs",
    "classify_error",
    "filesystem",
    "object_size",
    "permanent_error",
]

FIRST_BLOCK = 1 << 20  # small first request: the first sample arrives quickly
BLOCK_SIZE = 8 << 20
READAHEAD = 2


class RemoteReader:
    """What every remote reader shares: a readable stream, closed on exit and on collection
    (so an abandoned shard stops its background requests). Subclasses define ``close``."""

    def close(self) -> None:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing may escape a finalizer; close() errors are moot here
            pass


class RangeReader(RemoteReader):
    """A sequential, read-only stream over an object, fetched as ranged blocks with read-ahead."""

    def __init__(
        self,
        fs: Any,
        path: str,
        url: str,
        *,
        policy: RetryPolicy | None = None,
        block_size: int = BLOCK_SIZE,
        first_block: int = FIRST_BLOCK,
        readahead: int = READAHEAD,
        size: int | None = None,
    ):
        self.fs = fs
        self.path = path
        self.url = url
        self.policy = policy or RetryPolicy()
        self.block_size = block_size
        self.size = size if size is not None else self._stat_size()
        self.bytes_read = 0
        self._next_start = 0  # first byte not yet requested
        self._next_block = min(first_block, block_size)
        self._cur = b""
        self._cur_pos = 0
        self._pending: deque[tuple[int, int, Future[bytes]]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._readahead = max(0, readahead)
        self._closed = False

    # -- fetching -------------------------------------------------------------------------
    def _stat_size(self) -> int:
        return object_size(self.fs, self.path, self.url, self.policy)

    def _call(self, async_name: str, sync_name: str, *args: Any, **kwargs: Any) -> Any:
        return call_fs(self.fs, async_name, sync_name, *args, timeout=self.policy.timeout, **kwargs)

    def _fetch(self, start: int, end: int) -> bytes:
        def once() -> bytes:
            data = bytes(self._call("_cat_file", "cat_file", self.path, start=start, end=end))
            if len(data) != end - start:
                if len(data) == self.size:  # the server ignored Range and sent everything
                    if start == 0:
                        return data  # caller switches to streaming
                    # A read-ahead block: block 0 brings the whole object, and asking again
                    # would only download the whole object again, once per retry.
                    raise RangeIgnoredError(f"server ignored Range for bytes {start}-{end}")
                raise OSError(
                    f"short read: got {len(data)} of {end - start} bytes at offset {start}"
                )
            return data

        return self.policy.run(
            f"read of bytes {start}-{end}", self.url, once, cancelled=lambda: self._closed
        )

    def _submit_next(self) -> None:
        if self._next_start >= self.size:
            return
        start = self._next_start
        end = min(self.size, start + self._next_block)
        self._next_start = end
        self._next_block = self.block_size
        if self._readahead == 0:
            fut: Future[bytes] = Future()
            try:
                fut.set_result(self._fetch(start, end))
            except BaseException as exn:  # noqa: BLE001 - handed to the reader, as a pool thread would
                fut.set_exception(exn)
            self._pending.append((start, end, fut))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._readahead, thread_name_prefix="cloudwds-read")
        self._pending.append((start, end, self._pool.submit(self._fetch, start, end)))

    def _advance(self) -> bool:
        """Make the next block current; False at the end of the object."""
        while len(self._pending) < max(1, self._readahead):
            before = self._next_start
            self._submit_next()
            if self._next_start == before:
                break
        if not self._pending:
            return False
        start, end, fut = self._pending.popleft()
        block = fut.result()
        if len(block) != end - start:
            # The server ignored Range and sent the whole object (checked in _fetch): use it
            # and drop the blocks already requested.
            self._cancel_pending()
            self._next_start = self.size
        self._cur = block
        self._cur_pos = 0
        return True

    # -- stream interface -----------------------------------------------------------------
    def read(self, n: int = -1) -> bytes:
        if self._closed:
            raise ValueError("read from a closed RangeReader")
        if n < 0:
            parts: list[bytes] = []
            while True:
                chunk = self.read(1 << 30)
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        if self._cur_pos >= len(self._cur):
            if not self._advance():
                if self.bytes_read != self.size:
                    raise StorageError(
                        f"short read: object has {self.size} bytes, got {self.bytes_read}", self.url
                    )
                return b""
        cur = self._cur
        pos = self._cur_pos
        if pos == 0 and n >= len(cur):
            out = cur
        else:
            out = cur[pos : pos + n]
        self._cur_pos = pos + len(out)
        self.bytes_read += len(out)
        COUNTERS.add("bytes_remote", len(out))
        return out

    def _cancel_pending(self) -> None:
        for _, _, fut in self._pending:
            fut.cancel()
        self._pending.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_pending()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._cur = b""
