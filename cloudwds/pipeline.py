"""``DataPipeline`` and the fluent ``WebDataset``: a source followed by stages, run per epoch.

Every fluent method (``.map``, ``.shuffle``, ``.with_epoch``, ``.repeat``, ``.with_length``,
``.compose``) returns a *new* pipeline and never changes the one it was called on (webdataset
mutates ``self`` for some of them and shares stage objects between copies for others).

Epochs: each ``iter()`` runs one epoch. The epoch number seeds every random choice (see
:class:`~cloudwds.world.World`); it advances by one on each new iteration, and
``set_epoch(n)`` makes the next iteration epoch ``n``. ``with_epoch(n)`` cuts each iteration
at ``n`` samples *per process* (per DataLoader worker), repeating the source as needed, as in
webdataset.

This module holds the recipe; an iteration is a :class:`~cloudwds.pipelinerun.PipelineRun`
and the fluent shorthands are :class:`~cloudwds.fluent.FluidInterface` (both re-exported here,
where webdataset-compatible code imports them).
"""

from __future__ import annotations

import copy
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Self

from . import resume
from . import stages as st
from .epochs import EpochCounter
from .fluent import FluidInterface as FluidInterface
from .pipelinerun import PipelineRun as PipelineRun
from .pipelinerun import source_iter
from .stagebase import StatefulStage
from .stages import PipelineStage, Stage
from .stats import Counters, with_rates
from .torchbase import iterable_base
from .workerproc import settle_worker
from .world import World, current_world, default_seed

if TYPE_CHECKING:
    from .torchbase import IterableBase
else:
    IterableBase = iterable_base()  # torch's IterableDataset without importing torch

log = logging.getLogger("cloudwds")


