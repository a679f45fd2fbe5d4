"""The shard index (manifest): per-shard sample counts, sizes and checksums, as one JSON file.

Distributed training needs to know how many samples each shard holds (to size an epoch, to give
every rank the same number of batches, to skip whole shards when resuming) without reading the
shards; ``cloudwds verify`` needs checksums to tell a corrupted shard from a good one. Both read
a manifest built once by :func:`build_index` (``cloudwds index``)::

    {
      "format": "cloudwds-index",
      "version": 1,
      "checksum": "sha256",
      "num_shards": 2,
      "total_samples": 20,
      "total_bytes": 40960,
      "shards": [
        {"url": "train-000000.tar", "samples": 10, "bytes": 20480,
         "sha256": "9f2c...", "members": 20},
        {"url": "s3://other-bucket/extra.tar", "samples": 10, "bytes": 20480,
         "sha256": "41d0...", "members": 20}
      ]
    }

With offsets (``build_index(..., offsets=True)``, ``cloudwds index`` by default) each entry
also names the shard's offsets file, DALI's ``wds2idx`` format written next to the shard
(``"offsets": "train-000000.idx"``, see :mod:`cloudwds.indexed.offsets`), which gives random
access to its samples (:class:`cloudwds.IndexedWebDataset`); a gzip-compressed shard has none
and is marked ``"compressed": true`` instead. Both keys are optional: older manifests load.

Shard URLs are stored relative to the manifest's directory when the shard lies under it (so a
dataset directory can be copied or synced elsewhere with its index), absolute otherwise; they
are resolved against the manifest's location on load, so :class:`Manifest` always holds URLs
that can be opened as they are. ``bytes`` and ``sha256`` describe the stored object (the
compressed bytes of a ``.tar.gz``), ``samples`` is what a reader yields (runs of consecutive
members with the same key), ``members`` the regular files in the archive.

The default place of a manifest is a file named ``cloudwds-index.json`` in the shards' common
directory (:func:`default_index_url`); :func:`find_index` looks there.

A manifest is data, possibly served by someone else: its shard URLs go through
:func:`cloudwds.security.check_data_url` on load, so a ``pipe:`` entry (or a URL with shell
syntax that a ``pipe:`` rewrite would paste into a command) raises
:class:`~cloudwds.errors.UnsafeInputError` naming the manifest and the entry, and nothing runs.
"""

from __future__ import annotations

from .build import build_index, index_one
from .manifest import (
    FORMAT,
    INDEX_NAME,
    VERSION,
    Manifest,
    ManifestError,
    ShardInfo,
    _directory_of,
    _is_absolute,
    _match_key,
    _relative_to,
    _resolve,
    default_index_url,
    find_index,
    load_index,
)
from .scan import MemberCallback, scan_shard, scan_shard_offsets

__all__ = [
    "FORMAT",
    "INDEX_NAME",
    "VERSION",
    "Manifest",
    "ManifestError",
    "MemberCallback",
    "ShardInfo",
    "_directory_of",
    "_is_absolute",
    "_match_key",
    "_relative_to",
    "_resolve",
    "build_index",
    "default_index_url",
    "find_index",
    "index_one",
    "load_index",
    "scan_shard",
    "scan_shard_offsets",
]
