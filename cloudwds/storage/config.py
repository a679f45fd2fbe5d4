"""Everything that decides *how* a URL is opened, resolved once from arguments and environment.

Public entry points (``WebDataset``, ``DataPipeline`` sources, writers) build a
:class:`StorageConfig` when they are constructed and carry it (it pickles) into DataLoader
workers; nothing below reads ``os.environ`` at import time or per shard. Explicit arguments
always win over environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..urls import Rewrite, parse_rewrites, rewrites_from_env
from .ais import parse_use_ais_for
from .remote import BLOCK_SIZE, READAHEAD
from .retry import RetryPolicy
from .target import TargetMemo


@dataclass
class StorageConfig:
    """How to open URLs: fsspec options, rewrites, AIStore routing, shard cache, retries."""

    storage_options: Mapping[str, Any] | None = None
    rewrites: tuple[Rewrite, ...] = ()
    ais_endpoint: str | None = None
    use_ais_for: frozenset[str] = frozenset()
    cache: Any = None  # cloudwds.cache.ShardCache | None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    block_size: int = BLOCK_SIZE
    readahead: int = READAHEAD
    prefetch: int = 0  # shards fetched ahead into the cache (needs a cache)
    streaming: bool = True  # one streamed GET per shard where the backend supports it
    # URL → resolved Target, each URL resolved once (cloudwds.storage.target); pickles empty
    targets: TargetMemo = field(default_factory=TargetMemo, init=False, repr=False, compare=False)

    @classmethod
    def resolve(
        cls,
        *,
        storage_options: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | bool | None = None,
        cache_size: int | str | None = None,
        rewrites: str | Sequence[tuple[str, str]] | None = None,
        ais_endpoint: str | None = None,
        use_ais_for: str | Sequence[str] | None = None,
        prefetch: int | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        verbose_cache: bool | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> StorageConfig:
        """Combine explicit arguments with the environment (explicit first).

        Environment: ``WDS_REWRITE``/``GOPEN_REWRITE``, ``AIS_ENDPOINT``, ``USE_AIS_FOR``,
        ``WDS_CACHE``, ``WDS_CACHE_SIZE``, ``WDS_VERBOSE_CACHE``, ``WDS_PREFETCH``,
        ``WDS_RETRIES``, ``WDS_TIMEOUT``. Cloud credentials stay with the cloud libraries'
        own conventions (``AWS_*``, ``STORAGE_EMULATOR_HOST``, ``AZURE_STORAGE_*``).
        """
        env = os.environ if environ is None else environ
        if rewrites is None:
            rules = rewrites_from_env(env)
        elif isinstance(rewrites, str):
            rules = parse_rewrites(rewrites)
        else:
            rules = tuple(Rewrite(p, r) for p, r in rewrites)
        endpoint = ais_endpoint if ais_endpoint is not None else env.get("AIS_ENDPOINT") or None
        schemes = parse_use_ais_for(
            use_ais_for if use_ais_for is not None else env.get("USE_AIS_FOR")
        )
        if schemes and not endpoint:
            raise ValueError("USE_AIS_FOR is set but AIS_ENDPOINT is not")
        # remote shards are cached by default (cache_dir=False / WDS_CACHE=off opt out): the
        # rules live in cloudwds.cache.defaults; without a cache, the cache package (diskcache,
        # sqlite3: ~40 ms in a fresh process) is not even imported
        cache = None
        if cache_dir is not False:
            from ..cache.defaults import storage_cache

            cache = storage_cache(cache_dir, cache_size, verbose_cache, environ=env)
        if prefetch is None:
            prefetch = int(env.get("WDS_PREFETCH", "1" if cache is not None else "0"))
        policy = RetryPolicy(
            retries=retries if retries is not None else int(env.get("WDS_RETRIES", "5")),
            timeout=timeout if timeout is not None else float(env.get("WDS_TIMEOUT", "60")),
        )
        return cls(
            streaming=env.get("WDS_STREAMING", "1").lower() not in ("0", "false", "no", "off"),
            storage_options=dict(storage_options) if storage_options else None,
            rewrites=rules,
            ais_endpoint=endpoint,
            use_ais_for=schemes,
            cache=cache,
            retry=policy,
            prefetch=prefetch,
        )
