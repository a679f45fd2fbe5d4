"""Exact-epoch planning: which samples each rank and worker reads, as pure functions.

The universe of an epoch is a list of *pieces* ``(shard, start, stop)`` — sample ranges of shards,
whole shards at the start of an epoch, the unseen remainder after an elastic resume. The plan:

1. order the pieces: permuted by ``(seed, epoch)`` (the same permutation on every rank);
2. concatenate them into one stream of ``N`` sample positions;
3. cut the stream into ``world_size * num_workers`` contiguous slots, rank-major, sized by
   :func:`slot_counts`: by default (``"balance"``) every sample exactly once and every worker
   of every rank the same number of batches — so DDP never waits on a rank with one batch
   less; ``"pad"``/``"drop"`` give equal sample counts by repeating/leaving out a few samples;
4. each worker reads its positions in windows of ``window`` samples, each window in a permuted
   order derived from ``(seed, epoch, rank, worker, window index)``.

A worker's position is one integer ``p`` (samples delivered), so the set of samples it has
delivered is computable from the plan alone: that is what makes resume tiny and elastic.

Invariants: with ``"balance"`` and ``"drop"`` no position is assigned twice; with ``"balance"``
and ``"pad"`` every sample is assigned (``"balance"`` repeats fewer than ``slots`` samples only
in the corner case its docstring names).
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
    counts: tuple[tuple[int, ...], ...]  # samples per [rank][worker]
    total: int  # samples in the universe (before pad/drop)

    def worker_spans(self, rank: int, worker: int) -> tuple[Piece, ...]:
        return self.spans[rank][worker]


def order_pieces(
    pieces: Sequence[Piece], seed: int, epoch: int, shuffle: bool = True
) -> list[Piece]:
    """The epoch's piece order, shared by all ranks: shards permuted by ``(seed, epoch)``.

    Pieces of one shard stay together and in sample order, so a worker reads each shard in one
    sequential pass even when a resumed epoch's universe is fragmented into many small pieces.
    """
    groups: dict[int, list[Piece]] = {}
    for piece in pieces:
        groups.setdefault(piece[0], []).append(piece)
    shards = sorted(groups)
    if shuffle:
        World(seed=seed, epoch=epoch).rng("pieces", per_rank=False, per_worker=False).shuffle(
            shards
        )
    return [p for shard in shards for p in sorted(groups[shard], key=lambda p: p[1])]


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


def slot_counts(
    total: int, slots: int, remainder: str, batch_size: int = 1, num_workers: int = 1
) -> list[int]:
    """Samples per (rank, worker) slot, rank-major; ``slots`` = ranks × ``num_workers``.

    - ``"balance"`` (default of the planner): no sample dropped or repeated, and every rank
      yields the same number of batches of ``batch_size`` — DDP's requirement — with each
      worker's last batch partial. Rank shares differ by at most one sample; each rank's share
      is split over its workers so their batch counts add up to the common number. Only when
      ranks have a single worker or ``batch_size`` is 1 can that be impossible (the share is a
      hair above a multiple of ``batch_size``); then the fewest samples needed (fewer than the
      number of ranks per batch) are repeated.
    - ``"pad"``: equal counts, ``ceil(total / slots)``, repeating < ``slots`` samples.
    - ``"drop"``: equal counts, ``total // slots``, leaving < ``slots`` samples out.
    """
    if total == 0:
        return [0] * slots
    if remainder == "drop":
        return [total // slots] * slots
    if remainder == "pad":
        return [math.ceil(total / slots)] * slots
    if remainder != "balance":
        raise ValueError(f"remainder must be 'balance', 'pad' or 'drop', got {remainder!r}")
    batch = max(1, batch_size)
    workers = max(1, num_workers)
    ranks = max(1, slots // workers)
    base, extra = divmod(total, ranks)
    shares = [base + (1 if r < extra else 0) for r in range(ranks)]
    # batches per worker: the fewest that hold the largest share, spread over the workers
    nb = math.ceil(max(shares) / batch)
    per_worker = [nb // workers + (1 if w < nb % workers else 0) for w in range(workers)]
    lows = [(b - 1) * batch + 1 if b else 0 for b in per_worker]
    highs = [b * batch for b in per_worker]
    out: list[int] = []
    for share in shares:
        share = max(share, sum(lows))  # the corner case: repeat a few samples
        out.extend(_water_fill(share, lows, highs))
    return out


def _water_fill(total: int, lows: Sequence[int], highs: Sequence[int]) -> list[int]:
    """Counts within ``[low, high]`` summing to ``total``, as even as the bounds allow."""

    def filled(level: int) -> list[int]:
        return [min(max(level, lo), hi) for lo, hi in zip(lows, highs, strict=True)]

    lo_level, hi_level = 0, max(highs)
    while lo_level < hi_level:  # the largest level whose fill does not exceed total
        mid = (lo_level + hi_level + 1) // 2
        if sum(filled(mid)) <= total:
            lo_level = mid
        else:
            hi_level = mid - 1
    counts = filled(lo_level)
    left = total - sum(counts)
    for w in range(len(counts)):
        if left and counts[w] < highs[w]:
            counts[w] += 1
            left -= 1
    return counts


def plan_epoch(
    pieces: Sequence[Piece],
    world_size: int,
    num_workers: int,
    seed: int,
    epoch: int,
    remainder: str = "balance",
    shuffle: bool = True,
    batch_size: int = 1,
) -> EpochPlan:
    """Assign the pieces to ``world_size`` ranks × ``num_workers`` workers (see module doc)."""
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
    counts = slot_counts(total, world_size * num_workers, remainder, batch_size, num_workers)
    spans = []
    begin = 0
    for rank in range(world_size):
        rank_spans = []
        for w in range(num_workers):
            n = counts[rank * num_workers + w]
            rank_spans.append(tuple(_take(ordered, starts, total, begin, n)) if total else ())
            begin += n
        spans.append(tuple(rank_spans))
    matrix = tuple(
        tuple(counts[r * num_workers : (r + 1) * num_workers]) for r in range(world_size)
    )
    return EpochPlan(tuple(spans), matrix, total)


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
