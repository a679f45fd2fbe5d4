"""The exact-epoch source and shard sample counts — moved into :mod:`cloudwds.sources`.

This module keeps the old import path working: the source lives in
:mod:`cloudwds.sources.exact`, the counts (``shard_counts``, ``shard_identity``,
``_remembered_counts``) in :mod:`cloudwds.sources.counts`.
"""

from __future__ import annotations

# shard_identity / _remembered_counts moved to cloudwds/sources/counts.py
from .sources.counts import COUNTS_VERSION, _remembered_counts, shard_counts, shard_identity
from .sources.exact import _MISSING, ExactEpochSource, ShardGone, _ExactRun

__all__ = [
    "COUNTS_VERSION",
    "ExactEpochSource",
    "ShardGone",
    "shard_counts",
    "shard_identity",
]

# re-exported private names (kept importable for code that reached into the old module)
_PRIVATE = (_MISSING, _ExactRun, _remembered_counts)
