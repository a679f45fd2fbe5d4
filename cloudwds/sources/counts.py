"""Samples per shard for exact epochs: from an index, or counted once and remembered.

An exact epoch plans sample ranges, so it needs every shard's sample count before reading.
:func:`shard_counts` takes them from a manifest (``cloudwds index``) when there is one; else it
counts the shards once and remembers the counts per shard *identity* (:func:`shard_identity`),
so a shard regenerated in place is recounted and an unchanged one is not read again.
(Moved here from ``cloudwds/exact.py``, which re-exports these names.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from ..storage import StorageConfig, object_identities
from ..storage.identity import local_identity

__all__ = ["COUNTS_VERSION", "shard_counts", "shard_identity"]


def shard_counts(urls: Sequence[str], storage: StorageConfig, index: Any = None) -> list[int]:
    """Samples per shard, from ``index`` (a Manifest or its URL), the shards' own index, or a count.

    Counting reads every shard once (through the cache, if any) and is remembered in
    ``$XDG_CACHE_HOME/cloudwds/counts/`` per shard identity (:func:`shard_identity`), so it
    happens once per dataset and machine, and again only for shards that changed. Run ``cloudwds index`` to write a shared index instead.
    """
    from ..index import Manifest, find_index, load_index

    manifest = None
    if isinstance(index, Manifest):
        manifest = index
    elif index is not None:
        manifest = load_index(os.fspath(index), storage)
    else:
        manifest = find_index(urls, storage)
    if manifest is not None:
        infos = [manifest.get(u) for u in urls]
        if all(i is not None for i in infos):
            return [i.samples for i in infos]  # type: ignore[union-attr]
        if index is not None:
            missing = [u for u, i in zip(urls, infos) if i is None]
            raise ValueError(f"the index does not list {len(missing)} shards, e.g. {missing[0]!r}")
    return _remembered_counts(list(urls), storage)


def shard_identity(url: str, storage: StorageConfig | None = None) -> dict[str, Any]:
    """What identifies a shard's content for remembered counts.

    Local files: the absolute path (so relative URLs from different working directories never
    share an entry), size and modification time (so a shard regenerated in place is
    recounted). Remote objects, given ``storage``: the URL, size and ETag/generation/last
    modified time from a listing of its directory
    (:func:`cloudwds.storage.object_identities`, which lists each directory once for a whole
    shard list); without ``storage``, or when listing fails, the URL alone.
    """
    local = _local_path(url)
    if local is None:
        return object_identities([url], storage)[0] if storage is not None else {"url": url}
    return local_identity(local)


def _local_path(url: str) -> str | None:
    if url.startswith("file://"):
        return url[len("file://") :]
    if url.startswith("file:"):
        return url[len("file:") :]
    if "://" in url or url.startswith("pipe:") or url == "-":
        return None
    return url


def _remembered_counts(urls: list[str], storage: StorageConfig) -> list[int]:
    """Counts remembered per shard identity; only shards that changed (or are new) are read."""
    from ..index import build_index

    # One place per user, whatever shard cache is configured: entries are keyed by content
    # identity, so they are valid for any cache (and survive a cache being cleared).
    root = os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cloudwds"
    )
    identities = object_identities(urls, storage)  # one LIST per remote directory
    names = [i["url"] for i in identities]
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()
    remembered = os.path.join(os.fspath(root), "counts", f"{digest}.json")
    known: list[int | None] = [None] * len(urls)
    try:
        with open(remembered) as f:
            doc = json.load(f)
        if doc.get("version") == COUNTS_VERSION and doc.get("urls") == names:
            for k, (then, count) in enumerate(zip(doc["identities"], doc["counts"])):
                now = identities[k]
                if then == now or (then["url"] == now["url"] and len(now) == 1):
                    known[k] = int(count)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    stale = [k for k, c in enumerate(known) if c is None]
    if stale:
        logging.getLogger("cloudwds").info(
            "counting samples of %d shards for exact epochs", len(stale)
        )
        counted = build_index([urls[k] for k in stale], storage, checksum=None)
        for k, info in zip(stale, counted.shards):
            known[k] = info.samples
    counts = [int(c) for c in known if c is not None]
    if not stale:
        return counts
    try:
        os.makedirs(os.path.dirname(remembered), exist_ok=True)
        tmp = f"{remembered}.{os.getpid()}.part"
        with open(tmp, "w") as f:
            doc = {"version": COUNTS_VERSION, "urls": names, "identities": identities}
            json.dump({**doc, "counts": counts}, f)
        os.replace(tmp, remembered)
    except OSError:
        pass
    return counts


COUNTS_VERSION = 2  # 1 was keyed by the URL list only
