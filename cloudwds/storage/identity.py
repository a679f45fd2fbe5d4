"""What identifies a shard's *content*, cheaply: for remembering per-shard facts (sample counts).

A local file is identified by its absolute path, size and modification time. A remote object by
its URL, size and whatever version marker its store lists (S3 ``ETag``, GCS ``etag`` and
``generation``, Azure ``etag``, last-modified times; plain HTTP gives only the size). Asking
each object for its ETag would cost one request per shard, so :func:`object_identities` lists
each distinct parent "directory" once instead — one paged LIST per bucket prefix for thousands
of shards — and reads every shard's entry from that listing. When a listing fails or does not
show the shard (a server without directory listings, no list permission), the identity is the
URL alone: callers then trust what they remembered, as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import StorageError
from .config import StorageConfig
from .target import resolve_target

__all__ = ["local_identity", "object_identities"]

log = logging.getLogger("cloudwds.storage")

# Listing keys that change when an object is replaced, per client library, under one name each.
_VERSION_KEYS = {
    "ETag": "etag",  # s3fs
    "etag": "etag",  # gcsfs, adlfs
    "generation": "generation",  # gcsfs
    "VersionId": "version",  # s3fs on versioned buckets
    "version_id": "version",  # adlfs
    "LastModified": "modified",  # s3fs
    "last_modified": "modified",  # adlfs
    "updated": "modified",  # gcsfs
    "mtime": "modified",  # local-like fsspec file systems
}


def local_identity(path: str) -> dict[str, Any]:
    """``{"url": abspath, "size", "mtime_ns"}`` (just the path if the file is gone)."""
    path = os.path.abspath(path)
    try:
        st = os.stat(path)
    except OSError:  # gone: nothing says it changed (reading it will fail on its own)
        return {"url": path}
    return {"url": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def object_identities(urls: Sequence[str], config: StorageConfig) -> list[dict[str, Any]]:
    """One identity dict per URL (see the module doc), listing each parent directory once.

    Every dict has ``"url"`` (absolute for local files); the other keys are present only when
    known. URLs that are not files or objects (``pipe:``, ``-``) or cannot be resolved get
    ``{"url": url}``.
    """
    out: list[dict[str, Any]] = [{"url": url} for url in urls]
    groups: dict[tuple[int, str], tuple[Any, list[tuple[int, str]]]] = {}
    for k, url in enumerate(urls):
        try:
            target = resolve_target(url, config)
            if target.local_path is not None:
                out[k] = local_identity(target.local_path)
                continue
            if not target.remote:
                continue
            fs, path = target.backend.filesystem(target)
        except (StorageError, ValueError):
            continue  # opening it will say what is wrong
        path = path.rstrip("/")
        parent = path.rsplit("/", 1)[0] if "/" in path else path
        groups.setdefault((id(fs), parent), (fs, []))[1].append((k, path))
    for (_, parent), (fs, members) in groups.items():
        listing = _listing(fs, parent, config, urls[members[0][0]])
        for k, path in members:
            entry = listing.get(path)
            if entry is not None:
                out[k] = {"url": urls[k], **_version_of(entry)}
    return out


def _listing(fs: Any, parent: str, config: StorageConfig, url: str) -> dict[str, Mapping[str, Any]]:
    """``path → listing entry`` for one directory, fresh (not fsspec's listings cache); ``{}``
    when it cannot be listed."""

    def fresh_listing() -> Any:
        fs.invalidate_cache(parent)  # s3fs/gcsfs/adlfs keep listings; a stale one hides changes
        return fs.ls(parent, detail=True)

    try:
        entries = config.retry.run("list", url, fresh_listing)
    except StorageError as exn:
        log.debug("cannot list %s (%s): identities fall back to URLs", parent, exn)
        return {}
    listing: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            listing[entry["name"].rstrip("/")] = entry
    return listing


def _version_of(entry: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    size = entry.get("size")
    if isinstance(size, int) and not isinstance(size, bool):
        found["size"] = size
    for key, name in _VERSION_KEYS.items():
        value = entry.get(key)
        if value is not None and name not in found:
            found[name] = value if isinstance(value, int | str) else str(value)
    return found
