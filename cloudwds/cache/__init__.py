"""Local shard cache: layout by URL, atomic publish, one downloader per shard, LRU by bytes.

See :mod:`cloudwds.cache.shardcache` for the guarantees and the chosen behaviours.
"""

from .index import CacheEntry
from .layout import CacheLayout, url_to_key
from .prefetch import PrefetchGroup
from .resolve import resolve_cache
from .shardcache import Fetch, ShardCache
from .sizes import format_size, parse_size

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

# webdataset's ``cache`` module names (``from webdataset.cache import LRUCleanup``): thin
# wrappers over the storage layer and this cache, see webdataset_names.py.
from .webdataset_names import (  # noqa: E402, F401 - re-exported under webdataset's names
    FileCache,
    LRUCleanup,
    StreamingOpen,
    cached_url_opener,
    download,
    islocal,
    pipe_cleaner,
    url_to_cache_name,
)
