"""The manifest model: :class:`Manifest` and :class:`ShardInfo`, their JSON form, loading,
saving and finding a manifest, and the relative/absolute URL rules (see :mod:`cloudwds.index`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import StorageError, UrlError
from ..security import USER, check_data_url
from ..storage import StorageConfig, open_shard, write_output
from ..storage.local import local_path_of
from ..urls import Rewrite, expand_urls

INDEX_NAME = "cloudwds-index.json"
FORMAT = "cloudwds-index"
VERSION = 1


class ManifestError(UrlError, ValueError):
    """A manifest that cannot be read: not JSON, not a cloudwds index, or a newer version."""


@dataclass
class ShardInfo:
    """One shard of a manifest: its URL, sample and member counts, stored size and checksum."""

    url: str
    samples: int
    bytes: int
    sha256: str | None = None
    members: int = 0
    offsets: str | None = None  # URL of the shard's offsets (.idx) file, if recorded
    compressed: bool = False  # gzip: no random access


@dataclass
class Manifest:
    """Shard list with per-shard counts; ``url`` is where it was loaded from or last saved to."""

    version: int = VERSION
    shards: list[ShardInfo] = field(default_factory=list)
    url: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self._by_url: dict[str, ShardInfo] | None = None

    @property
    def total_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def counts(self) -> dict[str, int]:
        """``{shard url: number of samples}`` in manifest order."""
        return {s.url: s.samples for s in self.shards}

    def get(self, url: str) -> ShardInfo | None:
        """The entry for ``url``; local paths match however they are spelled (relative, file:)."""
        if self._by_url is None or len(self._by_url) != len(self.shards):
            self._by_url = {_match_key(s.url): s for s in self.shards}
        return self._by_url.get(_match_key(url))

    def covers(self, urls: str | Iterable[str]) -> bool:
        """Whether every shard of ``urls`` (a spec or a list) has an entry."""
        return all(self.get(u) is not None for u in expand_urls(urls))

    def to_json(self, base: str | None = None) -> dict[str, Any]:
        """The JSON document, with shard URLs made relative to the directory ``base``."""
        shards = []
        for s in self.shards:
            entry = {
                "url": _relative_to(s.url, base),
                "samples": s.samples,
                "bytes": s.bytes,
                "sha256": s.sha256,
                "members": s.members,
            }
            if s.offsets is not None:
                entry["offsets"] = _relative_to(s.offsets, base)
            if s.compressed:
                entry["compressed"] = True
            shards.append(entry)
        checksum = "sha256" if any(s.sha256 for s in self.shards) else None
        return {
            "format": FORMAT,
            "version": self.version,
            "checksum": checksum,
            "num_shards": len(self.shards),
            "total_samples": self.total_samples,
            "total_bytes": self.total_bytes,
            "shards": shards,
        }

    @classmethod
    def from_json(
        cls,
        doc: Any,
        url: str | None = None,
        *,
        allow_pipe: bool = False,
        rewrites: Iterable[Rewrite] = (),
    ) -> Manifest:
        """Parse a manifest document; relative shard URLs are resolved against ``url``'s directory.

        Each shard URL is checked with :func:`cloudwds.security.check_data_url` (``rewrites``:
        the rules the shards will be opened with); ``allow_pipe=True`` accepts ``pipe:`` entries
        of a manifest you wrote yourself.
        """
        rewrites = tuple(rewrites)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ManifestError(f'not a cloudwds index (no "format": "{FORMAT}")', url)
        version = doc.get("version")
        if not isinstance(version, int) or version < 1:
            raise ManifestError(f"bad manifest version {version!r}", url)
        if version > VERSION:
            raise ManifestError(
                f"manifest version {version} is newer than this cloudwds reads ({VERSION})", url
            )
        base = _directory_of(url) if url is not None else None
        shards = []
        for i, entry in enumerate(doc.get("shards") or []):
            try:
                shards.append(
                    ShardInfo(
                        url=_resolve(str(entry["url"]), base),
                        samples=int(entry["samples"]),
                        bytes=int(entry["bytes"]),
                        sha256=entry.get("sha256"),
                        members=int(entry.get("members", 0)),
                        offsets=(
                            _resolve(str(entry["offsets"]), base)
                            if entry.get("offsets") is not None
                            else None
                        ),
                        compressed=bool(entry.get("compressed", False)),
                    )
                )
            except (KeyError, TypeError, ValueError) as exn:
                raise ManifestError(
                    f"bad entry shards[{i}]: {type(exn).__name__}: {exn}", url
                ) from None
            origin = USER if allow_pipe else f"manifest {url or '<document>'} shards[{i}]"
            for checked in (shards[-1].url, shards[-1].offsets):
                if checked is None:
                    continue
                check_data_url(
                    checked,
                    origin=origin,
                    rewrites=rewrites,
                    hint="load_index(..., allow_pipe=True) accepts a manifest you wrote yourself",
                )
        return cls(version=version, shards=shards, url=url)

    def save(self, url_or_path: str | None = None, storage: StorageConfig | None = None) -> str:
        """Write the manifest atomically (it appears complete or not at all); returns its URL.

        Without a target it goes to where it was loaded from, else to
        :func:`default_index_url` of its shards. ``-`` writes to stdout.
        """
        target = url_or_path or self.url or default_index_url([s.url for s in self.shards])
        base = None if target == "-" else _directory_of(target)
        data = (json.dumps(self.to_json(base), indent=1) + "\n").encode("utf-8")
        write_output(target, data, storage or StorageConfig.resolve())
        if target != "-":
            self.url = target
        return target


def load_index(
    url_or_path: str, storage: StorageConfig | None = None, *, allow_pipe: bool = False
) -> Manifest:
    """Read a manifest from any URL the storage layer opens; shard URLs come back resolved.

    ``pipe:`` entries are refused unless ``allow_pipe=True`` (see :meth:`Manifest.from_json`).
    """
    storage = storage or StorageConfig.resolve()
    with open_shard(url_or_path, storage) as opened:
        data = opened.stream.read()
    try:
        doc = json.loads(data)
    except ValueError as exn:
        raise ManifestError(f"manifest is not valid JSON: {exn}", url_or_path) from None
    return Manifest.from_json(doc, url_or_path, allow_pipe=allow_pipe, rewrites=storage.rewrites)


def default_index_url(shard_urls: str | Iterable[str]) -> str:
    """``cloudwds-index.json`` in the deepest directory that contains every shard.

    Local shards give an absolute path; object-store shards must share a scheme and bucket.
    Raises ``ValueError`` for ``pipe:``/stdin shards or shards with no common directory.
    """
    urls = expand_urls(shard_urls)
    if not urls:
        raise ValueError("no shard URLs")
    dirs = []
    for url in urls:
        d = _directory_of(url)
        if d is None:
            raise ValueError(f"{url!r} has no directory to hold an index")
        dirs.append(d)
    local = [local_path_of(u) is not None for u in urls]
    if all(local):
        return os.path.join(os.path.commonpath(dirs), INDEX_NAME)
    if any(local):
        raise ValueError("shards are partly local and partly remote: no common directory")
    parts = [d.split("/") for d in dirs]
    common: list[str] = []
    for column in zip(*parts):
        if any(c != column[0] for c in column):
            break
        common.append(column[0])
    if len(common) < 3 or not common[2]:  # "scheme:", "", "bucket"
        raise ValueError(f"shards have no common bucket or host: {dirs[0]!r} ...")
    return "/".join(common) + "/" + INDEX_NAME


def find_index(
    shard_urls: str | Iterable[str], storage: StorageConfig | None = None
) -> Manifest | None:
    """The manifest at :func:`default_index_url` of the shards, or ``None`` if there is none.

    The manifest may list other shards too; use :meth:`Manifest.covers` to check it has all of
    yours. An index that exists but cannot be parsed raises :class:`ManifestError`.
    """
    try:
        url = default_index_url(shard_urls)
    except ValueError:
        return None
    try:
        return load_index(url, storage)
    except StorageError as exn:
        if isinstance(exn.__cause__, FileNotFoundError):
            return None
        raise


# ---------------------------------------------------------------------------------------------
# relative and absolute URLs
# ---------------------------------------------------------------------------------------------


def _directory_of(url: str) -> str | None:
    """The directory of a URL (absolute for local paths); ``None`` for ``-`` and ``pipe:``."""
    if url == "-" or url.startswith("pipe:"):
        return None
    path = local_path_of(url)
    if path is not None:
        return os.path.dirname(os.path.abspath(path))
    head, sep, _ = url.rpartition("/")
    return head if sep else None


def _is_absolute(url: str) -> bool:
    return (
        url.startswith(("/", "pipe:", "file:"))
        or url == "-"
        or "://" in url
        or (len(url) > 1 and url[1] == ":")  # C:\ on Windows
    )


def _relative_to(url: str, base: str | None) -> str:
    """``url`` relative to directory ``base`` when it lies under it; absolute otherwise."""
    path = local_path_of(url)
    if path is not None:
        path = os.path.abspath(path)
        if base is not None and local_path_of(base) is not None:
            prefix = base.rstrip(os.sep) + os.sep
            if path.startswith(prefix):
                return path[len(prefix) :].replace(os.sep, "/")
        return path
    if base is not None and url.startswith(base.rstrip("/") + "/"):
        return url[len(base.rstrip("/")) + 1 :]
    return url


def _resolve(url: str, base: str | None) -> str:
    if _is_absolute(url) or base is None:
        return url
    if local_path_of(base) is not None:
        return os.path.join(base, url)
    return base.rstrip("/") + "/" + url


def _match_key(url: str) -> str:
    path = local_path_of(url)
    return os.path.abspath(path) if path is not None else url
