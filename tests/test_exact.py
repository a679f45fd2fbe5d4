"""Exact epochs (``exact_epoch=True``) through real DataLoader workers, over uneven shards."""

from __future__ import annotations

import collections
import json
import logging
import os

import pytest
from conftest import write_tar
from dist_support import (
    SIZES,
    batch_keys,
    batches_per_worker,
    flat_keys,
    tag_worker,
    uneven_shards,
)
from torch.utils.data import DataLoader

import cloudwds as wds
from cloudwds.index import build_index
from cloudwds.partition import slot_counts


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # remembered sample counts
    for var in ("RANK", "WORLD_SIZE", "WDS_SEED"):
        monkeypatch.delenv(var, raising=False)
    return uneven_shards(tmp_path)


def exact(data, **kw):
    kw.setdefault("seed", 7)
    return wds.WebDataset(data.paths, exact_epoch=True, **kw)


@pytest.mark.parametrize("batch_size", [3, 4, 5])
def test_every_key_once_in_the_fewest_batches(data, batch_size):
    ds = exact(data).shuffle(16).map(tag_worker)
    loader = wds.WebLoader(ds, num_workers=2, batch_size=batch_size)
    batches = list(loader)
    keys = flat_keys(batches)
    assert sorted(keys) == sorted(data.keys)  # every key exactly once
    # one rank: its batch count is the fewest that hold its samples, spread over both workers
    assert len(batches) == -(-len(data.keys) // batch_size)
    per_worker = batches_per_worker(batches)
    assert set(per_worker) == {0, 1}
    assert abs(per_worker[0] - per_worker[1]) <= 1
    assert all(len(b["__key__"]) <= batch_size for b in batches)


def test_batched_in_the_dataset_balances_too(data):
    ds = exact(data).shuffle(10).map(tag_worker).batched(4)
    batches = list(DataLoader(ds, num_workers=2, batch_size=None))
    assert sorted(flat_keys(batches)) == sorted(data.keys)
    per_worker = batches_per_worker(batches)
    assert per_worker[0] == per_worker[1] == 14  # 110 samples: 55 per worker, 14 batches


def _per_rank(data, world_size, monkeypatch, make, batch_size=4):
    """Run every rank (RANK/WORLD_SIZE) in turn, 2 workers each; batches per rank."""
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    out = []
    for rank in range(world_size):
        monkeypatch.setenv("RANK", str(rank))
        loader = wds.WebLoader(make().map(tag_worker), num_workers=2, batch_size=batch_size)
        out.append(list(loader))
    return out


def test_ranks_times_workers_partition_with_equal_batches(data, monkeypatch):
    ranks = _per_rank(data, 3, monkeypatch, lambda: exact(data).shuffle(16))
    keys = [k for batches in ranks for k in flat_keys(batches)]
    assert sorted(keys) == sorted(data.keys)
    assert len({len(batches) for batches in ranks}) == 1  # every rank: the same number of steps


def test_pad_repeats_a_few_samples_for_equal_counts(data, monkeypatch):
    ranks = _per_rank(data, 3, monkeypatch, lambda: exact(data, remainder="pad"))
    keys = [k for batches in ranks for k in flat_keys(batches)]
    slots = 6
    per_slot = -(-data.total // slots)
    assert len(keys) == slots * per_slot
    assert set(keys) == set(data.keys)  # nothing left out
    assert len(keys) - len(set(keys)) < slots
    for batches in ranks:
        per_worker = collections.Counter(int(w) for b in batches for w in b["worker"])
        assert sorted(per_worker.values()) == [per_slot, per_slot]


def test_drop_leaves_out_a_few_samples_for_equal_counts(data, monkeypatch):
    ranks = _per_rank(data, 3, monkeypatch, lambda: exact(data, remainder="drop"))
    keys = [k for batches in ranks for k in flat_keys(batches)]
    slots = 6
    assert len(keys) == len(set(keys)) == slots * (data.total // slots)  # no repeats
    assert set(keys) <= set(data.keys)
    for batches in ranks:
        per_worker = collections.Counter(int(w) for b in batches for w in b["worker"])
        assert sorted(per_worker.values()) == [data.total // slots] * 2


def test_balance_corner_case_only_with_one_worker_per_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # 2 ranks x 1 worker, 17 samples, batches of 4: 9 + 8 would be 3 vs 2 batches -> one repeat
    assert slot_counts(17, 2, "balance", 4) == [9, 9]
    # with 2 workers per rank the shares split so that batch counts still match: no repeat
    assert slot_counts(17, 4, "balance", 4, num_workers=2) == [5, 4, 5, 3]
    small = uneven_shards(tmp_path, [5, 4, 8])
    ds = wds.WebDataset(small.paths, exact_epoch=True, seed=1).map(tag_worker)
    batches = list(wds.WebLoader(ds, num_workers=2, batch_size=4))
    keys = flat_keys(batches)
    assert sorted(keys) == sorted(small.keys)  # one rank: never a repeat
    assert sum(batches_per_worker(batches).values()) == len(batches) == 5


def test_same_seed_same_order_other_epoch_or_seed_other_order(data):
    def run(seed, epoch=None):
        ds = exact(data, seed=seed).shuffle(16)
        if epoch is not None:
            ds.set_epoch(epoch)
        return flat_keys(DataLoader(ds, num_workers=2, batch_size=4))

    first = run(3)
    assert first == run(3)
    assert sorted(first) == sorted(data.keys)
    assert run(3, epoch=1) != first
    assert sorted(run(3, epoch=1)) == sorted(first)
    assert run(4) != first
    assert run(3, epoch=1) == run(3, epoch=1)


def test_without_shuffling_reads_in_shard_order(data):
    ds = exact(data, shardshuffle=False)
    assert [s["__key__"] for s in ds] == data.keys  # one process: one slot, in order


def test_main_process_epochs_without_dataloader(data):
    ds = exact(data).shuffle(8)
    epochs = [[s["__key__"] for s in ds] for _ in range(3)]
    for keys in epochs:
        assert sorted(keys) == sorted(data.keys)
    assert epochs[0] != epochs[1] != epochs[2]
    ds.set_epoch(1)
    assert [s["__key__"] for s in ds] == epochs[1]


def test_counts_from_an_index_next_to_the_shards(data, tmp_path):
    build_index(data.paths).save(
        os.path.join(os.path.dirname(data.paths[0]), "cloudwds-index.json")
    )
    ds = exact(data)
    assert ds.exact_source().counts == list(SIZES)
    assert not (tmp_path / "xdg").exists()  # nothing was counted
    assert sorted(s["__key__"] for s in ds) == sorted(data.keys)


def test_counts_are_counted_once_and_remembered(data, tmp_path):
    ds = exact(data)
    assert ds.exact_source().counts == list(SIZES)
    remembered = list((tmp_path / "xdg" / "cloudwds" / "counts").iterdir())
    assert len(remembered) == 1
    doc = json.loads(remembered[0].read_text())
    assert doc["counts"] == list(SIZES)
    os.remove(data.paths[0])  # the remembered counts are used: the shards are not read again
    assert exact(data).exact_source().counts == list(SIZES)


def test_an_index_that_overstates_a_shard_is_an_error(data, tmp_path):
    index = build_index(data.paths)
    path = str(tmp_path / "index.json")
    index.save(path)
    doc = json.loads(open(path).read())
    doc["shards"][1]["samples"] += 3
    with open(path, "w") as f:
        json.dump(doc, f)
    ds = exact(data, index=path, shardshuffle=False)
    with pytest.raises(wds.ShardError):
        list(ds)


def test_exact_and_resampled_exclude_each_other(data):
    with pytest.raises(ValueError):
        wds.WebDataset(data.paths, exact_epoch=True, resampled=True)


def test_batches_keep_keys_and_fields_together(data):
    loader = wds.WebLoader(exact(data).shuffle(16), num_workers=2, batch_size=4)
    for batch in loader:
        assert [t for t in batch["txt"]] == [k.encode() for k in batch_keys(batch)]


# -- default mode: shards split by rank, then by worker -------------------------------------------
def test_default_mode_splits_shards_by_rank_then_worker(data, monkeypatch):
    def make():
        return wds.WebDataset(data.paths, shardshuffle=True, seed=7)

    ranks = _per_rank(data, 2, monkeypatch, make)
    keys = [k for batches in ranks for k in flat_keys(batches)]
    assert sorted(keys) == sorted(data.keys)  # a partition: no shard on two ranks or workers
    shards_of = [
        {(k.split("-")[0], int(w)) for b in batches for k, w in zip(b["__key__"], b["worker"])}
        for batches in ranks
    ]
    for owners in shards_of:  # every shard is read by exactly one worker of one rank
        assert len({s for s, _ in owners}) == len(owners)
    assert not {s for s, _ in shards_of[0]} & {s for s, _ in shards_of[1]}


def test_default_mode_warns_when_a_worker_gets_no_shard(data, monkeypatch, caplog):
    monkeypatch.setenv("WORLD_SIZE", "10")
    monkeypatch.setenv("RANK", "9")  # 8 shards over 10 ranks: rank 9 gets none
    caplog.set_level(logging.WARNING, logger="cloudwds")
    assert list(wds.WebDataset(data.paths, shardshuffle=True)) == []
    assert "received no shards" in caplog.text


def test_a_shard_regenerated_in_place_is_recounted(data, tmp_path):
    assert exact(data).exact_source().counts == list(SIZES)
    members = [(f"new-{i:03d}.txt", b"x") for i in range(SIZES[2] + 4)]
    write_tar(data.paths[2], members)  # same path, more samples
    st = os.stat(data.paths[2])
    os.utime(data.paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later mtime
    counts = exact(data).exact_source().counts
    assert counts == [*SIZES[:2], SIZES[2] + 4, *SIZES[3:]]
    ds = exact(data, shardshuffle=False)
    assert sum(1 for s in ds if s["__key__"].startswith("new-")) == SIZES[2] + 4
    remembered = list((tmp_path / "xdg" / "cloudwds" / "counts").iterdir())
    assert len(remembered) == 1  # one entry for this shard list, updated in place


def test_relative_urls_from_different_directories_do_not_share_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for name, n in (("one", 3), ("two", 7)):
        os.makedirs(tmp_path / name)
        write_tar(tmp_path / name / "sh.tar", [(f"k{i}.txt", b"x") for i in range(n)])
    monkeypatch.chdir(tmp_path / "one")
    assert wds.WebDataset(["sh.tar"], exact_epoch=True).exact_source().counts == [3]
    monkeypatch.chdir(tmp_path / "two")
    assert wds.WebDataset(["sh.tar"], exact_epoch=True).exact_source().counts == [7]
    assert len(list((tmp_path / "xdg" / "cloudwds" / "counts").iterdir())) == 2
