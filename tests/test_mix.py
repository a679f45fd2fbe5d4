"""cloudwds.mix: round robin and random mixing of datasets."""

from __future__ import annotations

import numpy as np

import cloudwds as wds
from cloudwds import mix


def test_round_robin_shortest_and_longest():
    assert list(mix.RoundRobin([[1, 1, 1], [2, 2]])) == [1, 2, 1, 2, 1]
    longest = mix.RoundRobin([np.full(2, 2), np.full(1, 1), np.full(3, 3)], longest=True)
    assert [int(x) for x in longest] == [2, 1, 3, 2, 3, 3]


def test_random_mix_follows_probabilities_and_is_repeatable():
    a, b = ["a"] * 1000, ["b"] * 1000
    drawn = list(mix.RandomMix([a, b], probs=[0.8, 0.2]))
    share = drawn.count("a") / len(drawn)
    assert 0.7 < share < 0.9 and len(drawn) < 2000  # stops when one source is exhausted
    assert drawn == list(mix.RandomMix([a, b], probs=[0.8, 0.2]))
    everything = list(mix.RandomMix([a[:10], b[:3]], longest=True))
    assert sorted(everything) == ["a"] * 10 + ["b"] * 3


def test_mix_of_pipelines_in_a_pipeline(shards):
    ds = wds.DataPipeline(wds.SimpleShardList(shards.paths[:1]), wds.tarfile_samples)
    mixed = wds.FluidWrapper(mix.RoundRobin([ds, ds])).map(lambda s: s["__key__"])
    keys = list(mixed)
    assert keys[:4] == ["s0-0000", "s0-0000", "s0-0001", "s0-0001"] and len(keys) == 20
