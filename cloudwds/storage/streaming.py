"""One streamed GET per shard, resumed by byte range after an error (S3 and HTTP/AIStore).

Ranged block reads (:class:`~cloudwds.storage.remote.RangeReader`) pay a request per block; for
object stores that answer a plain GET with a body that can be read incrementally, one request
per shard is faster (measured on the local S3 endpoint: 418 MB/s streamed vs 245 MB/s in 8 MiB
ranges and 360 MB/s for a whole-object ``cat_file``). A producer thread reads the body in 1 MiB
chunks into a small bounded queue, so the network keeps flowing while the consumer parses tar
headers, and memory stays bounded by the queue (not the shard). When the connection drops, a
read times out or the body ends short, the producer opens a new GET with ``Range:
bytes=<offset>-`` and continues from the byte it reached: the consumer sees one gap-free stream.

A backend is a coroutine ``open(fs, path, start) -> (read, close)``; the table below maps fsspec
filesystem classes to backends. Other filesystems use ranged blocks.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import fsspec.asyn

from ..errors import StorageError
from ..stats import COUNTERS
from .remote import RemoteReader, RetryPolicy, permanent_error

log = logging.getLogger("cloudwds.storage")

CHUNK = 1 << 20
QUEUE_CHUNKS = 8  # bytes buffered ahead of the consumer: at most QUEUE_CHUNKS * CHUNK

ReadFn = Callable[[int], Awaitable[bytes]]
CloseFn = Callable[[], Any]


async def _open_s3(fs: Any, path: str, start: int) -> tuple[ReadFn, CloseFn]:
    bucket, key, version = fs.split_path(path)
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version:
        kwargs["VersionId"] = version
    if start:
        kwargs["Range"] = f"bytes={start}-"
    resp = await fs._call_s3("get_object", **kwargs)
    body = resp["Body"]
    return body.read, body.close


async def _open_http(fs: Any, path: str, start: int) -> tuple[ReadFn, CloseFn]:
    session = await fs.set_session()
    headers = dict(fs.kwargs.get("headers") or {})
    if start:
        headers["Range"] = f"bytes={start}-"
    kwargs = {k: v for k, v in fs.kwargs.items() if k != "headers"}
    response = await session.get(fs.encode_url(path), headers=headers, **kwargs)
    if response.status >= 400:
        response.release()
        raise _http_error(response.status, path)
    if start and response.status != 206:
        response.release()
        raise OSError(f"server ignored Range (HTTP {response.status}); cannot resume at {start}")
    return response.content.read, response.release


class HTTPStatusError(OSError):
    """An HTTP error answer; ``status`` lets :func:`~.remote.classify_error` decide on retries."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _http_error(status: int, path: str) -> OSError:
    """404/410 → ``FileNotFoundError``, 401/403 → ``PermissionError``, else the status kept."""
    message = f"HTTP {status} for {path}"
    if status in (404, 410):
        return FileNotFoundError(message)
    if status in (401, 403):
        return PermissionError(message)
    return HTTPStatusError(status, message)


BACKENDS: dict[str, Callable[[Any, str, int], Awaitable[tuple[ReadFn, CloseFn]]]] = {
    "S3FileSystem": _open_s3,
    "HTTPFileSystem": _open_http,
}


def backend_for(fs: Any) -> Callable[[Any, str, int], Awaitable[tuple[ReadFn, CloseFn]]] | None:
    """The streaming backend for this filesystem (by class, including subclasses), or None."""
    for cls in type(fs).__mro__:
        backend = BACKENDS.get(cls.__name__)
        if backend is not None:
            return backend
    return None


_END = object()


class StreamReader(RemoteReader):
    """Sequential read-only stream over one object via streamed GETs (see module doc).

    Invariant: the bytes put in the queue are exactly ``object[0:offset]`` in order; after an
    error the next GET starts at ``offset``, so nothing is skipped or repeated.
    """

    def __init__(self, fs: Any, path: str, url: str, size: int, policy: RetryPolicy | None = None):
        self.fs = fs
        self.path = path
        self.url = url
        self.size = size
        self.policy = policy or RetryPolicy()
        self.bytes_read = 0
        self._backend = backend_for(fs)
        if self._backend is None:
            raise TypeError(f"no streaming backend for {type(fs).__name__}")
        self._queue: queue.Queue[Any] = queue.Queue(QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._cur = b""
        self._pos = 0
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="cloudwds-stream", daemon=True)
        self._thread.start()

    # -- producer (its own thread; the network I/O runs on fsspec's event loop) --------------
    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        offset = 0
        failures = 0
        timeout = self.policy.timeout
        while offset < self.size and not self._stop.is_set():
            close: CloseFn | None = None
            try:
                read, close = fsspec.asyn.sync(
                    self.fs.loop,
                    self._backend,
                    self.fs,
                    self.path,
                    offset,
                    timeout=timeout,  # type: ignore[misc]
                )
                while offset < self.size and not self._stop.is_set():
                    chunk = fsspec.asyn.sync(self.fs.loop, read, CHUNK, timeout=timeout)
                    if not chunk:
                        raise OSError(f"connection ended at byte {offset} of {self.size}")
                    if offset + len(chunk) > self.size:
                        chunk = chunk[: self.size - offset]
                    offset += len(chunk)
                    failures = 0
                    if not self._put(chunk):
                        return
            except Exception as exn:
                final = permanent_error("read", self.url, exn)  # the policy of every reader
                if final is not None:
                    self._put(final)
                    return
                # dropped connection, timeout, 5xx: resume from offset
                failures += 1
                if failures > self.policy.retries:
                    err = StorageError(
                        f"read failed at byte {offset} after {self.policy.retries} retries: "
                        f"{type(exn).__name__}: {exn}",
                        self.url,
                    )
                    self._put(err)
                    return
                delay = self.policy.backoff * (2 ** (failures - 1))
                log.info(
                    "stream of %s broke at byte %d (%s); resuming in %.2fs",
                    self.url,
                    offset,
                    exn,
                    delay,
                )
                COUNTERS.add("retries")
                time.sleep(delay)
            finally:
                if close is not None:
                    try:
                        result = close()
                        if asyncio.iscoroutine(result):
                            fsspec.asyn.sync(self.fs.loop, lambda r=result: r, timeout=5)
                    except Exception:
                        pass
        self._put(_END)

    # -- consumer ------------------------------------------------------------------------
    def read(self, n: int = -1) -> bytes:
        if n < 0:
            parts: list[bytes] = []
            while True:
                chunk = self.read(1 << 30)
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        if self._pos >= len(self._cur):
            if self._done:
                return b""
            item = self._queue.get()
            if item is _END:
                self._done = True
                if self.bytes_read != self.size:
                    raise StorageError(
                        f"short read: object has {self.size} bytes, got {self.bytes_read}", self.url
                    )
                return b""
            if isinstance(item, BaseException):
                self._done = True
                raise item
            self._cur, self._pos = item, 0
        cur, pos = self._cur, self._pos
        out = cur if pos == 0 and n >= len(cur) else cur[pos : pos + n]
        self._pos = pos + len(out)
        self.bytes_read += len(out)
        COUNTERS.add("bytes_remote", len(out))
        return out

    def close(self) -> None:
        self._stop.set()
        self._done = True
        # unblock a producer waiting on a full queue
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
