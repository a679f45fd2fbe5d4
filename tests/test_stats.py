"""Statistics per pipeline: two datasets in one process never mix their counters."""

from __future__ import annotations

import pickle
import warnings

from dist_support import uneven_shards

import cloudwds as wds
from cloudwds.stats import COUNTERS, Counters, counting


def test_two_pipelines_in_one_process_count_separately(tmp_path):
    data = uneven_shards(tmp_path)  # 110 samples in 8 shards
    train = wds.WebDataset(data.paths, shardshuffle=False)
    val = wds.WebDataset(data.paths[:2], shardshuffle=False)
    before = COUNTERS.snapshot()["samples"]
    it = iter(train)
    for _ in range(10):
        next(it)
    assert len(list(val)) == 20
    for _ in range(5):
        next(it)
    assert train.stats()["samples"] == 15
    assert train.stats()["shards_opened"] == 2  # 3 + 17 samples: the second shard is open
    assert val.stats()["samples"] == 20 and val.stats()["shards_opened"] == 2
    assert COUNTERS.snapshot()["samples"] - before == 35  # the process totals still add up


def test_fluent_copies_have_their_own_counters(tmp_path):
    data = uneven_shards(tmp_path)
    base = wds.WebDataset(data.paths, shardshuffle=False)
    mapped = base.map(lambda s: s)
    assert len(list(mapped)) == data.total
    assert mapped.stats()["samples"] == data.total
    assert base.stats()["samples"] == 0


def test_webloader_merges_its_workers_counters(tmp_path):
    data = uneven_shards(tmp_path)
    other = wds.WebDataset(data.paths[:1], shardshuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = wds.WebLoader(
            wds.WebDataset(data.paths, shardshuffle=False), num_workers=2, batch_size=5
        )
        assert sum(len(b["__key__"]) for b in loader) == data.total
    list(other)  # counted in this process, not in the loader's workers
    stats = loader.stats()
    assert stats["samples"] == data.total
    assert stats["shards_opened"] == len(data.paths)
    assert stats["steps"] > 0


def test_counting_scope_and_pickled_counters():
    mine = Counters()
    with counting(mine):
        COUNTERS.add("retries", 2)
    COUNTERS.add("retries")  # outside the scope: process totals only
    assert mine.snapshot()["retries"] == 2
    mine.add("samples", 4)
    clone = pickle.loads(pickle.dumps(mine))
    assert clone.snapshot()["samples"] == 0  # a worker's copy starts from zero
