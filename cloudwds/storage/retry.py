"""The one retry policy of the storage layer: what is worth another attempt, and how long to wait.

Every remote request goes through :class:`RetryPolicy`: the ranged block reads and ``info`` calls
(:meth:`RetryPolicy.run`), the streamed GETs that resume by byte range (they call
:meth:`RetryPolicy.after_failure` themselves, because they retry *from an offset*, not a whole
call), uploads, and the indexed reader's ranged reads. One rule, :func:`classify_error`, decides
for all of them what is permanent (fail at once, with a typed error naming the URL) and what is
transient (back off and try again, up to ``WDS_RETRIES`` times).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import ShardNotFoundError, StorageAccessError, StorageError
from ..stats import COUNTERS

log = logging.getLogger("cloudwds.storage")

T = TypeVar("T")

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
    if isinstance(exn, (*_BUGS, RangeIgnoredError, IsADirectoryError, NotADirectoryError)):
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


class RangeIgnoredError(OSError):
    """A ranged GET answered with the whole object (not retried: the answer would not change)."""


class RetryPolicy:
    """Bounded retries with exponential backoff and a per-request timeout (seconds).

    ``retries`` further attempts after the first (``WDS_RETRIES``), waiting ``backoff * 2**k``
    seconds before the k-th; ``timeout`` bounds each request (``WDS_TIMEOUT``).
    """

    def __init__(self, retries: int = 5, backoff: float = 0.25, timeout: float | None = 60.0):
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(retries={self.retries}, backoff={self.backoff}, timeout={self.timeout})"
        )

    def after_failure(self, what: str, url: str, exn: BaseException, failures: int) -> float:
        """The delay before the next attempt after ``failures`` consecutive failures (1 = first).

        Raises the typed error (:class:`ShardNotFoundError`, :class:`StorageAccessError`,
        :class:`StorageError`) when ``exn`` is permanent or the retries are used up; otherwise
        counts the retry and logs it. Loops that resume (streamed reads) call this directly.
        """
        final = permanent_error(what, url, exn)
        if final is not None:
            raise final from exn
        if failures > self.retries:
            raise StorageError(
                f"{what} failed after {self.retries} retries: {_describe(exn)}", url
            ) from exn
        delay = float(self.backoff * 2 ** (failures - 1))
        log.info("%s of %s failed (%s); retry %d in %.2fs", what, url, exn, failures, delay)
        COUNTERS.add("retries")
        return delay

    def run(
        self,
        what: str,
        url: str,
        fn: Callable[[], T],
        cancelled: Callable[[], bool] | None = None,
    ) -> T:
        """``fn()`` with retries; ``cancelled()`` true (the reader was closed) stops retrying."""
        failures = 0
        while True:
            try:
                return fn()
            except Exception as exn:  # noqa: BLE001 - each back end raises its own types: classified below
                failures += 1
                if cancelled is not None and cancelled():
                    final = permanent_error(what, url, exn)
                    raise final or StorageError(
                        f"{what} failed ({_describe(exn)}); the reader was closed", url
                    ) from exn
                time.sleep(self.after_failure(what, url, exn, failures))
