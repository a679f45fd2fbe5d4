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


# ---------------------------------------------------------------------------------------------
# GlobalShuffleSampler
# ---------------------------------------------------------------------------------------------


def global_parts(n: int, world_size: int, **kw) -> list[list[int]]:
    from cloudwds.indexed import GlobalShuffleSampler

    return [
        list(GlobalShuffleSampler(n, rank=r, world_size=world_size, **kw))
        for r in range(world_size)
    ]


def test_global_shuffle_two_ranks_every_index_once():
    parts = global_parts(24, 2, seed=1)
    assert [len(p) for p in parts] == [12, 12]
    assert sorted(parts[0] + parts[1]) == list(range(24))
    assert parts[0] + parts[1] != list(range(24))  # shuffled


def test_global_shuffle_pads_or_drops_like_distributed_sampler():
    padded = global_parts(25, 3)
    assert [len(p) for p in padded] == [9, 9, 9]
    assert set(sum(padded, [])) == set(range(25))
    dropped = global_parts(25, 3, drop_last=True)
    assert [len(p) for p in dropped] == [8, 8, 8]
    assert len(set(sum(dropped, []))) == 24


def test_global_shuffle_order_is_a_function_of_seed_and_epoch():
    from cloudwds.indexed import GlobalShuffleSampler

    a, b = GlobalShuffleSampler(50, seed=3), GlobalShuffleSampler(50, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)


def test_resume_on_another_world_size_gives_exactly_the_remainder():
    from cloudwds.indexed import GlobalShuffleSampler

    samplers = [GlobalShuffleSampler(60, seed=8, rank=r, world_size=2) for r in range(2)]
    for s in samplers:
        s.set_epoch(4)
    firsts = [list(s)[:9] for s in samplers]  # each rank's loop took 9 samples: 42 remain
    state = samplers[0].state_dict(consumed=9)
    assert state == samplers[1].state_dict(consumed=9)  # every rank holds the same state
    resumed = [GlobalShuffleSampler(60, rank=r, world_size=3) for r in range(3)]
    for s in resumed:
        s.load_state_dict(state)
        s.set_epoch(4)  # the usual loop calls set_epoch again: the resume is kept
    rest = [list(s) for s in resumed]
    assert [len(r) for r in rest] == [14, 14, 14]
    seen = firsts[0] + firsts[1]
    assert sorted(seen + sum(rest, [])) == list(range(60))  # each sample exactly once
    # chained: after 5 more each on 3 ranks, resume on 1 rank
    state2 = resumed[0].state_dict(consumed=5)
    one = GlobalShuffleSampler(60, rank=0, world_size=1)
    one.load_state_dict(state2)
    last = list(one)
    assert sorted(seen + [i for r in rest for i in r[:5]] + last) == list(range(60))
    one.set_epoch(5)  # the next epoch is whole again
    assert len(one) == 60


def test_state_for_another_dataset_is_refused():
    from cloudwds.indexed import GlobalShuffleSampler

    state = GlobalShuffleSampler(10).state_dict(consumed=2)
    with pytest.raises(ValueError, match="10 samples"):
        GlobalShuffleSampler(11).load_state_dict(state)
