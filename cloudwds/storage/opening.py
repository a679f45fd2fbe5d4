"""URL → byte stream (and URL → atomic sink): the single entry point every reader and writer uses.

Each URL is resolved once (:func:`~cloudwds.storage.target.resolve_target`: rewrite
``WDS_REWRITE`` → back end from the scheme registry → AIStore routing → location); then a
remote one goes through the shard cache (keyed by the *original* URL, so a cache filled in the
cloud and one filled on a desktop have the same layout) to its back end's reader. Every function
here takes a URL or an already resolved :class:`~cloudwds.storage.target.Target`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ShardNotFoundError, StorageAccessError, StorageError, UnsafeInputError
from ..urls import url_scheme
from .config import StorageConfig
from .registry import Sink
from .target import Target, resolve_target

__all__ = [
    "OpenedShard",
    "Readable",
    "Sink",
    "is_remote",
    "open_output",
    "open_shard",
    "prefetch_shard",
    "preload_backends",
    "remote_fetcher",
    "resolve",
]


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


@dataclass
class OpenedShard:
    """A readable shard: ``url`` is the URL the user gave, ``local_path`` set for local files."""

    url: str
    stream: Any
    local_path: str | None = None

    def close(self) -> None:
        close = getattr(self.stream, "close", None)
        if close is not None and self.stream is not sys.stdin.buffer:
            close()

    def __enter__(self) -> OpenedShard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve(url: str | Target, config: StorageConfig) -> str:
    """The URL actually opened for ``url``: after rewrites and AIStore routing."""
    target = resolve_target(url, config)
    return target.location if target.remote else target.rewritten


def remote_fetcher(url: str | Target, config: StorageConfig) -> Callable[[], Any]:
    """A zero-argument callable opening a fresh reader for a remote URL.

    One streamed GET per shard where the back end streams (S3, HTTP, AIStore), else ranged
    blocks; both resume from the byte offset reached after an error.
    """
    target = resolve_target(url, config)
    return functools.partial(target.backend.open_reader, target, config)


def preload_backends(urls: list[str], config: StorageConfig) -> None:
    """Import the fsspec back ends (s3fs, gcsfs, adlfs...) these URLs need, now.

    Called when a dataset is built, so the import cost is paid once in the main process before
    DataLoader workers fork, not inside the first epoch of every worker (issue 12 item 3). One
    URL per scheme is resolved (rewrites, AIStore routing); a back end that is missing or a URL
    that cannot be resolved is left alone here: opening the shard reports it, naming the URL.
    """
    import fsspec

    seen: set[str] = set()
    for url in urls:
        raw = url_scheme(url)
        if raw in seen:
            continue
        seen.add(raw)
        try:
            target = resolve_target(url, config)
            if not target.remote:
                continue
            scheme = url_scheme(target.location)
            if scheme:
                fsspec.get_filesystem_class(scheme)
        except (ImportError, ValueError, StorageError):
            continue


def is_remote(url: str | Target, config: StorageConfig) -> bool:
    """Whether ``url`` is read from a remote store (so it is cached and prefetched)."""
    try:
        return resolve_target(url, config).remote
    except UnsafeInputError:  # a refused rewrite to pipe: (opening it raises, naming the URL)
        return False
    except (StorageError, ValueError):  # remote, but cannot be located: opening it says why
        return True


def open_shard(url: str | Target, config: StorageConfig | None = None) -> OpenedShard:
    """Open ``url`` for sequential reading; errors name the URL (and its rewrite, if any)."""
    config = config or StorageConfig()
    target = resolve_target(url, config)
    try:
        if target.remote and config.cache is not None:
            fetch = functools.partial(target.backend.open_reader, target, config)
            return OpenedShard(target.url, config.cache.open(target.url, fetch))
        stream = target.backend.open_reader(target, config)
        return OpenedShard(target.url, stream, local_path=target.local_path)
    except StorageError:
        raise
    except OSError as exn:
        cls = (
            ShardNotFoundError
            if isinstance(exn, FileNotFoundError | NotADirectoryError)
            else StorageAccessError
            if isinstance(exn, PermissionError)
            else StorageError
        )
        raise cls(f"cannot open shard: {type(exn).__name__}: {exn}", target.where) from exn


def prefetch_shard(url: str | Target, config: StorageConfig, group: Any = None) -> None:
    """Start a background download of ``url`` into the cache (no-op without a cache).

    ``group`` (a :class:`cloudwds.cache.PrefetchGroup`, one per iteration) ends the prefetch
    when the iteration ends: nothing of a finished iteration keeps touching the cache.
    """
    if config.cache is None:
        return
    try:
        target = resolve_target(url, config)
    except (StorageError, ValueError):
        return  # best effort: opening the shard raises the same error, in the reader's order
    if not target.remote:
        return
    fetch = functools.partial(target.backend.open_reader, target, config)
    config.cache.prefetch(target.url, fetch, group=group)


def open_output(url: str | Target, config: StorageConfig | None = None) -> Sink:
    """Open a sink that makes ``url`` appear only on ``commit()``; ``abort()`` leaves nothing.

    AIStore routing (``USE_AIS_FOR``) is for reads: a ``gs://``/``s3://`` shard is written to
    the cloud itself, with the user's ``storage_options``; only ``ais://`` shards are written
    through the AIStore REST API (``PUT /v1/objects/...``).
    """
    config = config or StorageConfig()
    target = resolve_target(url, config)
    return target.backend.open_sink(target, config)


def write_output(url: str | Target, data: bytes, config: StorageConfig | None = None) -> None:
    """Write ``data`` to ``url`` atomically: it appears whole on success, nothing on error."""
    sink = open_output(url, config)
    try:
        sink.write(data)
    except BaseException:
        sink.abort()
        raise
    sink.commit()
