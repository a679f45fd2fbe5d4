"""Local shard cache: layout by URL, atomic publish, one downloader per shard, LRU by bytes.

See :mod:`cloudwds.cache.shardcache` for the guarantees and the chosen behaviours.

Names are imported on first use (PEP 562): a pipeline without a cache only needs
:mod:`cloudwds.cache.prefetch`, and importing this package must not pull in diskcache and
sqlite3 (~25 ms in a fresh process) for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .index import CacheEntry
    from .layout import CacheLayout, url_to_key
    from .prefetch import PrefetchGroup
    from .resolve import resolve_cache
    from .shardcache import Fetch, ShardCache
    from .sizes import format_size, parse_size
    from .webdataset_names import (  # noqa: F401 - webdataset's names, not in __all__
        FileCache,
        LRUCleanup,
        StreamingOpen,
        cached_url_opener,
        download,
        islocal,
        pipe_cleaner,
        url_to_cache_name,
    )

_WHERE = {
    "CacheEntry": "index",
    "CacheLayout": "layout",
    "Fetch": "shardcache",
    "PrefetchGroup": "prefetch",
    "ShardCache": "shardcache",
    "format_size": "sizes",
    "parse_size": "sizes",
    "resolve_cache": "resolve",
    "url_to_key": "layout",
    # webdataset's ``cache`` module names (``from webdataset.cache import LRUCleanup``): thin
    # wrappers over the storage layer and this cache, see webdataset_names.py.
    "FileCache": "webdataset_names",
    "LRUCleanup": "webdataset_names",
    "StreamingOpen": "webdataset_names",
    "cached_url_opener": "webdataset_names",
    "download": "webdataset_names",
    "islocal": "webdataset_names",
    "pipe_cleaner": "webdataset_names",
    "url_to_cache_name": "webdataset_names",
}

__all__ = [
    "CacheEntry",
    "CacheLayout",
    "Fetch",
    "PrefetchGroup",
    "ShardCache",
    "format_size",
    "parse_size",
    "resolve_cache",
    "url_to_key",
]
assert __all__ == sorted(__all__)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
