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

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Self

import fsspec
import fsspec.asyn

from ..errors import ShardNotFoundError, StorageAccessError, StorageError
from ..stats import COUNTERS

log = logging.getLogger("cloudwds.storage")

FIRST_BLOCK = 1 << 20  # small first request: the first sample arrives quickly
BLOCK_SIZE = 8 << 20
READAHEAD = 2

# Programming and configuration errors (a storage option the client does not take, a missing
# filesystem package): the same call fails the same way every time, so fail at once.
_BUGS = (TypeError, NotImplementedError, ImportError)
_TRANSIENT_STATUS = frozenset({408, 429})
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404", "NoSuchVersion"})
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "401",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidToken",
        "ExpiredToken",
    }
)
# Exception class names (anywhere in the cause chain) that no retry can fix, by client library.
_MISSING_TYPES = frozenset({"ResourceNotFoundError", "NoSuchKey", "NoSuchBucket"})
_DENIED_TYPES = frozenset(
    {
        "NoCredentialsError",  # botocore: nothing found in env, files or instance metadata
        "PartialCredentialsError",
        "ClientAuthenticationError",  # azure.core: 401/403
        "DefaultCredentialsError",  # google.auth (a failed token refresh may be transient)
    }
)

MISSING, DENIED, PERMANENT, TRANSIENT = "missing", "denied", "permanent", "transient"


class _RangeIgnoredError(OSError):
    """A ranged GET answered with the whole object (not retried: the answer would not change)."""


def classify_error(exn: BaseException) -> str:
    """The one retry policy of every back end: is ``exn`` worth another attempt?

    Returns ``"missing"`` (no such file, object, blob or bucket: 404, ``NoSuchKey``,
    ``NoSuchBucket``), ``"denied"`` (401/403, missing or rejected credentials),
    ``"permanent"`` (another definite answer: other 4xx, a configuration or programming error)
    or ``"transient"`` (anything that may pass: refused or dropped connections — a server may
    be restarting —, timeouts, 5xx, 408, 429, and everything unrecognised).

    The whole cause chain is read, because the clients wrap: fsspec's HTTP filesystem (plain
    ``http(s)://`` and AIStore) reports *every* failed size lookup as ``FileNotFoundError``
    chaining the real cause, so a refused connection or a 503 must not pass for "missing".
    """
    chain = _chain(exn)
    if any(_is_network_error(e) for e in chain):
        return TRANSIENT
    for e in chain:
        status = _status_of(e)
        if status is not None:
            if status in (404, 410):
                return MISSING
            if status in (401, 403):
                return DENIED
            if status >= 500 or status in _TRANSIENT_STATUS:
                return TRANSIENT
            if 400 <= status < 500:
                return PERMANENT
        code = _error_code_of(e)
        if code in _MISSING_CODES:
            return MISSING
        if code in _DENIED_CODES:
            return DENIED
        name = type(e).__name__
        if name in _DENIED_TYPES:
            return DENIED
        if name in _MISSING_TYPES:
            return MISSING
    if isinstance(exn, PermissionError) or str(exn).startswith("Forbidden"):  # gcsfs' 403
        return DENIED
    if isinstance(exn, FileNotFoundError):
        return MISSING
    if isinstance(exn, (*_BUGS, _RangeIgnoredError, IsADirectoryError, NotADirectoryError)):
        return PERMANENT
    return TRANSIENT


def permanent_error(what: str, url: str, exn: BaseException) -> StorageError | None:
    """The typed error to raise at once for ``exn``, or ``None`` when it should be retried."""
    kind = classify_error(exn)
    if kind == TRANSIENT:
        return None
    cls = {MISSING: ShardNotFoundError, DENIED: StorageAccessError}.get(kind, StorageError)
    return cls(f"{what} failed: {_describe(exn)}", url)


def _chain(exn: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exn]
    while todo and len(out) < 10:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        todo += [e.__cause__, e.__context__]
    return out


