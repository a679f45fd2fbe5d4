"""cloudwds.pipeline: DataPipeline and WebDataset — composition, epochs, pickling, DataLoader."""

from __future__ import annotations

import collections
import pickle

import pytest
import torch
from conftest import make_shards

import cloudwds as wds


def keys(ds) -> list[str]:
    return [s["__key__"] if isinstance(s, dict) else s[0] for s in ds]


def add_ten(src):
    for x in src:
        yield x + 10


def double(x):
    return 2 * x


def key_and_cls(sample):
    return sample["__key__"], int(sample["cls"])


# -- construction --------------------------------------------------------------------------------


def test_sources_stages_functions_and_lists():
    p = wds.DataPipeline(range(5), [wds.map(double), add_ten], wds.select(lambda x: x > 12))
    assert len(p.pipeline) == 4
    assert list(p) == [14, 16, 18]
    assert list(wds.DataPipeline(lambda: iter("abc"), wds.map(str.upper))) == ["A", "B", "C"]
    # lists are flattened into the stage list (as in webdataset): a list is not a source
    assert list(wds.DataPipeline([range(3), wds.map(double)])) == [0, 2, 4]
    assert list(wds.DataPipeline(iter([[1, 2, 3]]))) == [[1, 2, 3]]


def test_shard_list_pipeline(shards):
    ds = wds.DataPipeline(wds.SimpleShardList(shards.spec), wds.tarfile_to_samples())
    got = list(ds)
    assert [s["__key__"] for s in got] == shards.all_keys
    assert got[11]["txt"] == shards.values["s1-0001"]["txt"]
    assert isinstance(ds, torch.utils.data.IterableDataset)


def test_compose_returns_a_new_pipeline_and_leaves_the_original_alone():
    p = wds.DataPipeline(range(6), wds.map(double))
    before = list(p)
    q = p.compose(add_ten)
    r = q.select(lambda x: x % 4 == 0).batched(2, collation_fn=None)
    assert len(p.pipeline) == 2 and len(q.pipeline) == 3 and len(r.pipeline) == 5
    assert list(p) == before == [0, 2, 4, 6, 8, 10]
    assert list(q) == [10, 12, 14, 16, 18, 20]
    assert list(r) == [[12, 16], [20]]
    assert type(q) is wds.DataPipeline


def test_fluent_methods_do_not_mutate(shards):
    ds = wds.WebDataset(shards.spec, shardshuffle=False)
    n = len(ds.pipeline)
    for derived in (
        ds.with_epoch(3),
        ds.repeat(2),
        ds.with_length(7),
        ds.shuffle(10),
        ds.decode(),
        ds.map(key_and_cls),
    ):
        assert type(derived) is wds.WebDataset
        assert derived is not ds
    assert len(ds.pipeline) == n
    assert ds.nsamples is None and ds.repetitions == 1 and ds.length is None
    assert keys(ds) == shards.all_keys


# -- epochs, repeats, lengths -------------------------------------------------------------------


def test_with_epoch_yields_exactly_n(shards):
    ds = wds.WebDataset(shards.spec, shardshuffle=False)
    assert keys(ds.with_epoch(7)) == shards.all_keys[:7]
    many = keys(ds.with_epoch(95))  # more than the 40 samples: the source repeats
    assert len(many) == 95
    assert many[:40] == shards.all_keys and many[40:80] == shards.all_keys
    assert keys(ds.with_epoch(3).with_epoch(-1)) == shards.all_keys


def test_repeat(shards):
    ds = wds.WebDataset(shards.paths[0], shardshuffle=False)
    assert keys(ds.repeat(3)) == shards.keys[0] * 3
    assert len(keys(ds.repeat().with_epoch(25))) == 25  # repeat() is forever
    # repeat and with_epoch wrap the whole pipeline, whatever comes after them (as webdataset)
    assert keys(ds.repeat(2).slice(12)) == shards.keys[0] * 2
    assert keys(ds.with_epoch(12).slice(5)) == shards.keys[0][:5] * 2 + shards.keys[0][:2]


def test_webdataset_repeat_argument(shards):
    ds = wds.WebDataset(shards.paths[0], shardshuffle=False, repeat=True)
    assert keys(ds.with_epoch(25)) == (shards.keys[0] * 3)[:25]
    assert len(keys(ds.slice(3).with_epoch(10))) == 10  # repeats forever until cut


def test_repeat_of_an_empty_pipeline_ends():
    assert list(wds.DataPipeline([], wds.map(double)).repeat()) == []
    assert list(wds.DataPipeline([], wds.map(double)).with_epoch(10)) == []


def test_with_length(shards):
    ds = wds.WebDataset(shards.spec).with_length(40)
    assert len(ds) == 40
    with pytest.raises(TypeError):
        len(wds.WebDataset(shards.spec))
    assert len(wds.DataPipeline(range(3)).with_length(3)) == 3


def test_epochs_change_orders_and_set_epoch_replays(shards):
    ds = wds.WebDataset(shards.spec, shardshuffle=True).shuffle(20)
    e0, e1 = keys(ds), keys(ds)
    assert sorted(e0) == sorted(e1) == sorted(shards.all_keys)
    assert e0 != e1
    ds.set_epoch(0)
    assert keys(ds) == e0
    ds.set_epoch(1)
    assert ds.epoch == 1
    assert keys(ds) == e1


