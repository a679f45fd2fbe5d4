"""Where a URL lives inside the cache directory, and where the cache keeps its own bookkeeping.

The mapping is readable (``s3://bucket/a/b.tar`` is ``s3/bucket/a/b.tar``) so that a person can
pre-populate a cache with ``cp``/``rsync`` and inspect it with ``ls``, and it is *injective*: two
different URLs never share a file, whatever characters they contain. How:

* The first directory is the scheme, with aliases folded (``gcs`` → ``gs``; ``abfs``/``abfss``/
  ``az`` → ``az``), then the bucket/container/host, then the object path, one directory per
  ``/``-separated part.
* Each part is percent-escaped: only ``A-Z a-z 0-9 - _ . + = , @`` stay as they are, every other
  byte of its UTF-8 becomes ``%XX``. ``%`` itself is escaped, so the escaping can be undone, and
  no part can be ``..`` or start with ``.`` (a leading dot is escaped): nothing escapes the cache
  directory, and every dot-name in the tree belongs to the cache (temp files, ``.cloudwds/``).
* A query string (``?v=2``) stays in the last part as ``%3Fv=2``. An empty part (``a//b``) is
  written as a lone ``%``, which escaping can never produce.
* A part longer than 180 bytes after escaping keeps its first 140 bytes, then ``~`` and 32 hex
  digits of its SHA-256 (``~`` is always escaped elsewhere, so this cannot collide with a real name).
* HTTP hosts are lower-cased, credentials (``user:pass@``) are dropped, and ``host:port`` becomes
  ``host_port`` (a literal ``_`` in a host is escaped, so ``a_1`` and ``a:1`` stay apart).
* ``abfs://container@account.dfs.core.windows.net/p`` keeps the container and drops ``@account…``:
  the same container reached through two accounts shares its cache entries.
* Plain paths and ``file://`` URLs go under ``file/``; anything without ``://`` (``pipe:cmd``)
  becomes ``<scheme>/<whole rest as one escaped part>``.
"""

from __future__ import annotations

import hashlib
import os
import re
from types import MappingProxyType

__all__ = ["BOOKKEEPING_DIR", "CacheLayout", "url_to_key"]

BOOKKEEPING_DIR = ".cloudwds"
"""Directory (inside the cache dir) holding the index and the lock files; never a shard."""

# Scheme → first directory. Read-only: the layout of existing caches must not change under them.
SCHEME_DIRS = MappingProxyType(
    {
        "abfs": "az",
        "abfss": "az",
        "ais": "ais",
        "az": "az",
        "file": "file",
        "gcs": "gs",
        "gs": "gs",
        "http": "http",
        "https": "https",
        "s3": "s3",
        "s3a": "s3",
    }
)
_AZURE = frozenset({"abfs", "abfss", "az"})
_HTTP = frozenset({"http", "https"})

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+=,@")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(//)?")
_MAX_PART = 180  # bytes; leaves room under NAME_MAX (255) for the temp-file decoration
_KEEP_WHEN_LONG = 140


def _escape(part: str, extra_unsafe: bytes = b"") -> str:
    """Percent-escape one path part (see the module docstring for the rules)."""
    if part == "":
        return "%"
    raw = part.encode("utf-8", "surrogatepass")
    out = []
    for i, byte in enumerate(raw):
        keep = byte in _SAFE and byte not in extra_unsafe and not (i == 0 and byte == ord("."))
        out.append(chr(byte) if keep else f"%{byte:02X}")
    escaped = "".join(out)
    if len(escaped) > _MAX_PART:
        escaped = escaped[:_KEEP_WHEN_LONG] + "~" + hashlib.sha256(raw).hexdigest()[:32]
    return escaped


def _host_dir(netloc: str) -> str:
    """``user:pw@Host:8080`` → ``host_8080`` (credentials never reach the file system)."""
    hostport = netloc.rpartition("@")[2].lower()
    if hostport.startswith("["):  # IPv6 literal: [::1]:8080
        host, _, rest = hostport.partition("]")
        host += "]"
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    name = _escape(host, extra_unsafe=b"_")
    return f"{name}_{_escape(port)}" if port else name


def _escape_path(prefix: str, path: str, url: str) -> str:
    """Escape each ``/``-separated part of ``path`` (query kept in the last part), join to ``prefix``."""
    path, qmark, query = path.partition("?")
    parts = path.split("/") if path else [""]
    if qmark:
        parts[-1] += "?" + query
    if parts == [""]:
        raise ValueError(f"cannot map {url!r} to a cache path: no object name")
    return "/".join([prefix, *(_escape(p) for p in parts)])


def url_to_key(url: str) -> str:
    """Map a URL to its path relative to the cache directory (``/``-separated, never absolute).

    This key names the file, the per-shard lock and the index entry, so aliases that name the
    same object (``gcs://`` and ``gs://``) share all three. Raises ``ValueError`` for a URL that
    names no object (``s3://`` without a bucket, ``s3://bucket/``).
    """
    m = _SCHEME.match(url)
    if m is None or len(m.group(1)) == 1:  # a plain path (or a drive letter)
        return _escape_path("file", os.path.abspath(url).lstrip("/"), url)
    scheme, rest = m.group(1).lower(), url[m.end() :]
    if not m.group(2):  # opaque, e.g. pipe:curl -s http://x/y.tar (file:x is a relative path)
        if scheme == "file":
            return _escape_path("file", os.path.abspath(rest).lstrip("/"), url)
        return f"{SCHEME_DIRS.get(scheme) or _escape(scheme)}/{_escape(rest)}"
    top = SCHEME_DIRS.get(scheme) or _escape(scheme)
    netloc, _, path = rest.partition("/")
    if scheme == "file":
        if netloc not in ("", "localhost"):  # file://server/p: apart from every local path
            return _escape_path(f"file/{_escape('//' + netloc)}", path, url)
        return _escape_path("file", path, url)
    if scheme in _HTTP:
        netloc, qmark, query = netloc.partition("?")
        if qmark:  # http://host?x=1
            path = "?" + query
    if not netloc:
        raise ValueError(f"cannot map {url!r} to a cache path: no bucket, container or host")
    if scheme in _HTTP:
        first = _host_dir(netloc)
    elif scheme in _AZURE:
        first = _escape(netloc.partition("@")[0])
    else:
        first = _escape(netloc)
    return _escape_path(f"{top}/{first}", path, url)


class CacheLayout:
    """The cache directory's plan: shard files by :func:`url_to_key`, bookkeeping under ``.cloudwds/``.

    ``root/.cloudwds/index/`` is the diskcache index, ``root/.cloudwds/locks/<xx>/<sha>.lock`` the
    per-shard download locks (kept forever: zero bytes each, and deleting a lock file that another
    process may be about to lock would break mutual exclusion), ``root/.cloudwds/maintenance.lock``
    serialises eviction and scans, ``root/.cloudwds/last-scan`` records when the last scan ran.
    """

    def __init__(self, root: str):
        self.root = root
        self.meta = os.path.join(root, BOOKKEEPING_DIR)
        self.index_dir = os.path.join(self.meta, "index")
        self.locks_dir = os.path.join(self.meta, "locks")
        self.maintenance_lock = os.path.join(self.meta, "maintenance.lock")
        self.scan_stamp = os.path.join(self.meta, "last-scan")

    def __call__(self, url: str) -> str:
        """Absolute local path of ``url`` (fsspec-mapper style: the layout is a callable)."""
        return self.path(url_to_key(url))

    def path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def key_of_path(self, path: str) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def lock_path(self, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return os.path.join(self.locks_dir, digest[:2], f"{digest}.lock")  # 256 small dirs
