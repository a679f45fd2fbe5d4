"""cloudwds.shards: shard lists, resampling, and splitting by rank and worker."""

from __future__ import annotations

import collections

import pytest

import cloudwds as wds
from cloudwds.world import World

URLS = [f"s-{i:03d}.tar" for i in range(10)]


def urls_of(source, world=None) -> list[str]:
    return [item["url"] for item in source.iterate(world or World())]


def test_simple_shard_list_expands_and_keeps_order():
    source = wds.SimpleShardList("s-{000..009}.tar")
    assert source.urls == URLS and len(source) == 10
    assert urls_of(source) == URLS
    assert [i["url"] for i in source] == URLS  # plain iteration works too
    assert urls_of(wds.SimpleShardList("a.tar::b-{1..2}.tar")) == ["a.tar", "b-1.tar", "b-2.tar"]
    # a list is taken literally, as in webdataset (no brace expansion of its items)
    assert urls_of(wds.SimpleShardList(["x.tar", "y-{0..1}.tar"])) == ["x.tar", "y-{0..1}.tar"]


def test_items_carry_the_storage_config():
    source = wds.SimpleShardList(URLS[:2])
    items = list(source.iterate(World()))
    assert all(item.storage is source.storage and item == {"url": item["url"]} for item in items)


def test_empty_url_list_is_an_error():
    with pytest.raises(ValueError, match="no shard URLs"):
        wds.SimpleShardList([])
    with pytest.raises(ValueError):
        wds.ResampledShards("")


def test_simple_shard_list_seeded_order_is_webdatasets():
    # random.Random(seed)'s permutation, the same every epoch and on every rank (as webdataset)
    import random

    source = wds.SimpleShardList(URLS, seed=3)
    expected = list(URLS)
    random.Random(3).shuffle(expected)
    e0 = urls_of(source, World(epoch=0))
    assert e0 == expected and e0 != URLS
    assert urls_of(source, World(epoch=0, rank=1, world_size=4, worker=1, num_workers=2)) == e0
    assert urls_of(source, World(epoch=1)) == e0
    assert urls_of(wds.SimpleShardList(URLS, seed=4), World(epoch=0)) != e0
    source.seed = 17  # read at iteration time
    assert urls_of(source) != e0


def test_direct_iteration_counts_epochs():
    source = wds.ResampledShards(URLS, nshards=5, seed=1)
    first, second = [i["url"] for i in source], [i["url"] for i in source]
    assert first != second
    assert [i["url"] for i in wds.ResampledShards(URLS, nshards=5, seed=1)] == first


def test_resampled_shards_with_replacement():
    source = wds.ResampledShards(URLS, nshards=1000, seed=1)
    drawn = urls_of(source)
    assert len(drawn) == 1000 and set(drawn) == set(URLS)
    counts = collections.Counter(drawn)
    assert all(50 < c < 150 for c in counts.values())  # about 100 draws each
    assert urls_of(source) == drawn  # deterministic for one world
    assert urls_of(source, World(epoch=1)) != drawn
    assert urls_of(source, World(rank=1, world_size=2)) != drawn  # each rank its own stream
    assert urls_of(source, World(worker=1, num_workers=2)) != drawn


def test_resampled_shards_without_replacement_visit_every_shard_per_cycle():
    drawn = urls_of(wds.ResampledShards(URLS, nshards=35, seed=2, replacement=False))
    assert len(drawn) == 35
    for start in (0, 10, 20):
        assert sorted(drawn[start : start + 10]) == URLS
    assert drawn[:10] != URLS


def test_resampled_shards_are_endless_by_default():
    source = wds.ResampledShards(URLS)
    it = source.iterate(World())
    assert len([next(it) for _ in range(5000)]) == 5000


def test_split_by_node_from_environment(monkeypatch):
    seen = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        seen.append(list(wds.split_by_node(iter(URLS))))
    assert seen == [URLS[0::3], URLS[1::3], URLS[2::3]]
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert list(wds.split_by_node(iter(URLS))) == URLS


def test_split_by_worker_outside_a_dataloader_is_a_noop():
    assert list(wds.split_by_worker(iter(URLS))) == URLS


def test_single_node_only(monkeypatch):
    assert list(wds.single_node_only(iter(URLS))) == URLS
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="single-node"):
        list(wds.single_node_only(iter(URLS)))
