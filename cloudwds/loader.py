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
        self.nsamples: int | None = None

    def compose(self, *stages: Callable[..., Any]) -> WebLoader:
        new = copy.copy(self)
        new.stages = self.stages + list(stages)
        return new

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``, for the loader's stages and the dataset."""
        self._next_epoch = int(epoch)

    def _one_pass(self) -> Iterator[Any]:
        """One pass over the DataLoader with the stages applied; uses up one epoch number."""
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

    def __iter__(self) -> Iterator[Any]:
        if self.nsamples is None:
            return self._one_pass()
        return self._take(self.nsamples)

    def _take(self, n: int) -> Iterator[Any]:
        # Passes are restarted whole (DataLoader and stages), each with the next epoch.
        count = 0
        while count < n:
            empty = True
            for item in self._one_pass():
                empty = False
                yield item
                count += 1
                if count >= n:
                    return
            if empty:
                return

    def __len__(self) -> int:
        if self.length is not None:
            return self.length
        if self.nsamples is not None:
            return self.nsamples
        return len(self.loader)

    def with_length(self, n: int) -> WebLoader:
        """Declare ``len()``; it does not limit iteration."""
        new = copy.copy(self)
        new.length = int(n)
        return new

    def with_epoch(self, n: int) -> WebLoader:
        """Yield exactly ``n`` items per iteration (after all stages), restarting as needed.

        Each restart of the DataLoader is a new dataset epoch, so orders differ between passes.
        ``-1`` undoes it.
        """
        new = copy.copy(self)
        new.nsamples = None if n < 0 else int(n)
        return new
