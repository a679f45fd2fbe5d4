"""Build a ShardCache from explicit arguments and, where they are missing, the environment.

The environment is read here, at the call, and only for arguments left as ``None``: an explicit
argument always wins (webdataset lets ``WDS_CACHE`` override an explicit ``cache_dir``; we do
not), and nothing is read at import time.

==================  =====================================================
``WDS_CACHE``        cache directory (unset or empty: no cache)
``WDS_CACHE_SIZE``   budget in bytes or ``50G``/``500M``/``1.5T``/``10GB``
``WDS_VERBOSE_CACHE`` ``1``/``true``/``yes``/``on`` to log cache activity at INFO
==================  =====================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .shardcache import ShardCache
from .sizes import parse_size

__all__ = ["resolve_cache"]

_TRUE = frozenset({"1", "true", "yes", "on"})


def resolve_cache(
    cache_dir: str | os.PathLike[str] | None = None,
    cache_size: int | str | None = None,
    verbose: bool | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ShardCache | None:
    """The ShardCache to use, or ``None`` for no caching.

    ``cache_dir=None`` falls back to ``WDS_CACHE``; ``cache_dir=""`` disables caching even when
    ``WDS_CACHE`` is set. ``cache_size`` and ``verbose`` fall back to ``WDS_CACHE_SIZE`` and
    ``WDS_VERBOSE_CACHE`` the same way. A malformed ``WDS_CACHE_SIZE`` raises ``ValueError``
    naming the variable.
    """
    directory = os.fspath(cache_dir) if cache_dir is not None else environ.get("WDS_CACHE", "")
    if not directory:
        return None
    size, verbose = size_and_verbosity(cache_size, verbose, environ)
    return ShardCache(directory, cache_size=size, verbose=verbose)


def size_and_verbosity(
    cache_size: int | str | None, verbose: bool | None, environ: Mapping[str, str]
) -> tuple[int | None, bool]:
    """The budget and verbosity: the arguments, else ``WDS_CACHE_SIZE`` / ``WDS_VERBOSE_CACHE``.

    A malformed ``WDS_CACHE_SIZE`` raises ``ValueError`` naming the variable.
    """
    size: int | None
    if cache_size is not None:
        size = parse_size(cache_size)
    elif environ.get("WDS_CACHE_SIZE", "").strip():
        try:
            size = parse_size(environ["WDS_CACHE_SIZE"])
        except ValueError as exn:
            raise ValueError(f"WDS_CACHE_SIZE: {exn}") from None
    else:
        size = None
    if verbose is None:
        verbose = environ.get("WDS_VERBOSE_CACHE", "").strip().lower() in _TRUE
    return size, verbose
