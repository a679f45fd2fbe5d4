"""RangeSource and coalescing: which bytes are read, and how many reads."""

from __future__ import annotations

import os

import pytest
from conftest import make_shards

from cloudwds.index import scan_shard_offsets
from cloudwds.indexed.offsets import IndexMismatchError, NoRandomAccessError, ShardOffsets
from cloudwds.indexed.reader import RangeSource, coalesce
from cloudwds.storage import StorageConfig


def test_coalesce_merges_close_spans_and_keeps_far_ones_apart():
    spans = [(3000, 3100), (0, 100), (1124, 1200), (90_000, 90_010)]
    runs = coalesce(spans, gap=1024)
    assert runs == [(0, 1200, [1, 2]), (3000, 3100, [0]), (90_000, 90_010, [3])]
    assert coalesce(spans, gap=0) == [
        (0, 100, [1]),
        (1124, 1200, [2]),
        (3000, 3100, [0]),
        (90_000, 90_010, [3]),
    ]


def test_local_reads_return_exact_ranges(tmp_path):
    shards = make_shards(tmp_path, 1, 4, fields=("txt", "cls"))
    _, table = scan_shard_offsets(shards.paths[0])
    assert table is not None
    raw = open(shards.paths[0], "rb").read()
    source = RangeSource(StorageConfig())
    spans = [table.span(0), table.span(1), table.span(3)]
    got = source.read_many(table, spans, gap=2048)
    assert [bytes(g) for g in got] == [raw[s:e] for s, e in spans]
    assert source.requests == 2  # samples 0 and 1 together, 3 alone
    assert source.read(table, 10, 20) == raw[10:20]
    source.close()


def test_size_check_uses_the_manifest_size(tmp_path):
    shards = make_shards(tmp_path, 1, 2, fields=("txt",))
    _, table = scan_shard_offsets(shards.paths[0])
    assert table is not None
    table.shard_size = os.path.getsize(shards.paths[0]) + 512
    with pytest.raises(IndexMismatchError, match="index says"):
        RangeSource(StorageConfig()).read(table, 0, 10)
    # check_size=False trusts the index
    assert len(RangeSource(StorageConfig(), check_size=False).read(table, 0, 10)) == 10


def test_pipe_shards_have_no_random_access():
    table = ShardOffsets.from_members("pipe:cat a.tar", [("a.txt", 512, 1)])
    with pytest.raises(NoRandomAccessError, match="pipe"):
        RangeSource(StorageConfig()).read(table, 512, 513)
