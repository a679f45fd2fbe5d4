"""Random access to unmodified tar shards: offsets index, ranged sample reads, map-style dataset.

=====================  ================================================================
:mod:`.offsets`         per-shard offsets table, DALI ``wds2idx`` files, typed errors
:mod:`.reader`          one ranged read per sample (coalesced for neighbours), cache-aware
:mod:`.dataset`         :class:`IndexedWebDataset`: ``len``, ``[i]``, sample-wise stages
:mod:`.samplers`        :class:`ShardAwareSampler` (shards shuffled, samples within a window
                        of shards) and :class:`GlobalShuffleSampler` (uniform, resumable)
=====================  ================================================================
"""

from .dataset import IndexedWebDataset, SampleDroppedError
from .offsets import (
    IndexMismatchError,
    NoRandomAccessError,
    OffsetsFormatError,
    ShardOffsets,
    is_compressed_url,
    offsets_url,
)
from .samplers import GlobalShuffleSampler, ShardAwareSampler

__all__ = [
    "GlobalShuffleSampler",
    "IndexMismatchError",
    "IndexedWebDataset",
    "NoRandomAccessError",
    "OffsetsFormatError",
    "SampleDroppedError",
    "ShardAwareSampler",
    "ShardOffsets",
    "is_compressed_url",
    "offsets_url",
]
