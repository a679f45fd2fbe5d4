"""webdataset's ``compat`` module: the fluent classes, plus ``Processor`` and ``FluidWrapper``.

``WebDataset``, ``FluidInterface`` and ``WebLoader`` are cloudwds's own (see
:mod:`cloudwds.pipeline` and :mod:`cloudwds.loader`). ``FluidWrapper(dataset)`` gives any
iterable the fluent methods; ``Processor(stage, *args)`` is the older webdataset spelling of
"apply this stage to a dataset" that its README still shows
(``wds.Processor(wds.map, f)(dataset)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .dataset import WebDataset, _check_empty
from .filters import pipelinefilter
from .handlers import reraise_exception
from .loader import WebLoader
from .pipeline import DataPipeline, FluidInterface
from .tariterators import group_by_keys, tar_file_expander

__all__ = [
    "FluidInterface",
    "FluidWrapper",
    "Processor",
    "WebDataset",
    "WebLoader",
    "check_empty",
    "group_by_keys",
    "pipelinefilter",
    "reraise_exception",
    "tar_file_expander",
]


def check_empty(source: Iterable[Any]) -> Iterator[Any]:
    """Pass samples through; raise ``ValueError`` if there were none (``empty_check=True``)."""
    return _check_empty(source)


class FluidWrapper(DataPipeline):
    """A pipeline whose source is ``initial`` (any iterable or dataset): ``FluidWrapper(mix).shuffle(10)``."""

    def __init__(self, initial: Any):
        super().__init__(initial)


class Processor:
    """``Processor(stage, *args, **kw)(dataset)``: ``dataset`` with ``stage(*args, **kw)`` appended.

    ``stage`` is a stage factory such as ``wds.map`` or ``wds.select``. A cloudwds pipeline
    gets a new pipeline (``compose``); any other iterable is processed lazily.
    """

    def __init__(self, stage: Callable[..., Any], *args: Any, **kw: Any):
        self.stage = stage
        self.args = args
        self.kw = kw

    def __call__(self, dataset: Any) -> Any:
        stage = self.stage(*self.args, **self.kw)
        compose = getattr(dataset, "compose", None)
        if callable(compose):
            return compose(stage)
        return FluidWrapper(dataset).compose(stage)
