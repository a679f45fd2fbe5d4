"""``WebLoader``: a ``torch.utils.data.DataLoader`` with the fluent stages applied after it.

``WebLoader(dataset, num_workers=4, batch_size=None).unbatched().shuffle(1000).batched(12)``
batches inside the workers, then re-batches across workers in the main process, as in the
webdataset README. Each ``iter()`` is one epoch; ``set_epoch(n)`` chooses it.

Checkpoints: with a cloudwds pipeline as dataset, every item a worker hands out travels with
that worker's position (a few integers), and ``state_dict()`` returns, per worker, the position
after the last item *delivered to the caller* — items prefetched by the DataLoader but not yet
taken do not count. ``load_state_dict()`` makes the next iteration continue that epoch. Exact
for pipelines whose main-process stages do not hold items back (``map``, ``to_tuple``...);
a main-process ``shuffle``/``batched`` holds items in its buffer that the workers have already
delivered, and those are skipped on resume. Resume needs workers created for the iteration
(the default ``persistent_workers=False``).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

from .fluent import FluidInterface
from .pipeline import DataPipeline
from .resume import (
    StateCollate,
    StatefulItem,
    gather_states,
    loader_state,
    rank_positions,
    worker_entry,
)
from .shmbatch import install as install_shared
from .shmbatch import receive_all as receive_shared
from .stages import apply_stage
from .stats import COUNTERS, WaitTimer, format_stats, merge, with_rates
from .world import current_world, default_seed

log = logging.getLogger("cloudwds.stats")


class WebLoader(FluidInterface):
    """A DataLoader plus post-processing stages; every fluent call returns a new WebLoader."""

    def __init__(
        self,
        dataset: Any,
        *args: Any,
        seed: int | None = None,
        stats_interval: float | None = None,
        shared_batches: bool | None = None,
        **kwargs: Any,
    ):
        from torch.utils.data import DataLoader
        from torch.utils.data._utils.collate import default_collate, default_convert

        self.dataset = dataset
        use_shared = False
        if isinstance(dataset, DataLoader):
            self.loader = dataset
        elif isinstance(dataset, DataPipeline) and not args:
            # shares the epoch counter: set_epoch on either works
            inner = dataset.stateful_items(batch_size=kwargs.get("batch_size", 1))
            # workers collate the last batched() into reused shared memory (shmbatch) unless
            # shared_batches=False or WDS_SHARED_BATCHES=0; ineligible pipelines go the plain way
            if shared_batches is None:
                shared_batches = os.environ.get("WDS_SHARED_BATCHES", "1").lower() not in (
                    "0",
                    "false",
                    "no",
                    "off",
                )
            use_shared = (
                shared_batches
                and kwargs.get("num_workers", 0) > 0
                and kwargs.get("batch_size", 1) is None
                and "collate_fn" not in kwargs
                and install_shared(inner)
            )
            batched = kwargs.get("batch_size", 1) is not None
            collate = kwargs.pop("collate_fn", None) or (
                default_collate if batched else default_convert
            )
            self.loader = DataLoader(inner, collate_fn=StateCollate(collate, batched), **kwargs)
        else:
            self.loader = DataLoader(dataset, *args, **kwargs)
        self.shared_batches = use_shared
        self.stages: list[Callable[..., Any]] = []
        self.seed = default_seed(seed)
        self.length: int | None = None
        self.nsamples: int | None = None
        self.repetitions: int | None = 1  # passes per iteration; None = forever
        self._states: dict[int, Any] = {}
        self._loaded: dict[int, Any] = {}
        self._worker_stats: dict[int, Any] = {}
        self._waits = WaitTimer()
        self.stats_interval = stats_interval
        self._last_log = time.monotonic()
        self._epoch = 0
        self._own_epoch = 0  # used when the dataset has no epochs of its own

    def compose(self, *stages: Callable[..., Any]) -> Self:
        new = copy.copy(self)
        new.stages = self.stages + list(stages)
        return new

    # -- epochs and state ----------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``, for the loader's stages and the dataset."""
        dataset = self.loader.dataset
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        self._own_epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        """This rank's position: the epoch and each worker's source state (see module doc)."""
        world = current_world(seed=self.seed)
        workers = max(1, self.loader.num_workers)
        return loader_state(
            self._epoch,
            world.rank,
            world.world_size,
            workers,
            getattr(self.loader.dataset, "seed", self.seed),
            self._states,
        )

    def gathered_state_dict(self) -> list[dict[str, Any]]:
        """Every rank's ``state_dict()`` (all-gather); what an elastic resume needs."""
        return gather_states(self.state_dict())

    def load_state_dict(self, state: Any) -> None:
        """Continue from ``state`` (one rank's, or the list of all ranks') at the next ``iter()``."""
        dataset = self.loader.dataset
        if not hasattr(dataset, "load_state_dict"):
            raise TypeError(f"{type(dataset).__name__} cannot be resumed")
        if isinstance(dataset, DataPipeline):
            staged = dataset.load_state_dict(state, num_workers=self.loader.num_workers) or []
            # positions loaded but not yet advanced are still this loader's state
            self._loaded = rank_positions(staged, current_world().rank) if staged else {}
        else:
            dataset.load_state_dict(state)

    # -- iterating -----------------------------------------------------------------------
    def _one_pass(self) -> Iterator[Any]:
        """One pass over the DataLoader with the stages applied; uses up one epoch number."""
        dataset = self.loader.dataset
        if hasattr(dataset, "epoch"):
            epoch = dataset.epoch
        else:
            epoch = self._own_epoch
            self._own_epoch += 1
        self._epoch = epoch
        self._states = dict(self._loaded)
        self._loaded = {}
        world = current_world(epoch=epoch, seed=self.seed)
        it: Iterator[Any] = self._unwrap(iter(self.loader))
        if self.shared_batches:
            it = receive_shared(it, pin=self.loader.pin_memory)
        if self.loader.num_workers > 0 and isinstance(dataset, DataPipeline):
            # The workers took their copies of a staged resume: forget it here. Their epochs
            # advance in the shared counter by themselves (see cloudwds.epochs).
            dataset.load_state_dict(None)
        for stage in self.stages:
            it = apply_stage(stage, it, world)
        return self._timed(it)

    def _timed(self, it: Iterator[Any]) -> Iterator[Any]:
        """Measure how long each step waits for its item; log stats every ``stats_interval``."""
        clock = time.perf_counter
        while True:
            t0 = clock()
            try:
                item = next(it)
            except StopIteration:
                return
            self._waits.record(clock() - t0)
            if (
                self.stats_interval is not None
                and time.monotonic() - self._last_log >= self.stats_interval
            ):
                self._last_log = time.monotonic()
                log.info("loader stats: %s", format_stats(self.stats()))
            yield item

    def stats(self) -> dict[str, Any]:
        """Counters merged over this loader's workers plus data-wait times (plain dict).

        ``samples``, ``shards_opened``, ``bytes_remote``/``bytes_local``/``bytes_cache`` (bytes
        from object stores, local files, the cache), ``cache_hits``/``cache_misses``,
        ``retries``, ``errors``, rates per second, ``cache_hit_ratio``, and ``steps`` with
        ``wait_total_s``/``wait_mean_s``/``wait_max_s``/``wait_last_s``: the time the caller
        spent waiting for data.
        """
        snaps = list(self._worker_stats.values())
        if self.loader.num_workers == 0 or not snaps:
            # in-process: the pipeline's live counters (the snapshots that travelled with the
            # items are earlier copies of the same counters, not another worker's)
            dataset = self.loader.dataset
            snaps = [
                dataset.counters() if isinstance(dataset, DataPipeline) else COUNTERS.snapshot()
            ]
        return with_rates(merge(snaps), self._waits.as_dict())

    def _unwrap(self, it: Iterator[Any]) -> Iterator[Any]:
        states = self._states
        for out in it:
            if isinstance(out, StatefulItem):
                worker = int(out.state.get("worker", 0))
                states[worker] = worker_entry(out.state)
                if out.stats is not None:
                    self._worker_stats[worker] = out.stats
                yield out.item
            else:
                yield out

    def __iter__(self) -> Iterator[Any]:
        if self.nsamples is None and self.repetitions == 1:
            return self._one_pass()
        return self._take(self.nsamples)

    def _take(self, n: int | None) -> Iterator[Any]:
        # Passes are restarted whole (DataLoader and stages), each with the next epoch.
        count = 0
        passes = 0
        while (n is None or count < n) and (self.repetitions is None or passes < self.repetitions):
            passes += 1
            empty = True
            for item in self._one_pass():
                empty = False
                yield item
                count += 1
                if n is not None and count >= n:
                    return
            if empty:
                return

    def __len__(self) -> int:
        if self.length is not None:
            return self.length
        if self.nsamples is not None:
            return self.nsamples
        return len(self.loader)

    def with_length(self, n: int) -> Self:
        """Declare ``len()``; it does not limit iteration."""
        new = copy.copy(self)
        new.length = int(n)
        return new

    def repeat(self, nepochs: int | None = None, nbatches: int | None = None) -> Self:
        """Each iteration runs ``nepochs`` passes over the DataLoader (``None``/``-1``: forever).

        ``nbatches`` (``>= 0``) additionally cuts the iteration at that many items. Each pass is
        a new dataset epoch, as with :meth:`with_epoch`.
        """
        new = copy.copy(self)
        new.repetitions = None if nepochs is None or nepochs < 0 else int(nepochs)
        if nbatches is not None and nbatches >= 0:
            new.nsamples = int(nbatches)
        return new

    def close(self) -> None:
        """Close the dataset's resources (webdataset's ``WebLoader`` is a closable pipeline)."""
        close = getattr(self.loader.dataset, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_epoch(self, n: int) -> Self:
        """Yield exactly ``n`` items per iteration (after all stages), restarting as needed.

        Each restart of the DataLoader is a new dataset epoch, so orders differ between passes.
        ``-1`` undoes it.
        """
        new = copy.copy(self)
        new.nsamples = None if n < 0 else int(n)
        new.repetitions = None if n >= 0 else 1
        return new