def _status_of(exn: BaseException) -> int | None:
    """An HTTP status carried by the exception (aiohttp, azure, gcsfs, botocore), if any."""
    for attr in ("status", "status_code", "code"):
        value = getattr(exn, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    response = getattr(exn, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int) and 100 <= status <= 599:
            return status
    return None


def _error_code_of(exn: BaseException) -> str | None:
    response = getattr(exn, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _describe(exn: BaseException | None) -> str:
    """``Type: message`` of the real cause (not fsspec's blanket ``FileNotFoundError``)."""
    if isinstance(exn, FileNotFoundError) and exn.__cause__ is not None:
        exn = exn.__cause__
    return f"{type(exn).__name__}: {exn}"


def _is_network_error(exn: BaseException) -> bool:
    if isinstance(exn, ConnectionError | TimeoutError):
        return True
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - fsspec[http] brings it
        return False
    return isinstance(exn, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError)


def filesystem(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """Resolve ``url`` to an fsspec filesystem and path, honouring per-protocol options.

    ``storage_options`` is either the options for this URL's filesystem, or a mapping from
    protocol (``"s3"``, ``"gs"``, ``"az"``, ...) to options, so one dataset can span stores.
    """
    options = dict(_options_for(url, storage_options))
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as exn:
        raise StorageError(f"no filesystem for this URL: {exn}", url) from exn


_PROTOCOL_KEYS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "http", "https", "ais"}


def _options_for(url: str, storage_options: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not storage_options:
        return {}
    if all(k in _PROTOCOL_KEYS and isinstance(v, Mapping) for k, v in storage_options.items()):
        protocol = url.split("://", 1)[0].lower() if "://" in url else ""
        aliases = {"gcs": "gs", "abfs": "az", "abfss": "az", "s3a": "s3", "https": "http"}
        for key in (protocol, aliases.get(protocol, protocol)):
            if key in storage_options:
                return storage_options[key]
        return {}
    return storage_options


class RetryPolicy:
    """Bounded retries with exponential backoff and a per-request timeout (seconds)."""

    def __init__(self, retries: int = 5, backoff: float = 0.25, timeout: float | None = 60.0):
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    def run(
        self,
        what: str,
        url: str,
        fn: Callable[[], Any],
        cancelled: Callable[[], bool] | None = None,
    ) -> Any:
        """``fn()`` with retries; ``cancelled()`` true (the reader was closed) stops retrying."""
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exn:  # network errors differ per backend: one classification
                final = permanent_error(what, url, exn)
                if final is not None:
                    raise final from exn
                last = exn
                if cancelled is not None and cancelled():
                    break
                if attempt < self.retries:
                    delay = self.backoff * (2**attempt)
                    log.info(
                        "%s of %s failed (%s); retry %d in %.2fs",
                        what,
                        url,
                        exn,
                        attempt + 1,
                        delay,
                    )
                    COUNTERS.add("retries")
                    time.sleep(delay)
        raise StorageError(
            f"{what} failed after {self.retries} retries: {_describe(last)}", url
        ) from last


def call_fs(
    fs: Any,
    async_name: str,
    sync_name: str,
    *args: Any,
    timeout: float | None = None,
    **kwargs: Any,
) -> Any:
    """Call an fsspec method, through its async form with a timeout when the backend has one."""
    if getattr(fs, "async_impl", False) and hasattr(fs, async_name):
        return fsspec.asyn.sync(fs.loop, getattr(fs, async_name), *args, timeout=timeout, **kwargs)
    return getattr(fs, sync_name)(*args, **kwargs)


def object_size(fs: Any, path: str, url: str, policy: RetryPolicy) -> int:
    """The object's size in bytes (one ``info`` request, retried); a short read is then detectable."""
    info = policy.run(
        "stat", url, lambda: call_fs(fs, "_info", "info", path, timeout=policy.timeout)
    )
    size = info.get("size")
    if size is None:
        raise StorageError("object size unknown (server sent no length)", url)
    return int(size)


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
        except Exception:
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
            data = self._call("_cat_file", "cat_file", self.path, start=start, end=end)
            if len(data) != end - start:
                if len(data) == self.size:  # the server ignored Range and sent everything
                    if start == 0:
                        return data  # caller switches to streaming
                    # A read-ahead block: block 0 brings the whole object, and asking again
                    # would only download the whole object again, once per retry.
                    raise _RangeIgnoredError(f"server ignored Range for bytes {start}-{end}")
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
            except BaseException as exn:
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
