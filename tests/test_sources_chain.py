"""cloudwds.sources.chain: the one shard chain WebDataset and every dataset-spec collection use."""

from __future__ import annotations

import logging
import os

import pytest
from conftest import make_shards

import cloudwds as wds
from cloudwds.shards import ResampledShards, SimpleShardList, split_by_node, split_by_worker
from cloudwds.sources.chain import ShuffleShards, WarnIfEmpty, apply_stages, shard_stages
from cloudwds.spec import MixedSource
from cloudwds.storage import StorageConfig
from cloudwds.world import World


@pytest.fixture
def shards(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "WDS_SEED"):
        monkeypatch.delenv(var, raising=False)
    os.makedirs(tmp_path / "c")
    return make_shards(tmp_path / "c", 6, 3, fields=("txt",), prefix="c")


def kinds(stages):
    return [s if callable(s) and not isinstance(s, wds.Stage) else type(s) for s in stages]


def test_webdataset_builds_its_shard_stages_with_shard_stages(shards):
    ds = wds.WebDataset(shards.paths, shardshuffle=True, cache_dir=False)
    expected = [SimpleShardList, ShuffleShards, split_by_node, split_by_worker, WarnIfEmpty]
    assert kinds(ds.pipeline[:5]) == expected
    assert kinds(shard_stages(shards.paths, storage=ds.storage, shardshuffle=True)) == expected[:4]
    assert repr(ds.pipeline[1]) == "shardshuffle()"  # webdataset code looks for "shuffle"
    resampled = wds.WebDataset(shards.paths, resampled=True, seed=4, cache_dir=False)
    assert isinstance(resampled.pipeline[0], ResampledShards)
    assert resampled.pipeline[0].seed == 4 and not isinstance(resampled.pipeline[1], ShuffleShards)


def test_no_splitters_and_no_shuffle_leave_the_list_alone(shards):
    stages = shard_stages(
        shards.paths, storage=StorageConfig(), nodesplitter=None, workersplitter=None
    )
    assert kinds(stages) == [SimpleShardList]
    items = apply_stages(stages, (), World(seed=1))
    assert [i["url"] for i in items] == shards.paths


@pytest.mark.parametrize("rank", [0, 1])
def test_a_spec_collection_reads_what_webdataset_reads(shards, tmp_path, monkeypatch, rank):
    """Same shards, order and split: a one-collection spec and WebDataset with its seed."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    spec = tmp_path / "one.yaml"
    spec.write_text("dataset:\n  - name: c\n    shards: c/c-{000000..000005}.tar\n")
    world = World(seed=1, epoch=2, rank=rank, world_size=2)
    mixed = MixedSource(os.fspath(spec), shardshuffle=True)
    got = [(s["__key__"], s["__url__"]) for s in mixed.apply((), world)]
    seed = world.derive_seed("spec-collection", "c", per_rank=False, per_worker=False)
    ds = wds.WebDataset(shards.paths, shardshuffle=True, seed=seed, cache_dir=False)
    ds.set_epoch(2)
    want = [(s["__key__"], s["__url__"]) for s in ds]
    assert got == want
    assert len(got) == 9  # half of the 6 shards x 3 samples: split by rank
    assert [u for _, u in got[::3]] != sorted(u for _, u in got[::3])  # shuffled


def test_warn_if_empty_logs_once_for_a_rank_without_shards(caplog):
    world = World(rank=3, world_size=4)
    with caplog.at_level(logging.WARNING, logger="cloudwds"):
        assert list(WarnIfEmpty().apply(iter(()), world)) == []
    assert "rank 3/4 worker 0/1 received no shards" in caplog.text
    caplog.clear()
    assert list(WarnIfEmpty().apply(iter([1]), world)) == [1]
    assert caplog.text == ""


def test_shuffle_shards_is_the_same_on_every_rank_and_worker():
    items = list(range(20))
    a = list(ShuffleShards().apply(items, World(seed=3, epoch=1, rank=0, world_size=2)))
    b = list(ShuffleShards().apply(items, World(seed=3, epoch=1, rank=1, world_size=2)))
    c = list(ShuffleShards().apply(items, World(seed=3, epoch=2)))
    assert a == b and sorted(a) == items and a != items and c != a
