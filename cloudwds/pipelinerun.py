"""One iteration of a :class:`~cloudwds.pipeline.DataPipeline`: the *run* half of recipe/run.

A :class:`PipelineRun` owns everything that changes while a pipeline is iterated — the pass
over the source (``cycle``), the items handed out (``yielded``), the stateful source's run and
its position — so that the pipeline (the recipe) can be shared, copied and pickled while any
number of iterations of it are alive, each reporting its own ``state_dict()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import resume
from .resume import StatefulItem
from .stagebase import PipelineStage, Stage, StageRun, StatefulStage, apply_stage
from .stats import enter_scope, exit_scope
from .world import World

if TYPE_CHECKING:
    from .pipeline import DataPipeline


def source_iter(source: Any, world: World) -> Iterator[Any]:
    """An iterator over a pipeline's first element (shard list, iterable, callable, stage)."""
    if isinstance(source, Stage):
        return source.apply((), world)
    if isinstance(source, PipelineStage) and not isinstance(source, Iterable):
        return iter(source.run())  # webdataset calls a PipelineStage source with no input
    if isinstance(source, Iterable):
        return iter(source)
    if callable(source):
        return iter(source())
    raise TypeError(f"pipeline source must be iterable or callable, got {source!r}")


class PipelineRun(Iterator[Any]):
    """One iteration of a :class:`DataPipeline`: owns the runs of its stateful stages.

    ``state_dict()`` nests the stateful source run's state (``"source"``) under the epoch and
    the rank/worker coordinates; nothing of it lives on the pipeline or its stages, so two
    live iterators of one pipeline report their own positions.
    """

    def __init__(self, pipeline: DataPipeline, world: World, entry: dict[str, Any] | None):
        self.pipeline = pipeline
        self.world = world
        entry = entry or {}
        self.cycle = int(entry.get("cycle", 0))  # the pass over the source (repeat/with_epoch)
        self.yielded = int(entry.get("yielded", 0))  # items handed out (what with_epoch counts)
        self.source: StageRun | None = None  # the current pass's stateful source run
        self._position: dict[str, Any] | None = entry.get("source")  # until the first pass
        self._it: Iterator[Any] | None = None
        self._passes: Iterator[Any] | None = None

    def chain(self, world: World, position: dict[str, Any] | None) -> Iterator[Any]:
        """One pass: source, then each stage; the first stateful stage starts at ``position``."""
        steps = self.pipeline.pipeline
        it: Iterator[Any] = iter(())
        first = True
        for i, step in enumerate(steps):
            if isinstance(step, StatefulStage) and first:
                first = False
                run = step.start(it if i else (), world, position)
                self.source = run
                it = run
            elif i == 0:
                it = source_iter(step, world)
            else:
                it = apply_stage(step, it, world)
        return it

    def _cycles(self) -> Iterator[Any]:
        p = self.pipeline
        position = self._position
        while p.repetitions is None or self.cycle < p.repetitions:
            w = World(**{**vars(self.world), "cycle": self.cycle})
            empty = True
            it = self.chain(w, position)
            try:
                for sample in it:
                    empty = False
                    yield sample
            finally:
                close_iterator(it)  # an abandoned run closes its open shards (and pipe:) now
            resumed, position = position is not None, None
            if empty and not resumed and (p.repetitions is None or p.repetitions > 1):
                return  # an empty pass would otherwise spin forever
            if p.repetitions is not None and self.cycle + 1 >= p.repetitions:
                return  # the last pass: its end position stays the run's state
            self.cycle += 1
            self.source = None

    def _items(self) -> Iterator[Any]:
        self._passes = self._cycles()
        limit = self.pipeline.nsamples
        it: Iterator[Any] = self._passes
        if limit is not None:
            it = itertools.islice(it, max(0, limit - self.yielded))
        return self._counted(it)

    def _counted(self, it: Iterator[Any]) -> Iterator[Any]:
        emit = self.pipeline._emit_state
        for item in it:
            self.yielded += 1
            if emit:
                yield StatefulItem(item, self.state_dict(), self.pipeline.counters())
            else:
                yield item

    def __iter__(self) -> PipelineRun:
        return self

    def __next__(self) -> Any:
        if self._it is None:
            self._it = self._items()
        token = enter_scope(self.pipeline._counters)  # what this item costs counts here
        try:
            return next(self._it)
        finally:
            exit_scope(token)

    def state_dict(self) -> dict[str, Any]:
        """This iteration's position after the last item it handed out."""
        if self.source is not None:
            position: dict[str, Any] | None = self.source.state_dict()
        elif self._position is not None:
            position = dict(self._position)
        else:
            stage = self.pipeline.stateful_source()
            position = None if stage is None else stage.fresh_state()
        return resume.worker_state(
            self.world.epoch, self.world, self.pipeline.seed, position, self.cycle, self.yielded
        )

    def close(self) -> None:
        """End the iteration now: open shards close and ``pipe:`` commands stop."""
        close_iterator(self._it)
        close_iterator(self._passes)


def close_iterator(it: object) -> None:
    """Close ``it`` if it can be closed (generators, runs); anything else is left alone."""
    close = getattr(it, "close", None)
    if close is not None:
        close()
