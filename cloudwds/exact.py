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

from collections.abc import Iterator, Sequence
from typing import Any

from .errors import ShardError
from .handlers import Handler, reraise_exception
from .partition import Piece, _merge, delivered_and_remaining, plan_epoch, positions, window_order
from .samples import tar_samples
from .stages import Stage
from .stats import COUNTERS, count_samples
from .storage import StorageConfig, open_shard, prefetch_shard
from .world import World


class ExactEpochSource(Stage):
    """Source stage reading this worker's share of an exact epoch (see module doc)."""

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
        self.universe: list[Piece] | None = None  # None = all samples of all shards
        self.delivered = 0  # live counter while iterating
        # A loaded state (universe, samples already delivered) for the next iteration only.
        self._staged: tuple[list[Piece] | None, int] | None = None

    # -- state ---------------------------------------------------------------------------
    def pieces(self) -> list[Piece]:
        if self.universe is not None:
            return list(self.universe)
        return [(i, 0, n) for i, n in enumerate(self.counts)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "universe": None if self.universe is None else [list(p) for p in self.universe],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next iteration (only) resume ``state``; later ones read whole epochs.

        Until that iteration starts, ``state_dict()`` already reports the loaded position: a
        checkpoint taken before the resumed worker delivers anything must not rewind it.
        """
        universe = state.get("universe")
        pieces = None if universe is None else [tuple(p) for p in universe]
        self._staged = (pieces, int(state.get("delivered", 0)))  # type: ignore[assignment]
        self.universe, self.delivered = self._staged

    def reset_position(self) -> None:
        """A fresh epoch starts: whole universe, nothing delivered yet."""
        self._staged = None
        self.universe, self.delivered = None, 0

    # -- reading -------------------------------------------------------------------------
    def plan(self, world: World):
        return plan_epoch(
            self.pieces(),
            world.world_size,
            world.num_workers,
            world.seed,
            world.epoch,
            self.remainder,
            self.shuffle,
            self.batch_size,
        )

    def remaining_after(self, states: Sequence[dict[str, Any]], world: World) -> list[Piece]:
        """The samples of the epoch not yet delivered, given every rank's loader state.

        Recomputes the plan the states were taken under, asks each old worker's spans which
        samples its ``delivered`` count covers, and returns the rest as pieces — the universe of
        the resumed epoch on the new topology.
        """
        first = states[0]
        world_size, num_workers = int(first["world_size"]), int(first["num_workers"])
        epoch = int(first["epoch"])
        ranks = {int(s["rank"]) for s in states}
        if ranks != set(range(world_size)):
            raise ValueError(
                f"an elastic resume needs the states of all {world_size} ranks, got ranks "
                f"{sorted(ranks)} (gather them with WebLoader.gathered_state_dict())"
            )
        delivered_by: dict[tuple[int, int], int] = {}
        universe = None
        for state in states:
            for worker, source in state["workers"].items():
                if source is None:
                    continue
                delivered_by[(int(state["rank"]), int(worker))] = int(source.get("delivered", 0))
                if source.get("universe") is not None:
                    universe = [tuple(p) for p in source["universe"]]
        pieces = (
            universe if universe is not None else [(i, 0, n) for i, n in enumerate(self.counts)]
        )
        plan = plan_epoch(
            pieces,
            world_size,
            num_workers,
            world.seed,
            epoch,
            self.remainder,
            self.shuffle,
            self.batch_size,
        )
        seen: set[tuple[int, int]] = set()
        rest: list[tuple[int, int]] = []
        for rank in range(world_size):
            for worker in range(num_workers):
                done, remaining = delivered_and_remaining(
                    plan.worker_spans(rank, worker),
                    delivered_by.get((rank, worker), 0),
                    self.window,
                    world.seed,
                    epoch,
                    rank,
                    worker,
                )
                seen.update(done)
                rest.extend(positions(remaining))
        left = sorted({p for p in rest if p not in seen})
        return _merge(left)

    def apply(self, src, world):
        staged, self._staged = self._staged, None
        self.universe, start_at = staged if staged is not None else (None, 0)
        self.delivered = start_at
        spans = self.plan(world).worker_spans(world.rank, world.worker)
        return self._deliver(spans, start_at, world)

    def _deliver(self, spans: Sequence[Piece], start_at: int, world: World) -> Iterator[Any]:
        window = self.window
        first_window, skip = divmod(start_at, window)
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
                if index == first_window and k < skip:
                    self.delivered += 1
                    continue
                self.delivered += 1
                yield chunk[i]
            index += 1

    def _read_pieces(self, spans: Sequence[Piece], skip: int) -> Iterator[dict[str, Any]]:
        """Samples of ``spans`` in order, starting after the first ``skip`` positions.

        Consecutive pieces of one shard (sorted, as the planner emits them) are read in a
        single pass over the shard.
        """
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
        from .cache.prefetch import PrefetchGroup

        with PrefetchGroup() as group:  # this iteration's prefetches end with it
            for k, (shard, ranges) in enumerate(runs):
                if k + 1 < len(runs) and self.storage.cache is not None:
                    prefetch_shard(self.urls[runs[k + 1][0]], self.storage, group)
                yield from self._read_ranges(shard, ranges)

    def _read_ranges(
        self, shard: int, ranges: Sequence[tuple[int, int]]
    ) -> Iterator[dict[str, Any]]:
        """The samples of one shard whose index falls in ``ranges`` (sorted, disjoint)."""
        url = self.urls[shard]
        last = ranges[-1][1]
        count = 0
        r = 0
        with open_shard(url, self.storage) as opened:
            COUNTERS.add("shards_opened")
            for sample in tar_samples(opened.stream, url, opened.local_path):
                if count >= last:
                    if self.storage.cache is not None and opened.local_path is None:
                        # Other workers read the other pieces of this shard from the cached
                        # copy: read on, so that its one download completes (a download that
                        # nobody reads any more is cancelled).
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


def shard_counts(urls: Sequence[str], storage: StorageConfig, index: Any = None) -> list[int]:
    """Samples per shard, from ``index`` (a Manifest or its URL), the shards' own index, or a count.

    Counting reads every shard once (through the cache, if any) and is remembered in
    ``<cache>/counts/`` (the shard cache dir, else ``$XDG_CACHE_HOME/cloudwds``), so it happens
    once per dataset and machine. Run ``cloudwds index`` to write a shared index instead.
    """
    import hashlib
    import json
    import logging
    import os

    from .index import Manifest, build_index, find_index, load_index

    manifest = None
    if isinstance(index, Manifest):
        manifest = index
    elif index is not None:
        manifest = load_index(os.fspath(index), storage)
    else:
        manifest = find_index(urls, storage)
    if manifest is not None:
        infos = [manifest.get(u) for u in urls]
        if all(i is not None for i in infos):
            return [i.samples for i in infos]  # type: ignore[union-attr]
        if index is not None:
            missing = [u for u, i in zip(urls, infos) if i is None]
            raise ValueError(f"the index does not list {len(missing)} shards, e.g. {missing[0]!r}")
    root = (
        storage.cache.cache_dir
        if storage.cache is not None
        else os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cloudwds"
        )
    )
    digest = hashlib.sha1("\n".join(urls).encode()).hexdigest()
    remembered = os.path.join(os.fspath(root), "counts", f"{digest}.json")
    try:
        with open(remembered) as f:
            doc = json.load(f)
        if doc.get("urls") == list(urls):
            return [int(c) for c in doc["counts"]]
    except (OSError, ValueError, KeyError):
        pass
    logging.getLogger("cloudwds").info("counting samples of %d shards for exact epochs", len(urls))
    counted = build_index(list(urls), storage, checksum=None)
    counts = [i.samples for i in counted.shards]
    try:
        os.makedirs(os.path.dirname(remembered), exist_ok=True)
        tmp = f"{remembered}.{os.getpid()}.part"
        with open(tmp, "w") as f:
            json.dump({"urls": list(urls), "counts": counts}, f)
        os.replace(tmp, remembered)
    except OSError:
        pass
    return counts
