"""Caching remote shards by default: where, how much, how to say so, and how to turn it off.

A desktop user who opens ``s3://…`` twice should not download every shard twice (the webdataset
README promises "local copies are downloaded and cached"; litdata and mosaic-streaming do the
same). So when neither ``cache_dir=`` nor ``WDS_CACHE`` says anything, remote shards go to a
per-user cache; local files and ``pipe:`` are never copied (the storage layer only hands remote
URLs to the cache).

The rules, decided here and documented in docs/caching:

* **Where:** ``$XDG_CACHE_HOME/cloudwds/shards``, or ``~/.cache/cloudwds/shards`` when
  ``XDG_CACHE_HOME`` is unset or empty (the XDG base-directory convention; macOS users get the
  same ``~/.cache`` path as Linux users, which is what pip and Hugging Face do there as well).
* **How much:** ``min(10 GiB, 10 % of the free space)`` of the file system that would hold the
  directory, measured once when the dataset is built, so the default can never fill a disk;
  ``cache_size=`` / ``WDS_CACHE_SIZE`` replace it. Only what the cache itself downloaded counts
  (see :class:`~cloudwds.cache.ShardCache`), and the least recently used shards are evicted.
* **Saying so:** the first time the default cache is used in a process, one log line on the
  ``cloudwds.cache`` logger at WARNING (visible without any logging set-up) names the directory,
  the budget and the opt-out. DataLoader workers are separate processes; each says it once.
* **Opting out:** ``cache_dir=False`` on :class:`~cloudwds.WebDataset` (and everything that
  takes ``cache_dir``), or ``WDS_CACHE`` set to ``off``/``0``/``false``/``no``/``none`` or to the
  empty string. An explicit ``cache_dir`` or a ``WDS_CACHE`` directory wins as before.

Nothing is created on disk until a remote shard is actually read: building a dataset over local
files leaves ``~/.cache`` untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Mapping
from typing import Any

from .shardcache import Fetch, ShardCache
from .sizes import format_size

__all__ = [
    "DEFAULT_BUDGET",
    "FREE_SPACE_FRACTION",
    "OFF_VALUES",
    "DefaultShardCache",
    "default_budget",
    "default_cache",
    "default_cache_dir",
    "env_disables_cache",
    "storage_cache",
]

log = logging.getLogger("cloudwds.cache")

DEFAULT_BUDGET = 10 << 30
"""The largest default budget (10 GiB): a few epochs of a mid-sized dataset, not a whole disk."""

FREE_SPACE_FRACTION = 0.10
"""The default budget never exceeds this share of the free space when the dataset is built."""

OFF_VALUES = frozenset({"", "0", "off", "false", "no", "none"})
"""``WDS_CACHE`` values (any case, surrounding spaces ignored) that mean "stream, cache nothing"."""

_announced = False  # one log line per process
_announce_lock = threading.Lock()


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> str:
    """``$XDG_CACHE_HOME/cloudwds/shards``, else ``~/.cache/cloudwds/shards``."""
    base = environ.get("XDG_CACHE_HOME", "").strip()
    if not base or not os.path.isabs(os.path.expanduser(base)):
        # the XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.expanduser(base), "cloudwds", "shards")


def _free_bytes(path: str) -> int:
    """Free bytes on the file system that holds ``path`` (or would, once it is created)."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return 0


def default_budget(cache_dir: str) -> int:
    """``min(DEFAULT_BUDGET, FREE_SPACE_FRACTION × free space)`` for ``cache_dir``, in bytes."""
    return min(DEFAULT_BUDGET, int(_free_bytes(cache_dir) * FREE_SPACE_FRACTION))


def env_disables_cache(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``WDS_CACHE`` is set to one of :data:`OFF_VALUES` (unset does not disable)."""
    value = environ.get("WDS_CACHE")
    return value is not None and value.strip().lower() in OFF_VALUES


class DefaultShardCache(ShardCache):
    """A :class:`ShardCache` that announces itself once per process on first use.

    Only the announcement differs; a user who passes ``cache_dir=`` gets a plain ShardCache and
    no log line (they asked for it).
    """

    def _announce(self) -> None:
        global _announced
        with _announce_lock:
            if _announced:
                return
            _announced = True
        budget = "unbounded" if self.cache_size is None else format_size(self.cache_size)
        log.warning(
            "cloudwds: caching remote shards in %s (budget %s; least recently used shards are "
            "evicted). Set cache_dir=False or WDS_CACHE=off to stream without caching, "
            "cache_dir=/WDS_CACHE to choose the place, cache_size=/WDS_CACHE_SIZE the budget.",
            self.cache_dir,
            budget,
        )

    def open(self, url: str, fetch: Fetch) -> Any:
        self._announce()
        return super().open(url, fetch)

    def prefetch(self, url: str, fetch: Fetch, group: Any = None) -> None:
        self._announce()
        super().prefetch(url, fetch, group=group)


def default_cache(
    cache_size: int | None = None,
    verbose: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> DefaultShardCache:
    """The per-user default cache; ``cache_size=None`` means the default budget rule."""
    directory = default_cache_dir(environ)
    size = default_budget(directory) if cache_size is None else cache_size
    return DefaultShardCache(directory, cache_size=size, verbose=verbose)


def storage_cache(
    cache_dir: str | os.PathLike[str] | bool | None = None,
    cache_size: int | str | None = None,
    verbose: bool | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ShardCache | None:
    """The cache a dataset uses: explicit ``cache_dir``, else ``WDS_CACHE``, else the default.

    ``cache_dir=False`` (or ``""``) and ``WDS_CACHE=off`` (see :data:`OFF_VALUES`) mean no
    cache; ``cache_dir=True`` asks for the default cache even when ``WDS_CACHE`` says off.
    Explicit arguments and ``WDS_CACHE`` directories go through
    :func:`~cloudwds.cache.resolve_cache` unchanged.
    """
    from .resolve import resolve_cache, size_and_verbosity

    if cache_dir is False:
        return None
    if cache_dir is None and "WDS_CACHE" in environ:
        if env_disables_cache(environ):
            return None
        return resolve_cache(None, cache_size, verbose, environ=environ)
    if cache_dir is not None and cache_dir is not True:
        return resolve_cache(cache_dir, cache_size, verbose, environ=environ)
    # the default cache: size and verbosity follow the arguments, then the environment
    size, verbose = size_and_verbosity(cache_size, verbose, environ)
    return default_cache(size, verbose, environ)


def _reset_announcement() -> None:
    """Forget that this process announced the default cache (tests only)."""
    global _announced
    with _announce_lock:
        _announced = False
