"""The storage layer: any shard URL → a sequential byte stream, and atomic sinks for writers.

URLs are resolved once into targets (:mod:`.target`) through a scheme registry
(:mod:`.registry`, :func:`register_backend`); remote requests share one retry policy
(:mod:`.retry`).
"""

from .config import StorageConfig
from .fs import filesystem
from .identity import object_identities
from .opening import (
    OpenedShard,
    Sink,
    is_remote,
    open_output,
    open_shard,
    prefetch_shard,
    preload_backends,
    resolve,
    write_output,
)
from .registry import (
    FsspecBackend,
    LocalBackend,
    StorageBackend,
    get_backend,
    known_schemes,
    register_backend,
)
from .remote import RangeReader
from .retry import RetryPolicy, classify_error
from .target import Target, resolve_target

__all__ = [
    "FsspecBackend",
    "LocalBackend",
    "OpenedShard",
    "RangeReader",
    "RetryPolicy",
    "Sink",
    "StorageBackend",
    "StorageConfig",
    "Target",
    "classify_error",
    "filesystem",
    "get_backend",
    "is_remote",
    "known_schemes",
    "object_identities",
    "open_output",
    "open_shard",
    "prefetch_shard",
    "preload_backends",
    "register_backend",
    "resolve",
    "resolve_target",
    "write_output",
]
