"""``WebLoader``: a ``torch.utils.data.DataLoader`` with the fluent stages applied after it.

``WebLoader(dataset, num_workers=4, batch_size=None).unbatched().shuffle(1000).batched(12)``
batches inside the workers, then re-batches across workers in the main process, as in the
webdataset README. Each ``iter()`` is one epoch: the loader tells the dataset its epoch
*before* the workers start, so orders change per epoch even when workers are re-created.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from .pipeline import FluidInterface
from .stages import apply_stage
from .world import current_world, default_seed


class WebLoader(FluidInterface):
    """A DataLoader plus post-processing stages; every fluent call returns a new WebLoader."""

    def __init__(self, dataset: Any, *args: Any, seed: int | None = None, **kwargs: Any):
        from torch.utils.data import DataLoader

        self.dataset = dataset
        self.loader = (
            dataset if isinstance(dataset, DataLoader) else DataLoader(dataset, *args, **kwargs)
        )
        self.stages: list[Callable[..., Any]] = []
        self.seed = default_seed(seed)
        self._next_epoch = 0
        self.length: int | None = None

    def compose(self, *stages: Callable[..., Any]) -> WebLoader:
        new = copy.copy(self)
        new.stages = self.stages + list(stages)
        return new

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``, for the loader's stages and the dataset."""
        self._next_epoch = int(epoch)

    def __iter__(self) -> Iterator[Any]:
        epoch = self._next_epoch
        self._next_epoch += 1
        dataset = self.loader.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        world = current_world(epoch=epoch, seed=self.seed)
        it: Iterator[Any] = iter(self.loader)
        for stage in self.stages:
            it = apply_stage(stage, it, world)
        return it

    def __len__(self) -> int:
        if self.length is not None:
            return self.length
        return len(self.loader)

    def with_length(self, n: int) -> WebLoader:
        new = copy.copy(self)
        new.length = int(n)
        return new

    def with_epoch(self, n: int) -> WebLoader:
        """Yield exactly ``n`` items per iteration, continuing the loader across passes."""
        new = copy.copy(self)
        new.stages = self.stages + [_TakeForever(self.loader, n)]
        return new


class _TakeForever:
    """Stage for ``WebLoader.with_epoch``: restart the loader when it runs dry."""

    def __init__(self, loader: Any, n: int):
        self.loader = loader
        self.n = n

    def __call__(self, src: Iterator[Any]) -> Iterator[Any]:
        count = 0
        while count < self.n:
            empty = True
            for item in src:
                empty = False
                yield item
                count += 1
                if count >= self.n:
                    return
            if empty:
                return
            src = iter(self.loader)
