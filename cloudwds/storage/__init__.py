"""The storage layer: any shard URL → a sequential byte stream, and atomic sinks for writers."""

from .config import StorageConfig
from .opening import (
    OpenedShard,
    Sink,
    is_remote,
    open_output,
    open_shard,
    prefetch_shard,
    preload_backends,
    resolve,
)
from .remote import RangeReader, RetryPolicy, filesystem

__all__ = [
    "preload_backends",
    "OpenedShard",
    "RangeReader",
    "RetryPolicy",
    "Sink",
    "StorageConfig",
    "filesystem",
    "is_remote",
    "open_output",
    "open_shard",
    "prefetch_shard",
    "resolve",
]
