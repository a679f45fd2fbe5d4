"""Shard lists: which shard URLs this rank and worker read, in which order, each epoch.

Items flowing out of these sources are dicts ``{"url": url}`` (the webdataset convention, equal
to webdataset's items) that also carry, as the attribute ``storage``, the storage settings
resolved when the source was built, so the opening stage downstream reads every shard with the
options the user gave the source.

Order guarantees: with a seed, shard shuffles are derived from ``(seed, epoch)`` only — the same
on every rank, which is what makes ``split_by_node`` after a shuffle a partition. Resampling is
derived from ``(seed, epoch, rank, worker)``, so each worker draws its own stream.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .stages import Stage
from .storage import StorageConfig, preload_backends
from .urls import shard_list
from .world import World, distributed_rank, worker_info

log = logging.getLogger("cloudwds")


class ShardItem(dict[str, Any]):
    """``{"url": url}`` plus the source's :class:`StorageConfig` as the attribute ``storage``.

    A plain dict to code that inspects items (``item["url"]``, ``item == {"url": u}``, as
    webdataset's tests and clients do); the attribute survives pickling to workers.
    """

    def __init__(self, url: str, storage: StorageConfig | None):
        super().__init__(url=url)
        self.storage = storage

    def __reduce__(self) -> tuple[type[ShardItem], tuple[str, StorageConfig | None]]:
        return (ShardItem, (self["url"], self.storage))


class ShardSource(Stage):
    """Base of the pipeline sources: holds the URL list and the storage settings."""

    def __init__(
        self,
        urls: str | Iterable[str],
        storage: StorageConfig | None = None,
        storage_options: Mapping[str, Any] | None = None,
        empty_check: bool = True,
        **storage_kwargs: Any,
    ):
        self.urls = shard_list(urls)
        if not self.urls and empty_check:
            raise ValueError(f"no shard URLs in {urls!r}")
        if storage is None:
            storage = StorageConfig.resolve(storage_options=storage_options, **storage_kwargs)
        self.storage = storage
        preload_backends(self.urls, storage)  # before workers fork, not in the first epoch

    def _item(self, url: str) -> dict[str, Any]:
        return ShardItem(url, self.storage)

    def apply(
        self,
        src: Iterable[Any],  # noqa: ARG002 - Stage.apply's signature; a source ignores its input
        world: World,
    ) -> Iterator[dict[str, Any]]:
        return self.iterate(world)

    def iterate(self, world: World) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Iterated directly (outside a pipeline), each ``iter()`` is the next epoch, as webdataset's
        sources count their own epochs; inside a pipeline the pipeline's epoch is used."""
        from .world import current_world

        epoch = self.__dict__.get("_direct_epoch", 0)
        self._direct_epoch = epoch + 1
        return self.iterate(World(**{**vars(current_world()), "epoch": epoch}))

    def __len__(self) -> int:
        return len(self.urls)


class SimpleShardList(ShardSource):
    """Every URL once per epoch; with ``seed`` given, in ``random.Random(seed)``'s order.

    As in webdataset, the seeded order is the same every epoch and on every rank (``seed=True``:
    a fresh order each time); for a new permutation per epoch use ``WebDataset(shardshuffle=True)``
    or a ``detshuffle`` stage.

    A string is brace-expanded (``"a-{0..9}.tar"``, ``"a.tar::b.tar"``, ``${VAR}`` from
    ``WDS_VAR``); a list is taken literally, as in webdataset.
    """

    def __init__(self, urls: str | Iterable[str], seed: int | None = None, **kwargs: Any):
        super().__init__(urls, **kwargs)
        self.seed = seed

    def iterate(
        self,
        world: World,  # noqa: ARG002 - the order depends on the seed only (webdataset's)
    ) -> Iterator[dict[str, Any]]:
        urls = list(self.urls)
        if self.seed is True:
            random.Random(os.urandom(16)).shuffle(urls)
        elif self.seed is not None:
            random.Random(self.seed).shuffle(urls)
        for url in urls:
            yield self._item(url)


class ResampledShards(ShardSource):
    """An endless (or ``nshards``-long) stream of shards drawn at random.

    Draws are seeded from ``(seed, epoch, rank, worker)``; ``seed=None`` uses the pipeline's
    seed. ``worker_seed`` (webdataset's hook, a zero-argument callable) replaces the rank and
    worker part of the seed when given. Draws are deterministic by default;
    ``deterministic=False`` draws from OS entropy, different on every run (webdataset's default).
    ``max_urls`` caps the URLs read from an iterator source. ``empty_check=False`` accepts an
    empty list (the stream is then empty). With ``replacement=False`` shards are drawn as a
    series of permutations, so every shard is visited once per cycle of ``len(urls)`` draws.
    """

    def __init__(
        self,
        urls: str | Iterable[str],
        nshards: int = sys.maxsize,
        seed: int | None = None,
        worker_seed: Callable[[], int] | None = None,
        deterministic: bool = True,
        max_urls: int = 1_000_000,
        empty_check: bool = True,
        *,
        replacement: bool = True,
        **kwargs: Any,
    ):
        if not isinstance(urls, (str, list, tuple)) and hasattr(urls, "__iter__"):
            urls = list(itertools.islice(urls, max_urls))
        super().__init__(urls, empty_check=empty_check, **kwargs)
        self.nshards = nshards
        self.seed = seed
        self.worker_seed = worker_seed
        self.deterministic = deterministic
        self.max_urls = max_urls
        self.replacement = replacement
        self.epoch = -1  # webdataset's attribute; the epoch used is the pipeline's

    def iterate(self, world: World) -> Iterator[dict[str, Any]]:
        w = world if self.seed is None else World(**{**vars(world), "seed": self.seed})
        if not self.deterministic:
            import random

            rng = random.Random(os.urandom(16))  # webdataset's default: differs on every run
        elif self.worker_seed is not None:
            rng = World(seed=w.seed, epoch=w.epoch, cycle=w.cycle).rng(
                "resample", self.worker_seed(), per_rank=False, per_worker=False
            )
        else:
            rng = w.rng("resample")
        urls = self.urls
        if not urls:
            return
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


def split_by_node(
    src: Iterable[Any],
    group: Any = None,  # noqa: ARG001 - webdataset's (a process group); the default group is used
) -> Iterator[Any]:
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


def single_node_only(
    src: Iterable[Any],
    group: Any = None,  # noqa: ARG001 - webdataset's signature (a torch.distributed group)
) -> Iterator[Any]:
    """Refuse to run on more than one rank (for datasets that must not be split)."""
    _, world_size = distributed_rank()
    if world_size > 1:
        raise ValueError("this dataset is single-node only, but WORLD_SIZE > 1")
    yield from src
