"""Local shard cache: layout by URL, atomic publish, one downloader per shard, LRU by bytes.

See :mod:`cloudwds.cache.shardcache` for the guarantees and the chosen behaviours.
"""

from .index import CacheEntry
from .layout import CacheLayout, url_to_key
from .resolve import resolve_cache
from .shardcache import Fetch, ShardCache
from .sizes import format_size, parse_size

__all__ = [
    "CacheEntry",
    "CacheLayout",
    "Fetch",
    "ShardCache",
    "format_size",
    "parse_size",
    "resolve_cache",
    "url_to_key",
]
assert __all__ == sorted(__all__)
