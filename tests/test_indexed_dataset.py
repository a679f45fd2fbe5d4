"""IndexedWebDataset: samples by index equal WebDataset's, stages, DataLoader, pickling, errors."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil

import pytest
import torch
from conftest import make_shards, write_tar
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

import cloudwds as wds
from cloudwds.errors import DuplicateMemberError
from cloudwds.index import build_index
from cloudwds.indexed import (
    IndexedWebDataset,
    IndexMismatchError,
    NoRandomAccessError,
    SampleDroppedError,
)

FIELDS = ("txt", "cls", "seg.png", "bin")


@pytest.fixture
def indexed(tmp_path):
    shards = make_shards(tmp_path, 3, 7, fields=FIELDS)
    build_index(shards.spec, offsets=True).save()
    return shards


def streamed(spec: str) -> list[dict]:
    return list(wds.WebDataset(spec, shardshuffle=False))


def test_every_sample_by_index_equals_the_streamed_sample(indexed):
    ds = IndexedWebDataset(indexed.spec)
    expected = streamed(indexed.spec)
    assert len(ds) == len(expected) == 21
    got = [ds[i] for i in range(len(ds))]
    assert got == expected  # keys, urls, fields (bytes) and __local_path__, in the same order
    assert list(got[0]) == list(expected[0])
    assert ds[-1] == expected[-1]
    with pytest.raises(IndexError):
        ds[21]


def test_from_the_manifest_gives_the_same_samples(indexed):
    manifest_url = os.path.join(os.path.dirname(indexed.paths[0]), "cloudwds-index.json")
    ds = IndexedWebDataset(manifest_url)
    expected = [dict(s, __url__=os.path.abspath(s["__url__"])) for s in streamed(indexed.spec)]
    assert [ds[i] for i in range(len(ds))] == expected


def test_getitems_coalesces_neighbours_into_one_read(indexed):
    ds = IndexedWebDataset(indexed.spec)
    expected = streamed(indexed.spec)
    before = ds.reader.requests
    batch = ds.__getitems__([3, 4, 5, 9, 20])
    assert batch == [expected[i] for i in (3, 4, 5, 9, 20)]
    # shard 0: samples 3,4,5 are neighbours (one read); shard 1: 9; shard 2: 20
    assert ds.reader.requests - before == 3
    needed = sum(ds.tables[s].span(j)[1] - ds.tables[s].span(j)[0] for s, j in map(ds.locate, [9]))
    before_bytes = ds.reader.bytes_read
    ds[9]
    assert ds.reader.bytes_read - before_bytes == needed


def test_a_single_read_covers_only_the_sample(indexed):
    ds = IndexedWebDataset(indexed.spec)
    table = ds.tables[1]
    start, end = table.span(2)
    before = ds.reader.bytes_read
    ds[7 + 2]
    assert ds.reader.bytes_read - before == end - start
    assert start == table.offsets[table.starts[2]]


def test_stages_decode_to_tuple_map(indexed):
    ds = (
        IndexedWebDataset(indexed.spec)
        .decode()
        .to_tuple("cls", "txt")
        .map(lambda t: (t[0] * 2, t[1]))
    )
    assert ds[8] == (16, "text of s1-0001")
    plain = IndexedWebDataset(indexed.spec)
    assert plain.stages == []  # fluent methods return a new dataset
    renamed = plain.rename(label="cls").map_dict(label=int)
    assert renamed[3]["label"] == 3


def test_a_stage_that_drops_the_sample_is_an_error(indexed):
    ds = IndexedWebDataset(indexed.spec).map(lambda s: None)
    with pytest.raises(SampleDroppedError, match="sample 2"):
        ds[2]


def test_pickle_drops_open_handles_and_reads_again(indexed):
    ds = IndexedWebDataset(indexed.spec).decode()
    ds[0]
    assert ds._source is not None
    state = pickle.dumps(ds)
    copy = pickle.loads(state)
    assert copy._source is None
    assert copy[5] == ds[5]


def test_dataloader_with_random_sampler_and_spawned_workers(indexed):
    ds = IndexedWebDataset(indexed.spec).to_tuple("__key__", "cls")
    loader = DataLoader(
        ds,
        batch_size=4,
        sampler=RandomSampler(ds, generator=torch.Generator().manual_seed(0)),
        num_workers=2,
        multiprocessing_context="spawn",
        collate_fn=list,
    )
    keys = [key for batch in loader for key, _ in batch]
    assert sorted(keys) == sorted(indexed.all_keys)


def test_distributed_sampler_two_ranks_cover_every_index_once(indexed):
    ds = IndexedWebDataset(indexed.paths[:2])  # 14 samples: divisible by 2, no padding
    seen: list[str] = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        loader = DataLoader(ds, batch_size=3, sampler=sampler, collate_fn=list)
        seen += [s["__key__"] for batch in loader for s in batch]
    assert sorted(seen) == sorted(indexed.keys[0] + indexed.keys[1])


def test_batch_sampler(indexed):
    ds = IndexedWebDataset(indexed.spec)
    loader = DataLoader(ds, batch_sampler=[[0, 1, 2], [20, 10]], collate_fn=list)
    assert [[s["__key__"] for s in b] for b in loader] == [
        ["s0-0000", "s0-0001", "s0-0002"],
        ["s2-0006", "s1-0003"],
    ]


def test_missing_offsets_file(tmp_path):
    shards = make_shards(tmp_path, 2, 3, fields=("txt",))
    with pytest.raises(NoRandomAccessError, match="cloudwds index") as info:
        IndexedWebDataset(shards.spec)
    assert info.value.url == shards.paths[0]
    built = IndexedWebDataset(shards.spec, build_missing=True)
    assert [built[i] for i in range(6)] == streamed(shards.spec)


def test_gzipped_shards_are_refused(tmp_path):
    path = write_tar(tmp_path / "a.tar", [("k.txt", b"hello")])
    with open(path, "rb") as f, gzip.open(tmp_path / "a.tgz", "wb") as g:
        g.write(f.read())
    with pytest.raises(NoRandomAccessError, match="gzip") as info:
        IndexedWebDataset(str(tmp_path / "a.tgz"))
    assert info.value.url == str(tmp_path / "a.tgz")
    manifest = build_index([str(tmp_path / "a.tgz")], offsets=True)
    with pytest.raises(NoRandomAccessError, match="gzip"):
        IndexedWebDataset(manifest)


def test_shard_replaced_after_indexing_gives_a_typed_error(indexed, tmp_path):
    # a shard of another size under the same name: the manifest's size check names it
    os.makedirs(tmp_path / "other")
    other = make_shards(tmp_path / "other", 1, 9, fields=FIELDS)
    shutil.copy(other.paths[0], indexed.paths[1])
    ds = IndexedWebDataset(os.path.join(os.path.dirname(indexed.paths[0]), "cloudwds-index.json"))
    ds[0]  # shard 0 is fine
    with pytest.raises(IndexMismatchError, match="changed after the index") as info:
        ds[7]
    assert info.value.url == indexed.paths[1]


def test_shard_rewritten_with_the_same_size_is_caught_by_the_headers(tmp_path):
    a = write_tar(tmp_path / "a.tar", [("k0.txt", b"aaaa"), ("k0.cls", b"1"), ("k1.txt", b"b")])
    build_index([a], offsets=True)
    # same size, members in another order: headers inside the sample's range disagree
    write_tar(a, [("k0.cls", b"1"), ("k0.txt", b"aaaa"), ("k1.txt", b"b")])
    ds = IndexedWebDataset([a], check_size=True)
    with pytest.raises(IndexMismatchError, match="header") as info:
        ds[0]
    assert info.value.url == a and info.value.member == "k0.cls"


def test_index_pointing_past_the_end_of_a_shard(tmp_path):
    a = write_tar(tmp_path / "a.tar", [("k0.txt", b"aaaa")])
    with open(tmp_path / "a.idx", "w") as f:
        f.write("v1.2 1\ntxt 99999 4 k0.txt\n")
    with pytest.raises(IndexMismatchError, match="99999|100003"):
        IndexedWebDataset([a])[0]


def test_duplicate_field_raises_like_webdataset(tmp_path):
    a = write_tar(tmp_path / "a.tar", [("k0.txt", b"a"), ("k0.TXT", b"b")])
    build_index([a], offsets=True)
    with pytest.raises(DuplicateMemberError):
        IndexedWebDataset([a])[0]


def test_verify_checksum_catches_a_same_size_rewrite(tmp_path):
    a = write_tar(tmp_path / "a.tar", [("k0.txt", b"aaaa"), ("k1.txt", b"bbbb")])
    build_index([a], offsets=True).save()
    write_tar(a, [("k0.txt", b"AAAA"), ("k1.txt", b"bbbb")])  # same layout, other bytes
    manifest = str(tmp_path / "cloudwds-index.json")
    assert IndexedWebDataset(manifest)[0]["txt"] == b"AAAA"  # size and headers agree
    with pytest.raises(IndexMismatchError, match="sha256") as info:
        IndexedWebDataset(manifest, verify_checksum=True)[0]
    assert info.value.url == a


def test_verify_checksum_passes_and_needs_checksums(tmp_path):
    a = write_tar(tmp_path / "a.tar", [("k0.txt", b"aaaa")])
    build_index([a], offsets=True).save()
    assert (
        IndexedWebDataset(str(tmp_path / "cloudwds-index.json"), verify_checksum=True)[0]["txt"]
        == b"aaaa"
    )
    os.makedirs(tmp_path / "bare")
    b = write_tar(tmp_path / "bare" / "b.tar", [("k0.txt", b"b")])  # no manifest: no checksum
    with pytest.raises(IndexMismatchError, match="no sha256"):
        IndexedWebDataset([b], verify_checksum=True, build_missing=True)[0]


def test_dataloader_batches_use_getitems_one_read_per_shard_run(indexed):
    ds = IndexedWebDataset(indexed.spec)
    loader = DataLoader(ds, batch_size=7, shuffle=False, collate_fn=list)  # one batch per shard
    batches = list(loader)
    assert [len(b) for b in batches] == [7, 7, 7]
    assert ds.reader.requests == 3  # DataLoader fetched each batch with __getitems__


def test_shard_aware_sampler_in_a_dataloader_gives_every_sample(indexed):
    from cloudwds.indexed import ShardAwareSampler

    ds = IndexedWebDataset(indexed.spec)
    sampler = ShardAwareSampler(ds, window=2, seed=4)
    loader = DataLoader(ds, batch_size=5, sampler=sampler, num_workers=2, collate_fn=list)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        keys = [s["__key__"] for batch in loader for s in batch]
        assert sorted(keys) == sorted(indexed.all_keys)
