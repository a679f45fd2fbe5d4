"""Properties of the exact-epoch planner: partitions, balance, determinism, elastic remainders."""

from __future__ import annotations

import random

import pytest

from cloudwds.partition import delivered_and_remaining, plan_epoch, positions, window_order


def _universe(counts):
    return [(i, 0, n) for i, n in enumerate(counts)]


def _all_positions(plan):
    return [p for rank in plan.spans for spans in rank for p in positions(spans)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("world_size,num_workers", [(1, 1), (2, 2), (3, 2), (4, 3)])
def test_drop_is_a_partition_of_equal_shares(seed, world_size, num_workers):
    rng = random.Random(seed)
    counts = [rng.randint(0, 50) for _ in range(rng.randint(1, 12))]
    total = sum(counts)
    plan = plan_epoch(
        _universe(counts), world_size, num_workers, seed=seed, epoch=1, remainder="drop"
    )
    got = _all_positions(plan)
    slots = world_size * num_workers
    assert len(got) == len(set(got)) == (total // slots) * slots
    everything = {(i, j) for i, n in enumerate(counts) for j in range(n)}
    assert set(got) <= everything
    for rank, counts in zip(plan.spans, plan.counts):
        assert [sum(b - a for _, a, b in spans) for spans in rank] == list(counts)
    assert len({c for row in plan.counts for c in row}) == 1


@pytest.mark.parametrize("seed", range(6))
def test_pad_covers_everything_with_equal_shares(seed):
    rng = random.Random(seed)
    counts = [rng.randint(1, 40) for _ in range(rng.randint(1, 9))]
    plan = plan_epoch(_universe(counts), 3, 2, seed=seed, epoch=0, remainder="pad")
    got = _all_positions(plan)
    everything = {(i, j) for i, n in enumerate(counts) for j in range(n)}
    assert set(got) == everything
    assert len(got) - len(everything) < 6  # fewer repeats than slots
    assert len({c for row in plan.counts for c in row}) == 1


def test_same_seed_same_plan_other_epoch_other_order():
    u = _universe([10] * 20)
    a = plan_epoch(u, 2, 2, seed=7, epoch=3)
    b = plan_epoch(u, 2, 2, seed=7, epoch=3)
    c = plan_epoch(u, 2, 2, seed=7, epoch=4)
    assert a == b
    assert a.spans != c.spans


def test_window_order_is_a_permutation_and_deterministic():
    order = window_order(100, 100, seed=1, epoch=2, rank=0, worker=1, index=5)
    assert sorted(order) == list(range(100))
    assert order == window_order(100, 100, seed=1, epoch=2, rank=0, worker=1, index=5)
    assert order != window_order(100, 100, seed=1, epoch=3, rank=0, worker=1, index=5)
    assert window_order(10, 1, 0, 0, 0, 0, 0) == list(range(10))


@pytest.mark.parametrize("delivered", [0, 1, 7, 16, 33, 50])
def test_delivered_plus_remaining_is_the_worker_share(delivered):
    spans = [(3, 5, 20), (0, 0, 10), (7, 2, 27)]
    everything = list(positions(spans))
    done, rest = delivered_and_remaining(spans, delivered, 16, seed=1, epoch=0, rank=1, worker=0)
    assert len(done) == delivered
    rest_positions = list(positions(rest))
    assert sorted(done + rest_positions) == sorted(everything)
    assert not set(done) & set(rest_positions)


def test_delivered_matches_window_delivery_order():
    spans = [(0, 0, 25)]
    window = 10
    flat = list(positions(spans))
    stream = []
    for w, start in enumerate(range(0, len(flat), window)):
        chunk = flat[start : start + window]
        order = window_order(len(chunk), window, 4, 1, 0, 0, w)
        stream.extend(chunk[i] for i in order)
    for k in range(len(flat) + 1):
        done, _ = delivered_and_remaining(spans, k, window, seed=4, epoch=1, rank=0, worker=0)
        assert done == stream[:k]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("batch_size", [1, 4, 10])
def test_balance_no_dup_no_miss_equal_batches(seed, batch_size):
    rng = random.Random(seed)
    counts = [rng.randint(0, 60) for _ in range(rng.randint(1, 15))]
    world_size, num_workers = rng.choice([(2, 2), (3, 2), (2, 1), (4, 3)])
    plan = plan_epoch(
        _universe(counts), world_size, num_workers, seed, 0, "balance", batch_size=batch_size
    )
    got = _all_positions(plan)
    everything = {(i, j) for i, n in enumerate(counts) for j in range(n)}
    assert set(got) == everything
    assert len(got) - len(everything) < world_size
    per_rank = {sum(-(-c // batch_size) for c in row) for row in plan.counts}
    assert len(per_rank) == 1  # DDP: every rank runs the same number of steps
    if num_workers > 1 and batch_size > 1:
        assert len(got) == len(everything)  # no repeats outside the documented corner case
