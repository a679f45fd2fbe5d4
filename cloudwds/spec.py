"""YAML / JSON dataset specs: several shard collections, mixed sample by sample in set proportions.

A spec names shard collections and how much of each to use::

    dataset:
      - shards: gs://bucket/ia1-{000000..000033}.tar
        scaleprob: 0.3
      - shards: s3://other/cdipsub-{000000..000022}.tar
        scale: [1.0, 3.0]
      - name: binarized
        shards: bin-gsub-{000000..000167}.tar     # relative: next to the spec file
        extensions: nrm.jpg txt
        weight: 50

``WebDataset("train.yaml")`` (or ``.yml``/``.json``, at any URL) reads it through
:func:`load_spec` and draws its samples from :class:`MixedSource`. This module parses and
validates; the mixing source (how collections are mixed) is :mod:`cloudwds.sources.mixed`.

Semantics (the webdataset README shows the syntax but leaves the meaning open; these are ours):

``shards`` (required)
    A brace pattern, a ``::`` list or a list of them; any URL the storage layer opens. Relative
    paths are relative to the directory of the spec file. ``pipe:`` shards are refused unless
    the caller passes ``allow_pipe=True`` (a spec is data and must not run commands), and so
    is a URL with shell syntax that a rewrite (``WDS_REWRITE``) would paste into a ``pipe:``
    command (:mod:`cloudwds.security`); both raise :class:`UnsafeSpecError`.
``weight`` (default: the number of shards)
    Relative share of the mix. The default makes an unweighted spec behave like concatenating
    the collections, each contributing in proportion to its size (if shard sizes are similar).
``scale`` (default 1)
    A weight multiplier: a number, or ``[lo, hi]`` drawn uniformly once per epoch (and per
    ``.repeat()`` cycle) from ``(seed, epoch)`` — the same value on every rank and worker.
``scaleprob`` (default 1)
    Subsampling: each sample drawn from the collection is kept with probability ``p`` and
    otherwise skipped. The collection's share of the output becomes ``weight * scale * p``
    (relative to the others) and only a fraction ``p`` of its samples is used in an epoch.
``extensions`` (default: keep every field)
    Space-separated fields to keep (a list works too); ``jpg;png`` keeps the first of the
    alternatives that is present, as in ``to_tuple``. A sample lacking every alternative of an
    item is skipped. Metadata (``__key__``, ``__url__``...) is always kept.
``name`` (default: the file name of the first shard pattern)
    Unique; it keys the resumable state and is added to each sample as ``__source__``.
``resampled`` (default false, or the top-level ``resampled``)
    Draw shards with replacement forever instead of reading each shard once per epoch.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import CloudWdsError, UnsafeInputError
from .index import _directory_of, _resolve
from .security import USER, check_data_url
from .storage import StorageConfig, open_shard
from .urls import Rewrite, expand_urls

if TYPE_CHECKING:
    from .sources.mixed import MixedSource

__all__ = [
    "CollectionSpec",
    "DatasetSpec",
    "MixedSource",
    "SpecError",
    "UnsafeSpecError",
    "is_spec_url",
    "load_spec",
    "parse_spec",
]

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
_ENTRY_KEYS = ("shards", "weight", "scale", "scaleprob", "extensions", "name", "resampled")
_TOP_KEYS = ("dataset", "resampled")


class SpecError(CloudWdsError, ValueError):
    """An invalid spec: ``file``, ``entry`` (index in ``dataset``) and ``field`` say where."""

    def __init__(
        self,
        file: str,
        entry: int | None,
        field: str | None,
        message: str,
        name: str | None = None,
    ):
        self.file = file
        self.entry = entry
        self.field = field
        self.message = message
        self.name = name
        super().__init__(file, entry, field, message)

    def __str__(self) -> str:
        where = [self.file]
        if self.entry is not None:
            where.append(
                f"dataset[{self.entry}]" + (f" ({self.name!r})" if self.name is not None else "")
            )
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return ": ".join(where) + ": " + self.message


class UnsafeSpecError(SpecError, UnsafeInputError):
    """A spec asked to run a command: a ``pipe:`` shard, or shell syntax a rewrite makes one.

    Both a :class:`SpecError` (``file``, ``entry``, ``field``) and an
    :class:`~cloudwds.errors.UnsafeInputError` (``url``: the refused shard URL).
    """

    def __init__(
        self,
        file: str,
        entry: int | None,
        field: str | None,
        message: str,
        name: str | None = None,
        url: str | None = None,
    ):
        # Not SpecError.__init__: its super() call would reach ShardError's signature.
        Exception.__init__(self, file, entry, field, message)
        self.file = file
        self.entry = entry
        self.field = field
        self.message = message
        self.name = name
        self.url = url
        self.member = None

    def __reduce__(self) -> Any:
        return (
            type(self),
            (self.file, self.entry, self.field, self.message, self.name, self.url),
        )


@dataclass(frozen=True)
class CollectionSpec:
    """One shard collection of a spec, validated; ``shards`` are expanded, resolved URLs."""

    name: str
    shards: tuple[str, ...]
    weight: float
    scale: tuple[float, float] = (1.0, 1.0)
    scaleprob: float = 1.0
    extensions: tuple[tuple[str, ...], ...] | None = None
    resampled: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """A validated spec: where it came from and its collections in file order."""

    source: str
    collections: tuple[CollectionSpec, ...]

    def urls(self) -> list[str]:
        """Every shard URL of every collection."""
        return [u for c in self.collections for u in c.shards]

    def collection(self, name: str) -> CollectionSpec:
        for c in self.collections:
            if c.name == name:
                return c
        raise KeyError(name)


def is_spec_url(urls: Any) -> bool:
    """Whether a ``WebDataset`` argument names a spec file (``.yaml``, ``.yml``, ``.json``)."""
    if isinstance(urls, os.PathLike):
        urls = os.fspath(urls)
    if not isinstance(urls, str) or "::" in urls or "{" in urls:
        return False
    return urls.lower().endswith(SPEC_SUFFIXES)


def load_spec(
    path_or_url: str | os.PathLike[str],
    allow_pipe: bool = False,
    storage: StorageConfig | None = None,
) -> DatasetSpec:
    """Read and validate a YAML or JSON spec from a path or any URL the storage layer opens.

    JSON is parsed as JSON when the name ends in ``.json``, anything else as YAML. Every
    problem raises :class:`SpecError` naming the file, the entry and the field.
    """
    source = os.fspath(path_or_url)
    if source.startswith("pipe:") and not allow_pipe:
        raise SpecError(source, None, None, "reading a spec through pipe: needs allow_pipe=True")
    storage = storage or StorageConfig.resolve()
    with open_shard(source, storage) as opened:
        raw = opened.stream.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exn:
        raise SpecError(source, None, None, f"not UTF-8 text: {exn}") from None
    if source.lower().endswith(".json"):
        try:
            doc = json.loads(text)
        except ValueError as exn:
            raise SpecError(source, None, None, f"invalid JSON: {exn}") from None
    else:
        import yaml

        try:
            doc = yaml.safe_load(io.StringIO(text))
        except yaml.YAMLError as exn:
            raise SpecError(source, None, None, f"invalid YAML: {exn}".replace("\n", " ")) from None
    return parse_spec(
        doc,
        source,
        allow_pipe=allow_pipe,
        base=_directory_of(source),
        rewrites=storage.rewrites,
    )


def parse_spec(
    doc: Any,
    source: str = "<spec>",
    allow_pipe: bool = False,
    base: str | None = None,
    rewrites: Iterable[Rewrite] = (),
) -> DatasetSpec:
    """Validate a parsed spec document; relative shard paths are resolved against ``base``.

    Every shard URL goes through :func:`cloudwds.security.check_data_url` with ``rewrites``
    (the rules the URLs will be opened with), so a spec that would run a command is refused
    here, naming the entry and the URL, before anything is opened.
    """
    rewrites = tuple(rewrites)
    if not isinstance(doc, Mapping):
        raise SpecError(source, None, None, "expected a mapping with a 'dataset:' list")
    unknown = [k for k in doc if k not in _TOP_KEYS]
    if unknown:
        raise SpecError(
            source, None, str(unknown[0]), f"unknown key (allowed: {', '.join(_TOP_KEYS)})"
        )
    default_resampled = doc.get("resampled", False)
    if not isinstance(default_resampled, bool):
        raise SpecError(
            source, None, "resampled", f"must be true or false, got {default_resampled!r}"
        )
    entries = doc.get("dataset")
    if not isinstance(entries, list) or not entries:
        raise SpecError(source, None, "dataset", "must be a non-empty list of collections")
    collections = [
        _parse_entry(entry, i, source, allow_pipe, base, default_resampled, rewrites)
        for i, entry in enumerate(entries)
    ]
    seen: dict[str, int] = {}
    for i, c in enumerate(collections):
        if c.name in seen and "name" not in entries[i]:  # a derived name: make it unique
            c = collections[i] = dataclasses.replace(c, name=f"{c.name}#{i}")
        if c.name in seen:
            raise SpecError(
                source,
                i,
                "name",
                f"name {c.name!r} is already used by dataset[{seen[c.name]}]; names must be unique",
                c.name,
            )
        seen[c.name] = i
    if all(c.weight * c.scale[1] * c.scaleprob <= 0 for c in collections):
        raise SpecError(source, None, "dataset", "every collection has weight 0: nothing to read")
    return DatasetSpec(source, tuple(collections))


def _parse_entry(
    entry: Any,
    i: int,
    source: str,
    allow_pipe: bool,
    base: str | None,
    default_resampled: bool,
    rewrites: tuple[Rewrite, ...],
) -> CollectionSpec:
    if not isinstance(entry, Mapping):
        raise SpecError(source, i, None, f"expected a mapping with 'shards:', got {entry!r}")
    name = entry.get("name")
    label = name if isinstance(name, str) else None

    def fail(field: str | None, message: str) -> SpecError:
        return SpecError(source, i, field, message, label)

    unknown = [k for k in entry if k not in _ENTRY_KEYS]
    if unknown:
        raise fail(str(unknown[0]), f"unknown key (allowed: {', '.join(_ENTRY_KEYS)})")
    if "shards" not in entry:
        raise fail("shards", "missing (a brace pattern or a list of URLs)")
    patterns = entry["shards"]
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise fail("shards", f"must be a URL pattern or a list of them, got {entry['shards']!r}")
    urls: list[str] = []
    for pattern in patterns:
        for part in pattern.split("::"):
            try:
                urls.extend(expand_urls(_resolve(part, base) if part else part))
            except (TypeError, ValueError) as exn:
                raise fail("shards", f"cannot expand {part!r}: {exn}") from None
    if not urls:
        raise fail("shards", "the pattern expands to no URLs")
    origin = USER if allow_pipe else f"spec {source} dataset[{i}]"
    for url in urls:
        try:
            check_data_url(url, origin=origin, rewrites=rewrites)
        except UnsafeInputError as exn:
            hint = "" if allow_pipe else " (pass allow_pipe=True only if you trust this spec)"
            raise UnsafeSpecError(
                source, i, "shards", f"{exn.message}: {url!r}{hint}", label, url
            ) from None

    if name is None:
        name = _default_name(patterns[0], i)
    elif not isinstance(name, str) or not name:
        raise fail("name", f"must be a non-empty string, got {name!r}")

    weight = entry.get("weight", len(urls))
    if not _is_number(weight) or weight < 0:
        raise fail("weight", f"must be a number >= 0, got {weight!r}")

    scale = entry.get("scale", 1.0)
    if _is_number(scale):
        if scale < 0:
            raise fail("scale", f"must be >= 0, got {scale!r}")
        lo = hi = float(scale)
    elif (
        isinstance(scale, list)
        and len(scale) == 2
        and all(_is_number(x) for x in scale)
        and 0 <= scale[0] <= scale[1]
    ):
        lo, hi = float(scale[0]), float(scale[1])
    else:
        raise fail("scale", f"must be a number or [lo, hi] with 0 <= lo <= hi, got {scale!r}")

    scaleprob = entry.get("scaleprob", 1.0)
    if not _is_number(scaleprob) or not 0 <= scaleprob <= 1:
        raise fail("scaleprob", f"must be a probability in [0, 1], got {scaleprob!r}")

    extensions = None
    if "extensions" in entry:
        value = entry["extensions"]
        strings = isinstance(value, list) and all(isinstance(x, str) for x in value)
        words = " ".join(value) if strings else value
        if not isinstance(words, str):
            raise fail("extensions", f"must be a string like 'jpg;png cls' or a list: {value!r}")
        items = words.split()
        parsed = tuple(
            tuple(a.strip().lstrip(".").lower() for a in item.split(";") if a.strip())
            for item in items
        )
        if not parsed or not all(parsed):
            raise fail("extensions", f"names no fields: {value!r}")
        extensions = parsed

    resampled = entry.get("resampled", default_resampled)
    if not isinstance(resampled, bool):
        raise fail("resampled", f"must be true or false, got {resampled!r}")

    return CollectionSpec(
        name=name,
        shards=tuple(urls),
        weight=float(weight),
        scale=(lo, hi),
        scaleprob=float(scaleprob),
        extensions=extensions,
        resampled=resampled,
    )


def _default_name(pattern: str, i: int) -> str:
    """``gs://b/ia1-{000000..000033}.tar`` → ``ia1``; ``rendered.tar`` → ``rendered``."""
    base = pattern.split("::")[0].rstrip("/").rsplit("/", 1)[-1].split("{")[0]
    for suffix in (".tar.gz", ".tgz", ".tar"):
        base = base.removesuffix(suffix)
    return base.rstrip("-_.") or f"dataset{i}"


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x  # not NaN


def __getattr__(name: str) -> Any:
    """``MixedSource``, ``STATE_VERSION``: lazily, as :mod:`.sources.mixed` imports this module."""
    if name in ("MixedSource", "STATE_VERSION"):
        from .sources import mixed

        return getattr(mixed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
