"""Small dataset wrappers from webdataset's ``extradatasets``: mock data, repeats, lengths.

Prefer the pipeline methods (``.repeat()``, ``.with_epoch()``, ``.with_length()``) in new code;
these wrap any iterable dataset for code written against webdataset's classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from . import utils
from .stages import PipelineStage
from .torchbase import IterableBase  # torch's IterableDataset without importing torch

__all__ = ["MockDataset", "repeatedly", "with_epoch", "with_length"]


class MockDataset(IterableBase):
    """Yield ``sample`` ``length`` times (for tests and loader benchmarks)."""

    def __init__(self, sample: Any, length: int):
        self.sample = sample
        self.length = length

    def __iter__(self) -> Iterator[Any]:
        for _ in range(self.length):
            yield self.sample


class repeatedly(IterableBase, PipelineStage):  # noqa: N801 - webdataset's public name
    """Iterate ``source`` repeatedly, up to ``nepochs`` passes or ``nbatches`` items.

    Usable as a dataset (``iter(repeatedly(ds, nepochs=2))``) or as a pipeline stage
    (``run(src)``); ``len()`` is ``length`` when given.
    """

    def __init__(
        self,
        source: Iterable[Any] | None,
        nepochs: int | None = None,
        nbatches: int | None = None,
        length: int | None = None,
    ):
        self.source = source
        self.nepochs = nepochs
        self.nbatches = nbatches
        self.length = length

    def run(self, source: Iterable[Any]) -> Iterator[Any]:
        return utils.repeatedly(source, nepochs=self.nepochs, nbatches=self.nbatches)

    def __iter__(self) -> Iterator[Any]:
        if self.source is None:
            raise TypeError(
                "repeatedly(None, ...) is a pipeline stage; give it a source to iterate"
            )
        return self.run(self.source)

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("repeatedly(...) has no length; pass length=")
        return self.length


class with_epoch(IterableBase):  # noqa: N801 - webdataset's public name
    """Cut ``dataset`` into epochs of ``length`` items, continuing where the last epoch stopped.

    The underlying iterator is restarted when it is exhausted (an empty dataset ends the
    epoch). It lives in this process's copy, so each DataLoader worker keeps its own.
    """

    def __init__(self, dataset: Iterable[Any], length: int):
        self.dataset = dataset
        self.length = length
        self.source: Iterator[Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["source"] = None  # a live iterator does not pickle
        return state

    def __iter__(self) -> Iterator[Any]:
        if self.source is None:
            self.source = iter(self.dataset)
        for _ in range(self.length):
            try:
                sample = next(self.source)
            except StopIteration:
                self.source = iter(self.dataset)
                try:
                    sample = next(self.source)
                except StopIteration:
                    return
            yield sample

    def __len__(self) -> int:
        return self.length


class with_length(IterableBase, PipelineStage):  # noqa: N801 - webdataset's public name
    """Give ``dataset`` a ``len()`` of ``length`` without changing what it yields."""

    def __init__(self, dataset: Iterable[Any], length: int):
        self.dataset = dataset
        self.length = length

    def run(self, dataset: Iterable[Any]) -> Iterator[Any]:
        return iter(dataset)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.dataset)

    def __len__(self) -> int:
        return self.length
