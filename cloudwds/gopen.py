"""webdataset's ``gopen``: open any URL cloudwds can read (or write) as a binary stream.

``gopen(url)`` goes through :mod:`cloudwds.storage` — the same rewrites, retries, AIStore routing,
``pipe:`` handling and shard cache as a dataset — so ``wds.gopen("s3://b/info.json")`` (timm reads
its ``_info.json`` this way) works for every back end, not only those with a command-line tool.
``gopen(url, "wb")`` returns a sink that makes the object appear when it is closed.

``gopen_schemes`` keeps webdataset's extension point: a handler ``f(url, mode, bufsize, **kw)``
registered for a scheme there is called instead of the storage layer for that scheme.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any, Self

from .errors import UnsafeInputError
from .security import is_secure
from .storage import Sink, StorageConfig, open_output, open_shard
from .urls import apply_rewrites, rewrites_from_env, url_scheme

__all__ = [
    "gopen",
    "gopen_error",
    "gopen_ais",
    "gopen_curl",
    "gopen_file",
    "gopen_gsutil",
    "gopen_htgs",
    "gopen_pipe",
    "gopen_schemes",
    "gopen_storage",
    "info",
    "reader",
    "rewrite_url",
]

info: dict[str, Any] = {}  # webdataset's module-level info dict (unused here, kept for imports)


class _WriteStream:
    """A writable stream over a storage sink: ``close()`` publishes, an exception aborts."""

    def __init__(self, sink: Sink, url: str):
        self._sink = sink
        self.name = url
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._sink.write(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sink.commit()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        etype: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if etype is not None and not self.closed:
            self.closed = True
            self._sink.abort()
        else:
            self.close()


def _config(storage: StorageConfig | None, kw: dict[str, Any]) -> StorageConfig:
    if storage is not None:
        return storage
    return StorageConfig.resolve(**kw)


def gopen_storage(
    url: str,
    mode: str = "rb",
    bufsize: int = 8192,  # noqa: ARG001 - webdataset's handler signature; storage sizes its buffers
    storage: StorageConfig | None = None,
    **kw: Any,
) -> Any:
    """Open ``url`` through cloudwds's storage layer (``kw``: :meth:`StorageConfig.resolve` args)."""
    config = _config(storage, kw)
    if mode == "rb":
        if url == "-":
            return sys.stdin.buffer
        return open_shard(url, config).stream
    if mode == "wb":
        if url == "-":
            return sys.stdout.buffer
        return _WriteStream(open_output(url, config), url)
    raise ValueError(f"gopen: unsupported mode {mode!r} (use 'rb' or 'wb')")


def gopen_error(url: str, *args: Any, **kw: Any) -> Any:  # noqa: ARG001 - a gopen handler's signature
    """The handler for schemes nobody can open."""
    raise ValueError(f"{url}: no gopen handler defined")


# The built-in schemes all go through the storage layer; replace an entry to take one over.
gopen_file = gopen_pipe = gopen_curl = gopen_ais = gopen_gsutil = gopen_htgs = gopen_storage
gopen_schemes: dict[str, Any] = {
    "__default__": gopen_storage,
    **{
        scheme: gopen_storage
        for scheme in ("file", "pipe", "http", "https", "s3", "gs", "gcs", "az", "abfs", "ais")
    },
}
_BUILTIN = gopen_storage


def rewrite_url(url: str) -> str:
    """``url`` after the process's rewrite rules (``set_rewrites``, ``WDS_REWRITE``, ``GOPEN_REWRITE``).

    Refused in secure mode when rules come from the environment, as in webdataset.
    """
    rules = rewrites_from_env()
    if rules and is_secure() and (os.environ.get("GOPEN_REWRITE") or os.environ.get("WDS_REWRITE")):
        raise ValueError(
            "rewrite_url: unsafe_gopen is False, cannot rewrite URLs using environment variables"
        )
    return apply_rewrites(url, rules)


def _check_secure(url: str) -> None:
    """webdataset's ``enforce_security`` rules for ``gopen``: no local files, no ``pipe:``."""
    if not is_secure() or url == "-":
        return
    scheme = url_scheme(url)
    if scheme == "pipe":
        raise UnsafeInputError("gopen_pipe: unsafe_gopen is False, cannot open pipe URLs", url=url)
    if scheme in ("", "file"):
        raise UnsafeInputError("gopen: unsafe_gopen is False, cannot open local files", url=url)


def gopen(url: str | os.PathLike[str], mode: str = "rb", bufsize: int = 8192, **kw: Any) -> Any:
    """Open ``url`` for binary reading (``"rb"``) or writing (``"wb"``).

    Local paths, ``file:``, ``-`` (stdin/stdout), ``pipe:cmd``, and every URL the storage layer
    reads (S3, GCS, Azure, HTTP, AIStore...). A missing object raises
    :class:`~cloudwds.errors.ShardNotFoundError` (a ``FileNotFoundError``). ``bufsize`` is accepted
    for webdataset's signature; the storage layer sizes its own buffers. In secure mode
    (``WDS_SECURE=1``, ``wds.utils.enforce_security = True``) local files and ``pipe:`` are
    refused with a ``ValueError``, as webdataset's ``gopen`` does.
    """
    url = os.fspath(url)
    _check_secure(url)
    handler = gopen_schemes.get(url_scheme(url) or "file", gopen_schemes["__default__"])
    if handler is not _BUILTIN:
        return handler(url, mode, bufsize, **kw)
    return gopen_storage(url, mode, bufsize, **kw)


def reader(url: str, **kw: Any) -> Any:
    """``gopen(url, "rb", **kw)``."""
    return gopen(url, "rb", **kw)
