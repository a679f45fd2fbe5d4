"""Exact-epoch planning: which samples each rank and worker reads, as pure functions.

The universe of an epoch is a list of *pieces* ``(shard, start, stop)`` — sample ranges of shards,
whole shards at the start of an epoch, the unseen remainder after an elastic resume. The plan:

1. order the pieces: permuted by ``(seed, epoch)`` (the same permutation on every rank);
2. concatenate them into one stream of ``N`` sample positions;
3. give each rank a contiguous ``per_rank`` positions, where ``per_rank = N // world_size``
   (``remainder="drop"``: up to ``world_size - 1`` samples are left out) or
   ``ceil(N / world_size)`` (``"pad"``: the stream wraps around, repeating a few samples);
4. split each rank's share among its workers as evenly as possible (sizes differ by at most one
   and are the same on every rank, so every rank yields the same number of batches);
5. each worker reads its positions in windows of ``window`` samples, each window in a permuted
   order derived from ``(seed, epoch, rank, worker, window index)``.

A worker's position is one integer ``p`` (samples delivered), so the set of samples it has
delivered is computable from the plan alone: that is what makes resume tiny and elastic.

Invariants: the pieces of one plan never overlap; with ``"drop"`` every position is assigned at
most once; with ``"pad"`` every sample is assigned at least once.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .world import World

Piece = tuple[int, int, int]  # (shard index, first sample, one past the last sample)


@dataclass(frozen=True)
class EpochPlan:
    """The assignment of one epoch: ``spans[rank][worker]`` lists the pieces that worker reads."""

    spans: tuple[tuple[tuple[Piece, ...], ...], ...]
    per_worker: tuple[int, ...]  # samples per worker (identical on every rank)
    total: int  # samples in the universe (before pad/drop)

    def worker_spans(self, rank: int, worker: int) -> tuple[Piece, ...]:
        return self.spans[rank][worker]


def order_pieces(
    pieces: Sequence[Piece], seed: int, epoch: int, shuffle: bool = True
) -> list[Piece]:
    """The epoch's piece order: a permutation by ``(seed, epoch)`` shared by all ranks."""
    ordered = list(pieces)
    if shuffle:
        World(seed=seed, epoch=epoch).rng("pieces", per_rank=False, per_worker=False).shuffle(
            ordered
        )
    return ordered


def _take(
    pieces: Sequence[Piece], starts: Sequence[int], total: int, begin: int, count: int
) -> list[Piece]:
    """Positions ``[begin, begin + count)`` of the concatenated stream (wrapping) as pieces."""
    out: list[Piece] = []
    pos = begin % total if total else 0
    remaining = count
    while remaining > 0:
        i = bisect.bisect_right(starts, pos) - 1
        shard, start, stop = pieces[i]
        offset = pos - starts[i]
        n = min(remaining, (stop - start) - offset)
        out.append((shard, start + offset, start + offset + n))
        remaining -= n
        pos = (pos + n) % total
    return out


def plan_epoch(
    pieces: Sequence[Piece],
    world_size: int,
    num_workers: int,
    seed: int,
    epoch: int,
    remainder: str = "pad",
    shuffle: bool = True,
) -> EpochPlan:
    """Assign the pieces to ``world_size`` ranks × ``num_workers`` workers (see module doc)."""
    if remainder not in ("pad", "drop"):
        raise ValueError(f"remainder must be 'pad' or 'drop', got {remainder!r}")
    if world_size < 1 or num_workers < 1:
        raise ValueError(
            f"world_size and num_workers must be >= 1, got {world_size}, {num_workers}"
        )
    ordered = [p for p in order_pieces(pieces, seed, epoch, shuffle) if p[2] > p[1]]
    starts = []
    total = 0
    for _, start, stop in ordered:
        starts.append(total)
        total += stop - start
    per_rank = total // world_size if remainder == "drop" else math.ceil(total / world_size)
    base, extra = divmod(per_rank, num_workers)
    per_worker = tuple(base + (1 if w < extra else 0) for w in range(num_workers))
    spans = []
    for rank in range(world_size):
        rank_spans = []
        begin = rank * per_rank
        for w in range(num_workers):
            rank_spans.append(
                tuple(_take(ordered, starts, total, begin, per_worker[w])) if total else ()
            )
            begin += per_worker[w]
        spans.append(tuple(rank_spans))
    return EpochPlan(tuple(spans), per_worker, total)


def window_order(
    n: int, window: int, seed: int, epoch: int, rank: int, worker: int, index: int
) -> list[int]:
    """The delivery order of window ``index`` (``n`` samples) of one worker."""
    order = list(range(n))
    if window > 1:
        World(seed=seed, epoch=epoch, rank=rank, worker=worker).rng("window", index).shuffle(order)
    return order


def positions(spans: Sequence[Piece]) -> Iterator[tuple[int, int]]:
    """The ``(shard, sample)`` pairs of a worker's spans, in reading order."""
    for shard, start, stop in spans:
        for i in range(start, stop):
            yield shard, i


def delivered_and_remaining(
    spans: Sequence[Piece],
    delivered: int,
    window: int,
    seed: int,
    epoch: int,
    rank: int,
    worker: int,
) -> tuple[list[tuple[int, int]], list[Piece]]:
    """Split a worker's spans into what it delivered (after ``delivered`` samples) and the rest.

    Returns the delivered ``(shard, sample)`` pairs and the remaining samples as pieces
    (contiguous ranges merged), which is what an elastic resume redistributes.
    """
    flat = list(positions(spans))
    window = max(1, window)
    done_windows, in_window = divmod(delivered, window)
    done: list[tuple[int, int]] = []
    for index in range(done_windows):
        chunk = flat[index * window : (index + 1) * window]
        done.extend(
            chunk[i] for i in window_order(len(chunk), window, seed, epoch, rank, worker, index)
        )
    current = flat[done_windows * window : (done_windows + 1) * window]
    order = window_order(len(current), window, seed, epoch, rank, worker, done_windows)
    taken = [current[i] for i in order[:in_window]]
    left = [current[i] for i in sorted(order[in_window:])]
    tail = flat[(done_windows + 1) * window :]
    return done + taken, _merge(left + tail)


def _merge(pairs: Sequence[tuple[int, int]]) -> list[Piece]:
    """Merge ``(shard, sample)`` pairs into maximal contiguous pieces (order kept)."""
    out: list[Piece] = []
    for shard, i in pairs:
        if out and out[-1][0] == shard and out[-1][2] == i:
            out[-1] = (shard, out[-1][1], i + 1)
        else:
            out.append((shard, i, i + 1))
    return out