def test_same_seed_same_order_different_seed_different_order(shards):
    def build(seed):
        return wds.WebDataset(shards.spec, shardshuffle=True, seed=seed).shuffle(15)

    assert keys(build(5)) == keys(build(5))
    assert keys(build(5)) != keys(build(6))
    p1 = wds.DataPipeline(range(100), wds.shuffle(50), seed=9)
    p2 = wds.DataPipeline(range(100), wds.shuffle(50), seed=9)
    assert list(p1) == list(p2) != list(range(100))


def test_seed_from_environment(shards, monkeypatch):
    monkeypatch.setenv("WDS_SEED", "5")
    from_env = keys(wds.WebDataset(shards.spec, shardshuffle=True).shuffle(15))
    monkeypatch.delenv("WDS_SEED")
    assert from_env == keys(wds.WebDataset(shards.spec, shardshuffle=True, seed=5).shuffle(15))


# -- WebDataset arguments ---------------------------------------------------------------------------


def test_shardshuffle_same_permutation_on_every_rank(tmp_path, monkeypatch):
    shards = make_shards(tmp_path, 12, 3)
    shard_of = {k: i for i, ks in enumerate(shards.keys) for k in ks}
    for epoch in (0, 1):
        per_rank = []
        for rank in range(3):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "3")
            ds = wds.WebDataset(shards.spec, shardshuffle=True)
            ds.set_epoch(epoch)
            per_rank.append(keys(ds))
        union = [k for ks in per_rank for k in ks]
        assert len(union) == len(set(union)) == 36  # a partition: nothing twice, nothing lost
        assert set(union) == set(shards.all_keys)
        # every rank took every third shard of one and the same shuffled list
        monkeypatch.delenv("RANK")
        monkeypatch.delenv("WORLD_SIZE")
        ds = wds.WebDataset(shards.spec, shardshuffle=True)
        ds.set_epoch(epoch)
        order = list(dict.fromkeys(shard_of[k] for k in keys(ds)))
        assert sorted(order) == list(range(12)) and order != list(range(12))
        for rank in range(3):
            assert list(dict.fromkeys(shard_of[k] for k in per_rank[rank])) == order[rank::3]


def test_without_shardshuffle_ranks_split_in_order(shards, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert keys(wds.WebDataset(shards.spec, shardshuffle=False)) == shards.keys[1] + shards.keys[3]


def test_resampled_with_epoch(shards):
    ds = wds.WebDataset(shards.spec, resampled=True, seed=1).with_epoch(100)
    got = keys(ds)
    assert len(got) == 100
    assert set(got) <= set(shards.all_keys)
    # whole shards are drawn: keys come in runs of one shard's 10 samples
    runs = [got[i : i + 10] for i in range(0, 100, 10)]
    assert all(run in shards.keys for run in runs)
    assert len({tuple(r) for r in runs}) > 1
    assert keys(wds.WebDataset(shards.spec, resampled=True, seed=1).with_epoch(100)) == got


def test_handler_argument(tmp_path):
    shards = make_shards(tmp_path, 3, 5)
    urls = [shards.paths[0], str(tmp_path / "missing.tar"), shards.paths[2]]
    with pytest.raises(wds.StorageError):
        list(wds.WebDataset(urls, shardshuffle=False))
    ds = wds.WebDataset(urls, shardshuffle=False, handler=wds.ignore_and_continue)
    assert keys(ds) == shards.keys[0] + shards.keys[2]


# -- pickling and DataLoader ---------------------------------------------------------------------


def test_pickle_round_trip_iterates_equal(shards):
    ds = (
        wds.WebDataset(shards.spec, shardshuffle=True, seed=3)
        .shuffle(10)
        .decode()
        .map(key_and_cls)
        .batched(4, partial=False)
    )
    copy = pickle.loads(pickle.dumps(ds))
    a, b = list(ds), list(copy)
    assert len(a) == len(b) == 10
    for (ka, ca), (kb, cb) in zip(a, b):
        assert ka == kb and ca.tolist() == cb.tolist()
    p = wds.DataPipeline(
        wds.SimpleShardList(shards.spec), wds.tarfile_to_samples(), wds.shuffle(7), add_ten_keys
    )
    assert list(pickle.loads(pickle.dumps(p))) == list(p)


def add_ten_keys(src):
    for sample in src:
        yield sample["__key__"] + "+"


def test_dataloader_spawn_two_workers_every_key_once(shards):
    ds = wds.WebDataset(shards.spec, shardshuffle=True).shuffle(5).map(key_and_cls)
    loader = torch.utils.data.DataLoader(
        ds, num_workers=2, batch_size=None, multiprocessing_context="spawn"
    )
    got = [(k, int(c)) for k, c in loader]
    counts = collections.Counter(k for k, _ in got)
    assert sorted(counts) == sorted(shards.all_keys)
    assert set(counts.values()) == {1}
    assert dict(got)["s2-0003"] == 23


def test_repr_lists_the_stages(shards):
    text = repr(wds.WebDataset(shards.spec).shuffle(10).to_tuple("txt"))
    assert text.startswith("WebDataset(")
    assert "SimpleShardList" in text and "tarfile_to_samples" in text
    assert "shuffle(bufsize=10" in text and "to_tuple(args=('txt',)" in text
