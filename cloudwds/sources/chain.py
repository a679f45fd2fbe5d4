"""The shard chain: shard list → shard shuffle → split by rank → split by worker.

One function, :func:`shard_stages`, builds this chain for :class:`~cloudwds.dataset.WebDataset`
and for each collection of a dataset spec (:class:`~cloudwds.sources.mixed.MixedSource`), so
the two read shards in the same order, on the same rank and worker, by the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..shards import ResampledShards, SimpleShardList, split_by_node, split_by_worker
from ..stagebase import Stage, apply_stage
from ..storage import StorageConfig
from ..world import World

__all__ = ["ShuffleShards", "WarnIfEmpty", "apply_stages", "shard_stages"]

log = logging.getLogger("cloudwds")


class ShuffleShards(Stage):
    """Permute the shard list by ``(seed, epoch)`` — identical on every rank and worker."""

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:
        items = list(src)
        world.rng("shardshuffle", per_rank=False, per_worker=False).shuffle(items)
        return iter(items)

    def __repr__(self) -> str:
        return "shardshuffle()"  # webdataset code finds this stage by "shuffle" in str(stage)


class WarnIfEmpty(Stage):
    """Log once when this rank/worker got no shards, instead of failing deep inside a worker."""

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:
        empty = True
        for item in src:
            empty = False
            yield item
        if empty:
            log.warning(
                "rank %d/%d worker %d/%d received no shards (fewer shards than ranks x workers)",
                world.rank,
                world.world_size,
                world.worker,
                world.num_workers,
            )


def shard_stages(
    urls: str | Iterable[str],
    *,
    storage: StorageConfig,
    resampled: bool = False,
    seed: int | None = None,
    shardshuffle: bool = False,
    nodesplitter: Callable[..., Any] | None = split_by_node,
    workersplitter: Callable[..., Any] | None = split_by_worker,
    warn_if_empty: bool = False,
) -> list[Any]:
    """The stages that turn ``urls`` into this rank's and worker's shard items, as recipes.

    ``resampled``: an endless stream of shards drawn from ``(seed or the pipeline's seed,
    epoch, rank, worker)``, neither shuffled nor split (every rank and worker draws its own).
    Otherwise every URL once per epoch, permuted by ``(seed, epoch)`` when ``shardshuffle``,
    then kept by ``nodesplitter`` and ``workersplitter`` (``None`` skips one), with a logged
    warning when ``warn_if_empty`` and this rank/worker gets nothing.
    """
    if resampled:
        return [ResampledShards(urls, seed=seed, storage=storage)]
    stages: list[Any] = [SimpleShardList(urls, storage=storage)]
    if shardshuffle:
        stages.append(ShuffleShards())
    stages.extend(s for s in (nodesplitter, workersplitter) if s is not None)
    if warn_if_empty:
        stages.append(WarnIfEmpty())
    return stages


def apply_stages(stages: Sequence[Any], src: Iterable[Any], world: World) -> Iterator[Any]:
    """Run ``stages`` over ``src`` in order, as a pipeline would (:func:`apply_stage`)."""
    items: Iterable[Any] = src
    for stage in stages:
        items = apply_stage(stage, items, world)
    return iter(items)
