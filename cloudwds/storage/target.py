"""Each URL resolved once into a :class:`Target`: rewrites, back end, location, options.

Before, opening a remote shard applied ``WDS_REWRITE`` up to three times (``is_remote``, the
AIStore decision, the fetcher) and decided the scheme in if-chains in four modules. Now
:func:`resolve_target` does it once per URL and configuration: the rewrite (with its security
check), the back end from the registry (:mod:`.registry`), AIStore routing, and the back end's
``locate``. Opening, ``is_remote``, the cache key (the *original* URL), prefetching and sinks all
take the same frozen target.

Targets are remembered per :class:`~cloudwds.storage.config.StorageConfig` (a bounded memo
that is not pickled), so the epochs of a pipeline and its prefetches do not resolve a shard
again. The memo is dropped when a setting a target depends on is replaced on the config.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..urls import apply_rewrites
from .registry import AIS_ROUTE, StorageBackend, get_backend, registry_version, scheme_of

if TYPE_CHECKING:
    from .config import StorageConfig

__all__ = ["Target", "TargetMemo", "resolve_target"]


@dataclass(frozen=True, eq=False)
class Target:
    """One URL, resolved: what to open, with which back end and options.

    ``url`` is the URL as given (errors and the cache key use it), ``rewritten`` the URL after
    ``WDS_REWRITE``/``rewrites=``, ``scheme`` the registry key of ``rewritten``, ``location`` what
    the back end opens (an fsspec URL — the AIStore REST URL when routed —, a local path, a
    ``pipe:`` command) and ``options`` the fsspec storage options for it.
    """

    url: str
    rewritten: str
    scheme: str
    backend: StorageBackend
    location: str
    options: Mapping[str, Any] | None = None

    @property
    def remote(self) -> bool:
        """Cached, prefetched and retried (not ``-``, a local file or ``pipe:``)."""
        return self.backend.remote

    @property
    def local_path(self) -> str | None:
        """The local file this URL names, if it names one."""
        return self.location if self.backend.local_files else None

    @property
    def where(self) -> str:
        """The URL for messages: ``url`` or ``url (rewritten to ...)``."""
        return (
            self.url
            if self.rewritten == self.url
            else f"{self.url} (rewritten to {self.rewritten})"
        )


def resolve_target(url: str | Target, config: StorageConfig) -> Target:
    """Resolve ``url`` once for ``config`` (a :class:`Target` is returned as it is).

    Raises :class:`~cloudwds.errors.UnsafeInputError` for a rewrite that would paste shell
    syntax into a ``pipe:`` command, :class:`~cloudwds.errors.StorageError` (or ``ValueError``)
    for a URL its back end cannot locate (``ais://`` without an endpoint, a malformed AIStore
    URL). Failures are not remembered: the next call tries again and raises again.
    """
    if isinstance(url, Target):
        return url
    memo: TargetMemo = config.targets
    key = _settings(config)
    found = memo.get(url, key)
    if found is not None:
        return found
    rewritten = apply_rewrites(url, config.rewrites)
    scheme = scheme_of(rewritten)
    backend = get_backend(scheme)
    if config.ais_endpoint and scheme in config.use_ais_for:
        backend = AIS_ROUTE
    location, options = backend.locate(rewritten, config)
    target = Target(url, rewritten, scheme, backend, location, options)
    memo.put(url, key, target)
    return target


def _settings(config: StorageConfig) -> tuple[Any, ...]:
    """What a target depends on; a memo made under other settings is dropped."""
    return (
        config.rewrites,
        config.ais_endpoint,
        config.use_ais_for,
        id(config.storage_options),
        registry_version(),
    )


class TargetMemo:
    """A bounded, thread-safe ``url → Target`` memo; pickles empty (targets are cheap to redo).

    A forked child (a DataLoader worker) starts with a fresh lock, so a lock held by another
    thread at the moment of the fork cannot block it.
    """

    LIMIT = 1 << 16

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._mu = threading.Lock()
        self._settings: tuple[Any, ...] | None = None
        self._targets: dict[str, Target] = {}

    def _lock(self) -> threading.Lock:
        if self._pid != os.getpid():
            self._pid, self._mu = os.getpid(), threading.Lock()
        return self._mu

    def get(self, url: str, settings: tuple[Any, ...]) -> Target | None:
        with self._lock():
            if self._settings is None or not _same(self._settings, settings):
                return None
            return self._targets.get(url)

    def put(self, url: str, settings: tuple[Any, ...], target: Target) -> None:
        with self._lock():
            if self._settings is None or not _same(self._settings, settings):
                self._targets.clear()
                self._settings = settings
            if len(self._targets) >= self.LIMIT:
                del self._targets[next(iter(self._targets))]  # oldest first
            self._targets[url] = target

    def clear(self) -> None:
        with self._lock():
            self._targets.clear()
            self._settings = None

    def __len__(self) -> int:
        return len(self._targets)

    def __reduce__(self) -> tuple[type[TargetMemo], tuple[()]]:
        return (TargetMemo, ())

    def __repr__(self) -> str:
        return f"TargetMemo({len(self._targets)} targets)"


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return all(x is y or x == y for x, y in zip(a, b, strict=True))
