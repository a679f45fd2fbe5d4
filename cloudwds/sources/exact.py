"""The exact-epoch source: every sample once per epoch over all ranks and workers, resumable.

It replaces ``shard list → split_by_node → split_by_worker → tarfile_to_samples`` with a reader
of the sample ranges :func:`cloudwds.partition.plan_epoch` assigns to this rank and worker, and
shuffles by permuting windows of ``window`` samples (a shuffle buffer whose content is a pure
function of the position). Its state is the number of samples this worker has delivered; from
that, plus the plan's inputs, a resume (on the same or a different topology) knows exactly which
samples were seen. Shard sample counts come from an index (``cloudwds index`` /
:func:`cloudwds.index.build_index`) or are counted on first use and remembered.

State schema (``state_dict()`` of a pipeline whose source this is, per worker)::

    {"epoch": 3, "delivered": 1234, "universe": None | [[shard, start, stop], ...]}
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import ShardError
from ..handlers import Handler, reraise_exception
from ..partition import Piece, plan_epoch, window_order
from ..samples import tar_samples
from ..stagebase import StageRun, StatefulStage, handle_error
from ..stats import COUNTERS, count_samples
from ..storage import StorageConfig, open_shard, prefetch_shard
from ..world import World
from .seek import StaleOffsetsError, open_at_sample

log = logging.getLogger("cloudwds")


class ExactEpochSource(StatefulStage):
    """Source stage reading this worker's share of an exact epoch (see module doc).

    A recipe: each iteration is an :class:`_ExactRun` that owns the ``delivered`` count.
    ``handler`` decides what a shard that fails to open or parse costs: the default re-raises;
    ``warn_and_continue`` skips the rest of that shard's pieces and goes on with the next.
    """

    def __init__(
        self,
        urls: Sequence[str],
        counts: Sequence[int],
        storage: StorageConfig,
        window: int = 1,
        remainder: str = "balance",
        shuffle: bool = True,
        batch_size: int = 1,
        handler: Handler = reraise_exception,
    ):
        if len(urls) != len(counts):
            raise ValueError(f"{len(urls)} shard URLs but {len(counts)} sample counts")
        self.urls = list(urls)
        self.counts = [int(c) for c in counts]
        self.storage = storage
        self.window = max(1, int(window))
        self.remainder = remainder
        self.shuffle = shuffle
        self.batch_size = max(1, int(batch_size))
        self.handler = handler

    # -- state ---------------------------------------------------------------------------
    def pieces(self, universe: Sequence[Piece] | None = None) -> list[Piece]:
        """The epoch's samples: ``universe`` (an elastic resume's remainder) or all of them."""
        if universe is not None:
            return list(universe)
        return [(i, 0, n) for i, n in enumerate(self.counts)]

    def fresh_state(self) -> dict[str, Any]:
        return {"delivered": 0, "universe": None}

    def check_state(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        universe = state.get("universe")
        return {
            "delivered": int(state.get("delivered", 0)),
            "universe": None if universe is None else [list(p) for p in universe],
        }

    # -- reading -------------------------------------------------------------------------
    def plan(self, world: World, universe: Sequence[Piece] | None = None) -> Any:
        return self.plan_for(
            self.pieces(universe), world.world_size, world.num_workers, world.seed, world.epoch
        )

    def plan_for(
        self, pieces: Sequence[Piece], world_size: int, num_workers: int, seed: int, epoch: int
    ) -> Any:
        """The epoch plan of ``pieces`` on a topology (also used to re-plan an elastic resume)."""
        return plan_epoch(
            list(pieces),
            world_size,
            num_workers,
            seed,
            epoch,
            self.remainder,
            self.shuffle,
            self.batch_size,
        )

    def start(
        self,
        src: Iterable[Any],  # noqa: ARG002 - the StatefulStage.start signature; a source reads no input
        world: World,
        state: Mapping[str, Any] | None = None,
    ) -> StageRun:
        position = self.check_state(state or {}) or self.fresh_state()
        universe = position["universe"]
        pieces = None if universe is None else [(int(a), int(b), int(c)) for a, b, c in universe]
        return _ExactRun(self, world, pieces, position["delivered"])


class _ExactRun(StageRun):
    """One iteration of an :class:`ExactEpochSource`: this worker's spans and its count."""

    def __init__(
        self, source: ExactEpochSource, world: World, universe: list[Piece] | None, start_at: int
    ):
        super().__init__()
        self.source = source
        self.world = world
        self.universe = universe
        self.start_at = start_at
        self.delivered = start_at  # reported as loaded until the run moves on
        self.seeks: list[tuple[str, int, int]] = []  # (url, sample, byte) of seeked opens

    def state_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "universe": None if self.universe is None else [list(p) for p in self.universe],
        }

    def _items(self) -> Iterator[Any]:
        world = self.world
        spans = self.source.plan(world, self.universe).worker_spans(world.rank, world.worker)
        window = self.source.window
        first_window, skip = divmod(self.start_at, window)
        self.delivered = first_window * window
        reader = self._read_pieces(spans, first_window * window)
        index = first_window
        while True:
            chunk = [s for _, s in zip(range(window), reader)]
            if not chunk:
                return
            order = window_order(
                len(chunk), window, world.seed, world.epoch, world.rank, world.worker, index
            )
            for k, i in enumerate(order):
                self.delivered += 1
                if (index == first_window and k < skip) or chunk[i] is _MISSING:
                    continue
                yield chunk[i]
            index += 1

    def _read_pieces(self, spans: Sequence[Piece], skip: int) -> Iterator[dict[str, Any]]:
        """Samples of ``spans`` in order, starting after the first ``skip`` positions.

        Consecutive pieces of one shard (sorted, as the planner emits them) are read in a
        single pass over the shard.
        """
        resumed = self.start_at > 0  # open the first shard at its first owed sample
        runs: list[tuple[int, list[tuple[int, int]]]] = []
        for shard, start, stop in spans:
            n = stop - start
            if skip >= n:
                skip -= n
                continue
            start, skip = start + skip, 0
            if runs and runs[-1][0] == shard and runs[-1][1][-1][1] <= start:
                runs[-1][1].append((start, stop))
            else:
                runs.append((shard, [(start, stop)]))
        from ..cache.prefetch import PrefetchGroup

        source = self.source
        with PrefetchGroup() as group:  # this iteration's prefetches end with it
            for k, (shard, ranges) in enumerate(runs):
                if k + 1 < len(runs) and source.storage.cache is not None:
                    prefetch_shard(source.urls[runs[k + 1][0]], source.storage, group)
                try:
                    yield from self._read_ranges(shard, ranges, seek=k == 0 and resumed)
                except ShardGone as gone:
                    if gone.stop:  # the handler chose to end the iteration quietly
                        return
                    # The handler chose to go on: the rest of this shard's pieces are lost
                    # for this epoch, but they still count as handed out, so the position
                    # (and a resume from it) stays consistent with the plan.
                    yield from itertools.repeat(_MISSING, gone.missing)

    def _read_ranges(
        self, shard: int, ranges: Sequence[tuple[int, int]], seek: bool = False
    ) -> Iterator[dict[str, Any]]:
        """The samples of one shard whose index falls in ``ranges`` (sorted, disjoint).

        With ``seek`` (the first shard of a resumed run) the shard is opened at its first wanted
        sample when it has an offsets index (:mod:`.seek`), else read from its start.
        """
        source = self.source
        wanted = sum(b - a for a, b in ranges)
        given = 0
        first = ranges[0][0] if seek else 0
        try:
            while True:
                try:
                    for sample in self._read_shard(shard, ranges, first):
                        given += 1
                        yield sample
                    return
                except StaleOffsetsError as stale:  # raised before any sample was yielded
                    log.warning(
                        "%s: stale offsets index (%s); reading the shard from its start",
                        source.urls[shard],
                        stale,
                    )
                    first = 0
        except Exception as exn:
            go_on = handle_error(source.handler, exn, count=True)
            raise ShardGone(wanted - given, stop=not go_on) from exn

    def _read_shard(
        self, shard: int, ranges: Sequence[tuple[int, int]], first: int
    ) -> Iterator[dict[str, Any]]:
        """One pass over the shard, opened at sample ``first`` when its offsets allow."""
        source = self.source
        url = source.urls[shard]
        last = ranges[-1][1]
        seeked = open_at_sample(url, source.storage, first, source.counts[shard])
        opened = seeked.opened if seeked is not None else open_shard(url, source.storage)
        count = seeked.sample if seeked is not None else 0
        r = 0
        with opened:
            COUNTERS.add("shards_opened")
            samples: Iterable[dict[str, Any]] = tar_samples(opened.stream, url, opened.local_path)
            if seeked is not None:
                self.seeks.append((url, seeked.sample, seeked.offset))
                samples = seeked.verified(samples)
            for sample in samples:
                if count >= last:
                    if (
                        seeked is None
                        and source.storage.cache is not None
                        and not opened.local_path
                    ):
                        # Other workers read the other pieces of this shard from the
                        # cached copy: read on, so that its one download completes (a
                        # download that nobody reads any more is cancelled).
                        while opened.stream.read(1 << 20):
                            pass
                    return
                while ranges[r][1] <= count:
                    r += 1
                if count >= ranges[r][0]:
                    count_samples()
                    yield sample
                count += 1
        if count < last:
            raise ShardError(f"shard has {count} samples, the index says at least {last}", url)


class ShardGone(Exception):
    """Internal: a shard failed and the handler chose to continue without its rest (or stop)."""

    def __init__(self, missing: int, stop: bool):
        super().__init__(missing)
        self.missing = missing
        self.stop = stop


_MISSING = object()  # a planned sample lost to a skipped shard error: counted, never handed out
