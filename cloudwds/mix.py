"""Mixing several datasets into one stream: round robin and random choice (webdataset's ``mix``).

For weighted mixing of shard lists with per-dataset epochs and resumable state, see the
dataset specs in :mod:`cloudwds.spec`; these classes mix any iterables sample by sample.
Random choices come from the iterating process's :class:`~cloudwds.world.World` (seed, rank,
worker), so a mix is repeatable, where webdataset draws from the global ``random`` state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .torchbase import IterableBase  # torch's IterableDataset without importing torch
from .world import current_world

__all__ = [
    "RandomMix",
    "RoundRobin",
    "random_samples",
    "round_robin_longest",
    "round_robin_shortest",
]


def round_robin_shortest(*sources: Iterator[Any]) -> Iterator[Any]:
    """One item from each source in turn; stop as soon as one source is exhausted."""
    i = 0
    while True:
        try:
            sample = next(sources[i % len(sources)])
        except StopIteration:
            return
        yield sample
        i += 1


def round_robin_longest(*sources: Iterator[Any]) -> Iterator[Any]:
    """One item from each source in turn; exhausted sources drop out until none is left."""
    live = list(sources)
    i = 0
    while live:
        i %= len(live)
        try:
            sample = next(live[i])
        except StopIteration:
            del live[i]
            continue
        i += 1
        yield sample


class RoundRobin(IterableBase):
    """Alternate between ``datasets``; ``longest=True`` goes on until all are exhausted."""

    def __init__(self, datasets: Sequence[Iterable[Any]], longest: bool = False):
        self.datasets = datasets
        self.longest = longest

    def __iter__(self) -> Iterator[Any]:
        sources = [iter(d) for d in self.datasets]
        if self.longest:
            return round_robin_longest(*sources)
        return round_robin_shortest(*sources)


def random_samples(
    sources: list[Iterator[Any]], probs: Sequence[float] | None = None, longest: bool = False
) -> Iterator[Any]:
    """Draw each item from a source chosen with probability ``probs`` (default: equal).

    When the chosen source is exhausted: ``longest=False`` stops, ``longest=True`` drops it
    and renormalises the others.
    """
    live = list(sources)
    weights = [1.0] * len(live) if probs is None else [float(p) for p in probs]
    if len(weights) != len(live):
        raise ValueError(f"{len(weights)} probabilities for {len(live)} datasets")
    rng = current_world().rng("random_samples")
    while live:
        cum = (np.array(weights) / np.sum(weights)).cumsum()
        i = min(int(np.searchsorted(cum, rng.random())), len(live) - 1)
        try:
            yield next(live[i])
        except StopIteration:
            if not longest:
                return
            del live[i]
            del weights[i]


class RandomMix(IterableBase):
    """Mix ``datasets`` at random with weights ``probs``; see :func:`random_samples`."""

    def __init__(
        self,
        datasets: Sequence[Iterable[Any]],
        probs: Sequence[float] | None = None,
        longest: bool = False,
    ):
        self.datasets = datasets
        self.probs = probs
        self.longest = longest

    def __iter__(self) -> Iterator[Any]:
        return random_samples([iter(d) for d in self.datasets], self.probs, longest=self.longest)
