"""Shard lists: which shard URLs this rank and worker read, in which order, each epoch.

Items flowing out of these sources are dicts ``{"url": url, "storage": StorageConfig}`` (the
webdataset convention plus the storage settings resolved when the source was built), so the
opening stage downstream reads every shard with the options the user gave the source.

Order guarantees: with a seed, shard shuffles are derived from ``(seed, epoch)`` only — the same
on every rank, which is what makes ``split_by_node`` after a shuffle a partition. Resampling is
derived from ``(seed, epoch, rank, worker)``, so each worker draws its own stream.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .stages import Stage
from .storage import StorageConfig
from .urls import expand_urls
from .world import World, distributed_rank, worker_info

log = logging.getLogger("cloudwds")


class ShardSource(Stage):
    """Base of the pipeline sources: holds the URL list and the storage settings."""

    def __init__(
        self,
        urls: str | Iterable[str],
        storage: StorageConfig | None = None,
        storage_options: Mapping[str, Any] | None = None,
        **storage_kwargs: Any,
    ):
        self.urls = expand_urls(urls)
        if not self.urls:
            raise ValueError(f"no shard URLs in {urls!r}")
        if storage is None:
            storage = StorageConfig.resolve(storage_options=storage_options, **storage_kwargs)
        self.storage = storage

    def _item(self, url: str) -> dict[str, Any]:
        return {"url": url, "storage": self.storage}

    def apply(self, src, world):  # sources ignore their input
        return self.iterate(world)

    def iterate(self, world: World) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from .world import current_world

        return self.iterate(current_world())

    def __len__(self) -> int:
        return len(self.urls)


class SimpleShardList(ShardSource):
    """Every URL once per epoch; with ``seed`` given, shuffled by ``(seed, epoch)``."""

    def __init__(self, urls: str | Iterable[str], seed: int | None = None, **kwargs: Any):
        super().__init__(urls, **kwargs)
        self.seed = seed

    def iterate(self, world: World) -> Iterator[dict[str, Any]]:
        urls = list(self.urls)
        if self.seed is not None:
            World(seed=self.seed, epoch=world.epoch).rng(
                "shards", per_rank=False, per_worker=False
            ).shuffle(urls)
        for url in urls:
            yield self._item(url)


class ResampledShards(ShardSource):
    """An endless (or ``nshards``-long) stream of shards drawn at random.

    With ``replacement=False`` shards are drawn as a series of permutations, so every shard is
    visited once per cycle of ``len(urls)`` draws (no shard is missed in a nominal epoch).
    """

    def __init__(
        self,
        urls: str | Iterable[str],
        nshards: int = sys.maxsize,
        seed: int | None = None,
        replacement: bool = True,
        deterministic: bool = True,
        **kwargs: Any,
    ):
        super().__init__(urls, **kwargs)
        self.nshards = nshards
        self.seed = seed
        self.replacement = replacement

    def iterate(self, world: World) -> Iterator[dict[str, Any]]:
        w = world if self.seed is None else World(**{**vars(world), "seed": self.seed})
        rng = w.rng("resample")
        urls = self.urls
        count = 0
        while count < self.nshards:
            if self.replacement:
                yield self._item(rng.choice(urls))
                count += 1
            else:
                cycle = list(urls)
                rng.shuffle(cycle)
                for url in cycle:
                    if count >= self.nshards:
                        return
                    yield self._item(url)
                    count += 1


def split_by_node(src: Iterable[Any], group: Any = None) -> Iterator[Any]:
    """Keep every ``world_size``-th item starting at this rank (no-op on one rank)."""
    rank, world_size = distributed_rank()
    if world_size <= 1:
        yield from src
        return
    for i, item in enumerate(src):
        if i % world_size == rank:
            yield item


def split_by_worker(src: Iterable[Any]) -> Iterator[Any]:
    """Keep every ``num_workers``-th item starting at this DataLoader worker."""
    worker, num_workers = worker_info()
    if num_workers <= 1:
        yield from src
        return
    for i, item in enumerate(src):
        if i % num_workers == worker:
            yield item


def single_node_only(src: Iterable[Any], group: Any = None) -> Iterator[Any]:
    """Refuse to run on more than one rank (for datasets that must not be split)."""
    _, world_size = distributed_rank()
    if world_size > 1:
        raise ValueError("this dataset is single-node only, but WORLD_SIZE > 1")
    yield from src
