"""ShardAwareSampler: shard-local windows, (seed, epoch) determinism, DistributedSampler-like ranks."""

from __future__ import annotations

import pytest

from cloudwds.indexed import ShardAwareSampler

COUNTS = [5, 3, 7, 4, 6]  # 25 samples in 5 shards
STARTS = [0, 5, 8, 15, 19, 25]


def shard_of(i: int) -> int:
    return next(s for s in range(len(COUNTS)) if STARTS[s] <= i < STARTS[s + 1])


def test_one_rank_gives_every_index_once_per_epoch():
    sampler = ShardAwareSampler(COUNTS, window=2, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(sampler) == list(range(25))
        assert len(sampler) == 25


def test_samples_stay_within_windows_of_shards():
    sampler = ShardAwareSampler(COUNTS, window=2, seed=7)
    order = list(sampler)
    windows: list[set[int]] = []
    pos = 0
    shard_order: list[int] = []
    for i in order:  # shards in the order their samples first appear
        if shard_of(i) not in shard_order:
            shard_order.append(shard_of(i))
    for w in range(0, 5, 2):
        group = set(shard_order[w : w + 2])
        size = sum(COUNTS[s] for s in group)
        assert {shard_of(i) for i in order[pos : pos + size]} == group
        windows.append(group)
        pos += size


def test_window_one_reads_shard_by_shard():
    order = list(ShardAwareSampler(COUNTS, window=1, seed=2))
    changes = sum(1 for a, b in zip(order, order[1:]) if shard_of(a) != shard_of(b))
    assert changes == 4


def test_order_depends_on_seed_and_epoch_only():
    a = ShardAwareSampler(COUNTS, seed=5)
    b = ShardAwareSampler(COUNTS, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(ShardAwareSampler(COUNTS, seed=6)) != list(ShardAwareSampler(COUNTS, seed=5))


def test_no_shuffle_keeps_the_dataset_order():
    assert list(ShardAwareSampler(COUNTS, shuffle=False)) == list(range(25))


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_pad_to_equal_counts_like_distributed_sampler(world_size):
    parts = [
        list(ShardAwareSampler(COUNTS, rank=r, world_size=world_size, seed=3))
        for r in range(world_size)
    ]
    per_rank = -(-25 // world_size)
    assert [len(p) for p in parts] == [per_rank] * world_size
    flat = [i for p in parts for i in p]
    assert set(flat) == set(range(25))  # every index at least once
    assert len(flat) - 25 == per_rank * world_size - 25  # only the padding repeats


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_drop_last_gives_equal_counts_and_no_repeats(world_size):
    parts = [
        list(ShardAwareSampler(COUNTS, rank=r, world_size=world_size, drop_last=True))
        for r in range(world_size)
    ]
    assert [len(p) for p in parts] == [25 // world_size] * world_size
    flat = [i for p in parts for i in p]
    assert len(set(flat)) == len(flat) == (25 // world_size) * world_size


def test_divisible_sizes_cover_every_index_exactly_once():
    counts = [4, 4, 4]
    parts = [list(ShardAwareSampler(counts, rank=r, world_size=3, seed=9)) for r in range(3)]
    assert sorted(i for p in parts for i in p) == list(range(12))


def test_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        ShardAwareSampler(COUNTS, window=0)
    with pytest.raises(ValueError, match="rank"):
        ShardAwareSampler(COUNTS, rank=2, world_size=2)