class DataPipeline(IterableBase, FluidInterface):
    """A source followed by stages; ``DataPipeline(src, stage, stage, ...)`` as in webdataset.

    The first element is the source: a shard list (``SimpleShardList``, ``ResampledShards``),
    any iterable, or a zero-argument callable returning an iterator. The rest are stages:
    :class:`~cloudwds.stages.Stage` objects or plain ``iterator -> iterator`` functions.
    Lists are flattened, so pipelines can be assembled from pieces.
    """

    def __init__(self, *args: Any, seed: int | None = None):
        super().__init__()
        self.pipeline: list[Any] = []
        for arg in args:
            if isinstance(arg, list):
                self.pipeline.extend(arg)
            elif arg is not None:
                self.pipeline.append(arg)
        self.seed = default_seed(seed)
        self.nsamples: int | None = None
        self.repetitions: int | None = 1  # None = forever
        self.length: int | None = None
        self._epochs = EpochCounter()
        self._resume: list[dict[str, Any]] | None = None  # loader states staged for next iter
        self._emit_state = False  # stateful_items(): items travel with the worker's state
        self._last_run: weakref.ref[PipelineRun] | None = None  # most recent iteration
        self._counters = Counters()  # this pipeline's statistics (see cloudwds.stats)

    # -- running -------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (reshuffles shards and buffers).

        Reaches DataLoader workers too, re-created or persistent (see :mod:`cloudwds.epochs`).
        """
        self._epochs.set(epoch)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration (of the main process / worker 0) will use."""
        return self._epochs.peek()

    def stateful_source(self) -> Any:
        """The stage whose position is the pipeline's state (exact source, tar reader, mixer)."""
        for stage in self.pipeline:
            if isinstance(stage, StatefulStage):
                return stage
        return None

    def state_dict(self) -> dict[str, Any]:
        """This process's (or DataLoader worker's) position in its current epoch.

        A few integers, never samples: the epoch, the rank/worker coordinates and the stateful
        source's position after the last item handed out. It is the state of the most recently
        started iteration of *this* pipeline object (each iterator also has its own
        ``state_dict()``: ``it = iter(ds); it.state_dict()``); before any iteration, a loaded
        state or the start of the next epoch. See :mod:`cloudwds.resume` for the schema.
        """
        run = self._last_run() if self._last_run is not None else None
        if run is not None:
            return run.state_dict()
        world = current_world(seed=self.seed)
        source = self.stateful_source()
        entry: dict[str, Any] = {}
        if self._resume:
            world = World(**{**vars(world), "epoch": self.epoch})
            entry = resume.worker_position(self._resume, source, world) or {}
        position = entry.get("source")
        if position is None and source is not None:
            position = source.fresh_state()
        return resume.worker_state(
            self.epoch, world, self.seed, position, entry.get("cycle", 0), entry.get("yielded", 0)
        )

    def load_state_dict(
        self, state: Any, num_workers: int | None = None
    ) -> list[dict[str, Any]] | None:
        """Stage a state for the next iteration: it resumes that epoch where the state left it.

        Accepts one worker's state (``state_dict()``; what torchdata's ``StatefulDataLoader``
        stores), a ``WebLoader`` state, or a list of every rank's ``WebLoader`` states (needed to
        resume on a different number of ranks or workers). A state saved with another seed is
        refused (``ValueError``). With ``num_workers`` (the loader passes it), a resume on
        another topology is planned here, in the calling process, so its errors surface at once
        and every worker receives its share explicitly. Returns the staged loader states
        (what :func:`cloudwds.resume.rank_positions` reads). ``None`` forgets a staged state.
        """
        if state is None:
            self._resume = None
            return None
        states = resume.load(state, self.seed)
        if num_workers is not None:
            world = current_world(seed=self.seed)
            states = resume.plan_topology(
                states, self.stateful_source(), world, max(1, num_workers)
            )
        self._resume = states
        self._epochs.set(int(states[0]["epoch"]))
        return states

    def iterator1(self, world: World) -> Iterator[Any]:
        """One pass: source, then each stage in turn (no resume; see :class:`PipelineRun`)."""
        return PipelineRun(self, world, None).chain(world, None)

    def __iter__(self) -> PipelineRun:
        settle_worker()  # a forked DataLoader worker stops its GC from copying the parent's heap
        world = current_world(seed=self.seed)
        world = World(**{**vars(world), "epoch": self._epochs.take(world.worker)})
        staged, self._resume = self._resume, None
        entry = None
        if staged:
            entry = resume.worker_position(staged, self.stateful_source(), world)
        run = PipelineRun(self, world, entry)
        self._last_run = weakref.ref(run)
        return run

    def stateful_items(
        self,
        batch_size: int | None = None,  # noqa: ARG002 - used by WebDataset's exact mode
    ) -> DataPipeline:
        """A copy for ``WebLoader``'s workers: each item travels with the worker's state.

        It shares this pipeline's epoch counter (``set_epoch`` on either reaches both).
        ``batch_size`` is the DataLoader's (exact-epoch sources balance batches with it).
        """
        new = copy.copy(self)
        new._emit_state = True
        new._last_run = None
        new._counters = Counters()
        return new

    def counters(self) -> dict[str, float]:
        """This process's raw counters for this pipeline (merged across workers by WebLoader)."""
        snap = self._counters.snapshot()
        cache = getattr(getattr(self, "storage", None), "cache", None)
        if cache is not None:
            cs = cache.stats()
            snap["cache_hits"] = cs.get("hits", 0)
            snap["cache_misses"] = cs.get("misses", 0)
            snap["bytes_cache"] = cs.get("bytes_served_from_cache", 0)
        return snap

    _process_counters = counters  # the older private name

    def stats(self) -> dict[str, Any]:
        """This process's loader counters and rates (see :mod:`cloudwds.stats`)."""
        return with_rates(self.counters())

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("this pipeline has no length; use .with_length(n) to declare one")
        return self.length

    # -- building (each returns a new pipeline) ------------------------------------------
    def _copy(self) -> Self:
        new = copy.copy(self)
        # stateful stages are copied too: a copy shares no mutable stage object with the original
        new.pipeline = [copy.copy(s) if isinstance(s, StatefulStage) else s for s in self.pipeline]
        new._epochs = EpochCounter(self.epoch)  # a copy never advances the original's epochs
        new._resume = None
        new._last_run = None
        new._counters = Counters()
        return new

    def compose(self, *stages: Callable[..., Any]) -> Self:
        """A new pipeline with ``stages`` appended (plain ``iterator -> iterator`` functions ok)."""
        new = self._copy()
        new.pipeline.extend(stages)
        return new

    def to_tuple(self, *args: str, **kw: Any) -> Self:
        """Dict samples → tuples; right after ``.decode()``, only the requested fields are decoded."""
        last = self.pipeline[-1] if self.pipeline else None
        if isinstance(last, st.decode) and last.only is None:
            fields = args[0].split() if len(args) == 1 and " " in args[0] else args
            wanted = sorted({k for f in fields for k in f.split(";") if not k.startswith("__")})
            if wanted:
                fused = st.decode(
                    *last.args,
                    handler=last.handler,
                    only=wanted,
                    partial=last.partial,
                    trusted=last.trusted,
                )
                new = self._copy()
                new.pipeline[-1] = fused
                return new.compose(st.to_tuple(*args, **kw))
        return self.compose(st.to_tuple(*args, **kw))

    def with_epoch(self, nsamples: int = -1, nbatches: int = -1) -> Self:
        """Each iteration yields exactly ``nsamples`` items (per process), repeating the source.

        ``nbatches`` is accepted as an alias (count items after batching). ``-1`` undoes it.
        """
        n = nsamples if nsamples >= 0 else nbatches
        new = self._copy()
        if n < 0:
            new.nsamples, new.repetitions = None, 1
        else:
            new.nsamples, new.repetitions = n, None
        return new

    def repeat(self, nepochs: int | None = None, nbatches: int | None = None) -> Self:
        """Repeat the pass ``nepochs`` times per iteration (``None``: forever)."""
        new = self._copy()
        new.repetitions = None if nepochs is None or nepochs < 0 else nepochs
        if nbatches is not None and nbatches >= 0:
            new.nsamples = nbatches
        return new

    def with_length(
        self,
        n: int,
        silent: bool = False,  # noqa: ARG002 - webdataset's signature
    ) -> Self:
        """Declare ``len()`` (what the DataLoader reports); it does not limit iteration.

        ``silent`` is accepted for webdataset's signature; cloudwds does not warn here.
        """
        new = self._copy()
        new.length = int(n)
        return new

    # -- webdataset's pipeline-object methods ------------------------------------------
    def stage(self, i: int) -> Any:
        """The ``i``-th element of the pipeline (0 is the source)."""
        return self.pipeline[i]

    def append(self, f: Callable[..., Any]) -> None:
        """Append a stage *in place* (webdataset's contract for ``append``; ``compose`` copies)."""
        self.pipeline.append(f)

    def invoke(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        """Apply one pipeline element as webdataset's ``DataPipeline.invoke`` does."""
        if not args:
            return self._source_iter_of(f)
        if isinstance(f, Stage):
            return f(*args, **kwargs)
        if isinstance(f, PipelineStage):
            return f.run(*args, **kwargs)
        if callable(f):
            return f(*args, **kwargs)
        raise ValueError(f"{f!r}: not a valid pipeline stage")

    def _source_iter_of(self, f: Any) -> Iterator[Any]:
        return source_iter(f, current_world(seed=self.seed))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_last_run"] = None  # a live iteration does not travel to DataLoader workers
        return state

    def close(self) -> None:
        """Close every element that has ``close()`` (caches, opened resources).

        Runs hold no open resources after they end, so this is only needed for elements
        with their own state; the pipeline stays usable (webdataset deletes it).
        """
        for step in self.pipeline:
            close = getattr(step, "close", None)
            if callable(close) and not isinstance(step, type):
                close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(s) for s in self.pipeline)
        return f"{type(self).__name__}(\n  {inner}\n)"


def add_length_method(obj: Any) -> Any:
    """Give ``obj`` a ``len()`` of ``obj.size`` (webdataset's helper behind ``with_length``)."""
    cls = type(obj)
    obj.__class__ = type(cls.__name__ + "_Length", (cls,), {"__len__": lambda self: self.size})
    return obj


def __getattr__(name: str) -> Any:
    # ``WebDataset`` lives in cloudwds.dataset (it builds on DataPipeline); imported lazily so
    # ``from cloudwds.pipeline import WebDataset`` keeps working without an import cycle.
    if name == "WebDataset":
        from .dataset import WebDataset

        return WebDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
