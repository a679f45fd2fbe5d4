"""ShardAwareSampler: a shuffle that keeps reads inside a few shards at a time.

``RandomSampler`` over an :class:`~cloudwds.indexed.IndexedWebDataset` is a uniform shuffle,
but consecutive samples come from any shard: without a cache every sample is a request, with
one the whole dataset must fit the cache. This sampler shuffles the shard order, then takes
``window`` shards at a time and shuffles the samples of those shards together: at any moment a
rank reads from about ``window`` shards, so a cache of ``window`` (+1) shards per rank suffices
and each shard is downloaded once per epoch.

Epochs and seeds: the order depends only on ``(seed, epoch)`` (``set_epoch(epoch)`` as with
``DistributedSampler``), never on the process, so every rank computes the same global order.

Ranks, as ``DistributedSampler``: every rank gets the same number of indices. The global order
is cut into ``world_size`` consecutive blocks (not interleaved: a rank keeps to its own shards);
with ``drop_last=False`` (default) the order is first padded with its own first indices up to a
multiple of ``world_size`` (a few samples appear twice per epoch), with ``drop_last=True`` its
tail is dropped (a few samples are skipped this epoch; which ones changes with the epoch).
Either way the union over ranks covers every index at least (padding) or at most (dropping)
once, and exactly once when ``len(dataset)`` is a multiple of ``world_size``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from ..world import distributed_rank

__all__ = ["ShardAwareSampler"]


class ShardAwareSampler:
    """Indices of ``dataset`` (an IndexedWebDataset, or per-shard sample counts), shard-local.

    ``window``: shards whose samples are shuffled together (1: shard by shard). ``shuffle=False``
    keeps shard and sample order (still split across ranks). ``rank``/``world_size`` default to
    ``torch.distributed``'s when it is initialized, else 0 and 1.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        window: int = 4,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ):
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        counts: Sequence[int] = (
            [len(t) for t in dataset.tables] if hasattr(dataset, "tables") else list(dataset)
        )
        rank, world_size = _rank_and_world(rank, world_size)
        self.counts = list(counts)
        self.window = window
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.total = sum(self.counts)
        if drop_last:
            self.num_samples = self.total // world_size
        else:
            self.num_samples = -(-self.total // world_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order :meth:`__iter__` gives (call it before each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def global_order(self) -> list[int]:
        """This epoch's order of all indices, before the split across ranks."""
        starts = [0]
        for c in self.counts:
            starts.append(starts[-1] + c)
        shards = list(range(len(self.counts)))
        rng = random.Random(f"cloudwds-shard-aware:{self.seed}:{self.epoch}")
        if self.shuffle:
            rng.shuffle(shards)
        order: list[int] = []
        for w in range(0, len(shards), self.window):
            block = [
                i for s in shards[w : w + self.window] for i in range(starts[s], starts[s + 1])
            ]
            if self.shuffle:
                rng.shuffle(block)
            order.extend(block)
        return order

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        size = self.num_samples * self.world_size
        if size > len(order):  # pad with the order's own beginning (DistributedSampler's way)
            while len(order) < size:
                order.extend(order[: size - len(order)])
        else:
            order = order[:size]
        begin = self.rank * self.num_samples
        return iter(order[begin : begin + self.num_samples])


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Fill what the caller left out from :func:`~cloudwds.world.distributed_rank`, then check."""
    if rank is None or world_size is None:
        default_rank, default_size = distributed_rank()
        rank = default_rank if rank is None else rank
        world_size = default_size if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return rank, world_size


class GlobalShuffleSampler:
    """A uniform shuffle of all indices, equal counts per rank, resumable exactly and elastically.

    Order: a permutation of ``range(len(dataset))`` that depends only on ``(seed, epoch)``.
    Rank ``r`` of ``world_size`` takes positions ``r, r + world_size, ...`` of it (interleaved,
    so that after every rank has consumed ``k`` samples, the samples seen are exactly the first
    ``k * world_size`` of the order). Equal counts as with ``DistributedSampler``: the order is
    padded with its own beginning (``drop_last=False``) or its tail is left out of this epoch
    (``drop_last=True``).

    Resume: ``state = sampler.state_dict(consumed)`` where ``consumed`` is the number of samples
    *the training loop* of each rank has taken this epoch (``batches * batch_size``; the
    sampler itself runs ahead by the DataLoader's prefetch, so it cannot know). All ranks hold
    the same state; save one. ``load_state_dict(state)`` on any number of ranks makes the next
    iteration yield exactly the samples of that epoch not yet seen, split the same way; the
    following ``set_epoch`` starts a full epoch again. Resumes can be chained: the state keeps
    the ``(world_size, consumed)`` of each, so the remainder is recomputed, never stored.

    I/O: every sample can come from any shard, so without a cache each sample is one ranged
    request, and with one the cache should hold the dataset; :class:`ShardAwareSampler` keeps
    reads local instead.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ):
        size = dataset if isinstance(dataset, int) else len(dataset)
        rank, world_size = _rank_and_world(rank, world_size)
        self.size = int(size)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.resumes: list[tuple[int, int]] = []  # (world_size, consumed per rank), in order

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch; a different epoch than a loaded state's starts it from the top."""
        if epoch != self.epoch:
            self.resumes = []
        self.epoch = epoch

    def remaining(self) -> list[int]:
        """This epoch's indices not yet consumed, in order (all of them without a resume)."""
        import numpy as np

        key = (self.seed, self.epoch, tuple(self.resumes))
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0] == key:
            return list(memo[1])  # len(loader) asks often: one permutation per epoch
        rng = np.random.default_rng([self.seed & (2**63 - 1), self.epoch, 0x1D5])
        order = rng.permutation(self.size).tolist()
        for world_size, consumed in self.resumes:
            order = order[min(len(order), consumed * world_size) :]
        self._memo = (key, order)
        return list(order)

    def _per_rank(self, n: int) -> int:
        return n // self.world_size if self.drop_last else -(-n // self.world_size)

    def __len__(self) -> int:
        return self._per_rank(len(self.remaining()))

    def __iter__(self) -> Iterator[int]:
        order = self.remaining()
        per_rank = self._per_rank(len(order))
        size = per_rank * self.world_size
        if size > len(order):
            while len(order) < size:
                order.extend(order[: size - len(order)])
        return iter(order[self.rank : size : self.world_size])

    def state_dict(self, consumed: int) -> dict[str, Any]:
        """State after each rank's training loop took ``consumed`` samples of this epoch."""
        if consumed < 0:
            raise ValueError(f"consumed must be >= 0, got {consumed}")
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "size": self.size,
            "resumes": [list(r) for r in self.resumes] + [[self.world_size, int(consumed)]],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the saved epoch with this sampler's rank and world size."""
        if int(state["size"]) != self.size:
            raise ValueError(
                f"state is for a dataset of {state['size']} samples, this one has {self.size}"
            )
        self.seed = state["seed"]
        self.epoch = int(state["epoch"])
        self.resumes = [(int(w), int(c)) for w, c in state["resumes"]]
