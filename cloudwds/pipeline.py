"""``DataPipeline`` and the fluent ``WebDataset``: a source followed by stages, run per epoch.

Every fluent method (``.map``, ``.shuffle``, ``.with_epoch``, ``.repeat``, ``.with_length``,
``.compose``) returns a *new* pipeline and never changes the one it was called on (webdataset
mutates ``self`` for some of them and shares stage objects between copies for others).

Epochs: each ``iter()`` runs one epoch. The epoch number seeds every random choice (see
:class:`~cloudwds.world.World`); it advances by one on each new iteration, and
``set_epoch(n)`` makes the next iteration epoch ``n``. ``with_epoch(n)`` cuts each iteration
at ``n`` samples *per process* (per DataLoader worker), repeating the source as needed, as in
webdataset.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import stages as st
from .epochs import EpochCounter
from .handlers import Handler, reraise_exception
from .resume import StatefulItem, normalize
from .stages import PipelineStage, Stage, apply_stage
from .stats import COUNTERS, with_rates
from .world import World, current_world, default_seed

log = logging.getLogger("cloudwds")

try:  # torch is optional: with it, pipelines are real IterableDatasets for the DataLoader
    from torch.utils.data import IterableDataset as _IterableBase
except ImportError:  # pragma: no cover - exercised only without torch

    class _IterableBase:  # type: ignore[no-redef]
        pass


class FluidInterface:
    """Fluent shorthands; each appends a stage to a copy of the pipeline."""

    def compose(self, *stages: Callable[..., Any]) -> Any:
        raise NotImplementedError

    def shuffle(self, bufsize: int = 1000, initial: int = 100, **kw: Any) -> Any:
        return self.compose(st.shuffle(bufsize, initial, **kw))

    def map(self, f: Callable[[Any], Any], handler: Handler = reraise_exception) -> Any:
        return self.compose(st.map(f, handler=handler))

    def select(self, predicate: Callable[[Any], bool]) -> Any:
        return self.compose(st.select(predicate))

    def decode(self, *args: Any, **kw: Any) -> Any:
        return self.compose(st.decode(*args, **kw))

    def to_tuple(self, *args: str, **kw: Any) -> Any:
        """Dict samples → tuples; right after ``.decode()``, only the requested fields are decoded."""
        stages = getattr(self, "pipeline", None)
        last = stages[-1] if stages else None
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
                new = self._copy()  # type: ignore[attr-defined]
                new.pipeline[-1] = fused
                return new.compose(st.to_tuple(*args, **kw))
        return self.compose(st.to_tuple(*args, **kw))

    def map_tuple(self, *fs: Any, handler: Handler = reraise_exception) -> Any:
        return self.compose(st.map_tuple(*fs, handler=handler))

    def map_dict(self, handler: Handler = reraise_exception, **fs: Any) -> Any:
        return self.compose(st.map_dict(handler=handler, **fs))

    def rename(self, **kw: Any) -> Any:
        return self.compose(st.rename(**kw))

    def rename_keys(self, *args: Any, **kw: Any) -> Any:
        return self.compose(st.rename_keys(*args, **kw))

    def batched(
        self,
        batchsize: int,
        collation_fn: Callable[[list[Any]], Any] | None = st.default_collation_fn,
        partial: bool = True,
    ) -> Any:
        return self.compose(st.batched(batchsize, collation_fn=collation_fn, partial=partial))

    def unbatched(self) -> Any:
        return self.compose(st.unbatched())

    def slice(self, *args: int | None) -> Any:
        return self.compose(st.slice(*args))

    def rsample(self, p: float = 0.5) -> Any:
        return self.compose(st.rsample(p))

    # -- the rest of webdataset's fluent methods --------------------------------------------
    def listed(self, batchsize: int, partial: bool = True) -> Any:
        """Lists of ``batchsize`` samples, not collated."""
        return self.compose(st.batched(batchsize, collation_fn=None, partial=partial))

    def unlisted(self) -> Any:
        """Flatten lists of samples."""
        from .filters import unlisted

        return self.compose(unlisted())

    def log_keys(self, logfile: str | None = None) -> Any:
        from .filters import log_keys

        return self.compose(log_keys(logfile))

    def extract_keys(self, *args: Any, **kw: Any) -> Any:
        from .filters import extract_keys

        return self.compose(extract_keys(*args, **kw))

    def xdecode(self, *args: Any, **kw: Any) -> Any:
        from .filters import xdecode

        return self.compose(xdecode(*args, **kw))

    def mcached(self) -> Any:
        """Keep the samples of the first complete pass in memory (:class:`~cloudwds.Cached`)."""
        from .extrastages import Cached

        return self.compose(Cached())

    def lmdb_cached(self, *args: Any, **kw: Any) -> Any:
        """Keep the samples of the first complete pass in an LMDB file (:class:`~cloudwds.LMDBCached`)."""
        from .extrastages import LMDBCached

        return self.compose(LMDBCached(*args, **kw))


class DataPipeline(_IterableBase, FluidInterface):
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
        self._emit_state = False  # set by WebLoader: items travel with the worker's state
        self._live: dict[str, Any] | None = None  # this process's current iteration

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
            if hasattr(stage, "state_dict") and hasattr(stage, "load_state_dict"):
                return stage
        return None

    def state_dict(self) -> dict[str, Any]:
        """This process's (or DataLoader worker's) position in its current epoch.

        A few integers, never samples: the epoch, the rank/worker coordinates and the stateful
        source's position after the last item this pipeline handed out. See
        :mod:`cloudwds.resume` for the schema and for what stages the guarantee covers.
        """
        live = self._live or {"epoch": self.epoch, **_coords(current_world(seed=self.seed))}
        source = self.stateful_source()
        return {
            **live,
            "seed": self.seed,
            "source": None if source is None else source.state_dict(),
        }

    def load_state_dict(self, state: Any, num_workers: int | None = None) -> None:
        """Stage a state for the next iteration: it resumes that epoch where the state left it.

        Accepts one worker's state (``state_dict()``; what torchdata's ``StatefulDataLoader``
        stores), a ``WebLoader`` state, or a list of every rank's ``WebLoader`` states (needed to
        resume on a different number of ranks or workers). With ``num_workers`` (the loader
        passes it), a resume on another topology is planned here, in the calling process, so
        its errors surface at once and every worker receives its share explicitly.
        """
        states = normalize(state)
        if num_workers is not None:
            states = self._plan_elastic(states, max(1, num_workers))
        self._resume = states
        self._epochs.set(int(states[0]["epoch"]))

    def _plan_elastic(self, states: list[dict[str, Any]], num_workers: int) -> list[dict[str, Any]]:
        """Turn states from another topology into this rank's same-topology states."""
        world = current_world(seed=self.seed)
        first = states[0]
        if (
            int(first["world_size"]) == world.world_size
            and int(first["num_workers"]) == num_workers
        ):
            return states
        source = self.stateful_source()
        elastic = getattr(source, "remaining_after", None)
        if elastic is None:
            raise ValueError(
                "resuming on a different number of ranks or workers needs exact_epoch=True "
                f"(was {first['world_size']} ranks x {first['num_workers']} workers, "
                f"now {world.world_size} x {num_workers})"
            )
        universe = [list(p) for p in elastic(states, world)]
        fresh = {"delivered": 0, "universe": universe}
        return [
            {
                **first,
                "rank": world.rank,
                "world_size": world.world_size,
                "num_workers": num_workers,
                "workers": {str(w): dict(fresh) for w in range(num_workers)},
            }
        ]

    def _apply_resume(self, world: World) -> None:
        states, self._resume = self._resume, None
        source = self.stateful_source()
        if not states:
            if source is not None and hasattr(source, "reset_position"):
                source.reset_position()  # state_dict() before the first item: start of epoch
            return
        if source is None:
            raise ValueError("this pipeline has no stateful source to resume")
        first = states[0]
        if int(first["epoch"]) != world.epoch:
            log.warning(
                "ignoring a loaded state of epoch %s: this iteration is epoch %d",
                first["epoch"],
                world.epoch,
            )
            if hasattr(source, "reset_position"):
                source.reset_position()
            return
        same = (
            int(first["world_size"]) == world.world_size
            and int(first["num_workers"]) == world.num_workers
            and len(states) in (1, world.world_size)
        )
        if same:
            by_rank = {int(s["rank"]): s for s in states}
            mine = by_rank.get(world.rank, first if len(states) == 1 else None)
            workers = mine["workers"] if mine is not None else {}
            worker_state = workers.get(str(world.worker))
            if worker_state is None:
                # Nothing delivered by this worker yet: start of its share, in the same universe
                # the other workers of the state were planned in.
                universe = next(
                    (
                        w.get("universe")
                        for w in workers.values()
                        if isinstance(w, dict) and w.get("universe")
                    ),
                    None,
                )
                worker_state = {
                    "delivered": 0,
                    "universe": universe,
                    "shards_done": 0,
                    "in_shard": 0,
                }
            source.load_state_dict(worker_state)
            return
        elastic = getattr(source, "remaining_after", None)
        if elastic is None:
            raise ValueError(
                "resuming on a different number of ranks or workers needs exact_epoch=True "
                f"(was {first['world_size']} ranks x {first['num_workers']} workers, "
                f"now {world.world_size} x {world.num_workers})"
            )
        source.load_state_dict({"universe": elastic(states, world), "delivered": 0})

    def _source_iter(self, world: World) -> Iterator[Any]:
        source = self.pipeline[0]
        if isinstance(source, Stage):
            return source.apply((), world)
        if isinstance(source, PipelineStage) and not isinstance(source, Iterable):
            return iter(source.run())  # webdataset calls a PipelineStage source with no input
        if isinstance(source, Iterable):
            return iter(source)
        if callable(source):
            return iter(source())
        raise TypeError(f"pipeline source must be iterable or callable, got {source!r}")

    def iterator1(self, world: World) -> Iterator[Any]:
        """One pass: source, then each stage in turn."""
        it = self._source_iter(world)
        for stage in self.pipeline[1:]:
            it = apply_stage(stage, it, world)
        return it

    def _cycles(self, world: World) -> Iterator[Any]:
        cycles = itertools.count() if self.repetitions is None else range(self.repetitions)
        for cycle in cycles:
            w = World(**{**vars(world), "cycle": cycle})
            empty = True
            for sample in self.iterator1(w):
                empty = False
                yield sample
            if empty and (self.repetitions is None or self.repetitions > 1):
                return  # an empty pass would otherwise spin forever

    def __iter__(self) -> Iterator[Any]:
        world = current_world(seed=self.seed)
        world = World(**{**vars(world), "epoch": self._epochs.take(world.worker)})
        self._apply_resume(world)
        self._live = {"epoch": world.epoch, **_coords(world)}
        it = self._cycles(world)
        if self.nsamples is not None:
            it = itertools.islice(it, self.nsamples)
        if self._emit_state:
            return self._with_state(it)
        return it

    def _with_state(self, it: Iterator[Any]) -> Iterator[Any]:
        for item in it:
            yield StatefulItem(item, self.state_dict(), self._process_counters())

    def _process_counters(self) -> dict[str, float]:
        snap = COUNTERS.snapshot()
        cache = getattr(getattr(self, "storage", None), "cache", None)
        if cache is not None:
            cs = cache.stats()
            snap["cache_hits"] = cs.get("hits", 0)
            snap["cache_misses"] = cs.get("misses", 0)
            snap["bytes_cache"] = cs.get("bytes_served_from_cache", 0)
        return snap

    def stats(self) -> dict[str, Any]:
        """This process's loader counters and rates (see :mod:`cloudwds.stats`)."""
        return with_rates(self._process_counters())

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("this pipeline has no length; use .with_length(n) to declare one")
        return self.length

    # -- building (each returns a new pipeline) ------------------------------------------
    def _copy(self) -> DataPipeline:
        new = copy.copy(self)
        new.pipeline = list(self.pipeline)
        new._epochs = EpochCounter(self.epoch)  # a copy never advances the original's epochs
        new._resume = None
        new._live = None
        return new

    def compose(self, *stages: Callable[..., Any]) -> DataPipeline:
        """A new pipeline with ``stages`` appended (plain ``iterator -> iterator`` functions ok)."""
        new = self._copy()
        new.pipeline.extend(stages)
        return new

    def with_epoch(self, nsamples: int = -1, nbatches: int = -1) -> DataPipeline:
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

    def repeat(self, nepochs: int | None = None, nbatches: int | None = None) -> DataPipeline:
        """Repeat the pass ``nepochs`` times per iteration (``None``: forever)."""
        new = self._copy()
        new.repetitions = None if nepochs is None or nepochs < 0 else nepochs
        if nbatches is not None and nbatches >= 0:
            new.nsamples = nbatches
        return new

    def with_length(self, n: int, silent: bool = False) -> DataPipeline:
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
        return DataPipeline(f)._source_iter(current_world(seed=self.seed))

    def close(self) -> None:
        """Close every element that has ``close()`` (caches, opened resources).

        Runs hold no open resources after they end, so this is only needed for elements
        with their own state; the pipeline stays usable (webdataset deletes it).
        """
        for step in self.pipeline:
            close = getattr(step, "close", None)
            if callable(close) and not isinstance(step, type):
                close()

    def __enter__(self) -> DataPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(s) for s in self.pipeline)
        return f"{type(self).__name__}(\n  {inner}\n)"


def _coords(world: World) -> dict[str, int]:
    return {
        "rank": world.rank,
        "world_size": world.world_size,
        "worker": world.worker,
        "num_workers": world.num_workers,
    }


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
