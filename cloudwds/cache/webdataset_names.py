"""webdataset's ``cache`` module names, as thin wrappers over cloudwds's storage and shard cache.

``FileCache`` and ``StreamingOpen`` are the shard-opening stages webdataset's ``WebDataset``
builds on; here they open through :func:`cloudwds.storage.open_shard`, so a ``FileCache`` is
cloudwds's shard cache (laid out by full URL, locked, LRU by bytes) rather than webdataset's
basename-keyed directory. ``LRUCleanup`` trims any directory of files to a size, oldest first.
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..handlers import Handler, reraise_exception

__all__ = [
    "FileCache",
    "LRUCleanup",
    "StreamingOpen",
    "cached_url_opener",
    "download",
    "islocal",
    "pipe_cleaner",
    "url_to_cache_name",
]

_NAMED_SCHEMES = ("", "file", "http", "https", "ftp", "ftps", "gs", "s3", "ais")


def islocal(url: str) -> bool:
    """True for plain paths and ``file:`` URLs."""
    return urllib.parse.urlparse(url).scheme in ("", "file")


def pipe_cleaner(spec: str) -> str:
    """The object URL inside a ``pipe:`` command (``pipe:curl -s https://x/a.tar`` → the URL)."""
    if spec.startswith("pipe:"):
        for word in spec[5:].split(" "):
            if re.match(r"^(https?|hdfs|gs|ais|s3):", word):
                return word
    return spec


def url_to_cache_name(url: str, ndir: int = 0) -> str:
    """webdataset's cache file name for ``url``: its last ``ndir + 1`` path components.

    cloudwds's own cache does not use it (names collide across buckets); kept for callers.
    """
    if not isinstance(url, str):
        raise AssertionError(f"url must be a str, got {type(url).__name__}")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in _NAMED_SCHEMES:
        parts = parsed.path.lstrip("/").split("/")
        return "/".join(parts[-1 - ndir :])
    return urllib.parse.quote(url, safe="_+{}*,-")[-128:]


class LRUCleanup:
    """Delete the oldest files (by ``keyfn``) of ``cache_dir`` until it holds ``cache_size`` bytes.

    ``interval`` seconds between two effective runs (None: every call).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: int = int(1e12),
        keyfn: Callable[[str], float] = os.path.getctime,
        verbose: bool = False,
        interval: float | None = 30,
    ):
        self.cache_dir = cache_dir
        self.cache_size = cache_size
        self.keyfn = keyfn
        self.verbose = verbose
        self.interval = interval
        self.last_run = 0.0

    def set_cache_dir(self, cache_dir: str) -> None:
        self.cache_dir = cache_dir

    def cleanup(self) -> None:
        if self.cache_dir is None or not os.path.exists(self.cache_dir):
            return
        if self.interval is not None and time.time() - self.last_run < self.interval:
            return
        files: list[str] = []
        for dirpath, _, filenames in os.walk(self.cache_dir):
            files.extend(os.path.join(dirpath, f) for f in filenames)
        try:
            sizes = {f: os.path.getsize(f) for f in files}
            total = sum(sizes.values())
            for fname in sorted(files, key=self.keyfn):
                if total <= self.cache_size:
                    break
                if self.verbose:
                    print(f"# deleting {fname}", file=sys.stderr)
                os.remove(fname)
                total -= sizes[fname]
        except FileNotFoundError:  # another process removed a file meanwhile
            pass
        self.last_run = time.time()


def download(url: str, dest: str, chunk_size: int = 1024**2, verbose: bool = False) -> None:  # noqa: ARG001 - webdataset's signature
    """Copy ``url`` to the local file ``dest`` (atomically: a temp file renamed at the end)."""
    from ..gopen import gopen

    temp = f"{dest}.temp{os.getpid()}"
    with gopen(url) as stream, open(temp, "wb") as out:
        while chunk := stream.read(chunk_size):
            out.write(chunk)
    os.rename(temp, dest)


def _opened_items(urls: Iterable[Any], storage: Any, handler: Handler) -> Iterator[dict[str, Any]]:
    from ..storage import open_shard

    for item in urls:
        url = item["url"] if isinstance(item, dict) else item
        try:
            opened = open_shard(url, storage)
        except Exception as exn:  # noqa: BLE001 - the user's handler decides on any error
            if handler(exn):
                continue
            return
        result = {**item} if isinstance(item, dict) else {}
        result.update(url=url, stream=opened.stream)
        if opened.local_path is not None:
            result["local_path"] = opened.local_path
        yield result


class StreamingOpen:
    """Stage: URLs (or ``{"url"}`` items) → ``{"url", "stream"[, "local_path"]}``, no caching."""

    def __init__(self, verbose: bool = False, handler: Handler = reraise_exception):
        self.verbose = verbose
        self.handler = handler

    def __call__(self, urls: Iterable[Any]) -> Iterator[dict[str, Any]]:
        from ..storage import StorageConfig

        return _opened_items(urls, StorageConfig(), self.handler)


class FileCache:
    """Stage like :class:`StreamingOpen`, reading remote shards through cloudwds's shard cache.

    ``url_to_name``, ``validator`` and ``cache_cleanup_interval`` are accepted for
    webdataset's signature: the cache names files by full URL, verifies downloads by size and
    evicts by LRU itself.
    """

    def __init__(
        self,
        cache_dir: str | None = None,
        *,
        url_to_name: Callable[[str], str] = url_to_cache_name,  # noqa: ARG002 - webdataset's signature
        verbose: bool = False,  # noqa: ARG002 - webdataset's signature
        validator: Any = None,  # noqa: ARG002 - webdataset's signature
        handler: Handler = reraise_exception,
        cache_size: int = -1,
        cache_cleanup_interval: int = 30,  # noqa: ARG002 - webdataset's signature
    ):
        from ..storage import StorageConfig

        self.cache_dir = cache_dir
        self.handler = handler
        size = None if cache_size is None or cache_size < 0 else cache_size
        self.storage = StorageConfig.resolve(cache_dir=cache_dir, cache_size=size)

    def __call__(self, urls: Iterable[Any]) -> Iterator[dict[str, Any]]:
        return _opened_items(urls, self.storage, self.handler)


def cached_url_opener(
    data: Iterable[Any],
    handler: Handler = reraise_exception,
    cache_dir: str | None = None,
    cache_size: int = -1,
    **kw: Any,  # noqa: ARG001 - webdataset's other options, accepted and ignored
) -> Iterator[dict[str, Any]]:
    """``url_opener`` through the shard cache in ``cache_dir``."""
    return FileCache(cache_dir, handler=handler, cache_size=cache_size)(data)
