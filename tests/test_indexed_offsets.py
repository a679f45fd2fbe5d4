"""The per-shard offsets table and DALI's wds2idx text format."""

from __future__ import annotations

import pytest
from conftest import make_shards

from cloudwds.index import scan_shard_offsets
from cloudwds.indexed.offsets import (
    OffsetsFormatError,
    ShardOffsets,
    is_compressed_url,
    offsets_url,
)


def test_from_members_groups_like_the_streaming_reader():
    table = ShardOffsets.from_members(
        "u.tar",
        [
            ("a.jpg", 512, 10),
            ("a.cls", 1536, 1),
            ("README", 2560, 5),  # no field: belongs to no sample
            ("dir/b.seg.PNG", 3584, 7),
            ("a.txt", 4608, 3),  # same key again but not consecutive: a new sample
        ],
    )
    assert len(table) == 3
    assert [table.key(i) for i in range(3)] == ["a", "dir/b", "a"]
    assert table.span(0) == (512, 1537)
    assert table.span(1) == (3584, 3591)
    assert list(table.members(2)) == [3]
    assert table.data_end == 4611


def test_idx_roundtrip_and_dali_layout():
    table = ShardOffsets.from_members(
        "u.tar", [("k0.jpg", 512, 100), ("k0.cls", 1024, 1), ("k1.jpg", 2048, 5)]
    )
    text = table.to_idx().decode()
    assert text == "v1.2 2\njpg 512 100 k0.jpg cls 1024 1 k0.cls\njpg 2048 5 k1.jpg\n"
    back = ShardOffsets.from_idx(table.to_idx(), "u.tar")
    assert (back.names, list(back.offsets), list(back.sizes), list(back.starts)) == (
        table.names,
        list(table.offsets),
        list(table.sizes),
        list(table.starts),
    )


def test_names_with_whitespace_and_percent_are_encoded():
    table = ShardOffsets.from_members("u.tar", [("my file.a b", 512, 3), ("my file.100%", 1024, 1)])
    text = table.to_idx().decode()
    assert text.splitlines()[1] == "a%20b 512 3 my%20file.a%20b 100%25 1024 1 my%20file.100%25"
    back = ShardOffsets.from_idx(table.to_idx(), "u.tar")
    assert back.names == ["my file.a b", "my file.100%"]


def test_reads_a_file_as_dali_writes_it():
    # DALI's wds2idx: extension, data offset, size, name; one line per sample
    dali = b"v1.2 2\njpg 512 4 x/0.jpg txt 1536 2 x/0.txt\njpg 2560 4 x/1.jpg txt 3584 2 x/1.txt\n"
    table = ShardOffsets.from_idx(dali, "s3://b/x.tar")
    assert len(table) == 2 and table.key(1) == "x/1" and table.span(1) == (2560, 3586)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a wds2idx"),
        (b"hello world\n", "not a wds2idx"),
        (b"v1.2 2\njpg 512 4 a.jpg\n", "announces 2 samples but has 1"),
        (b"v1.2 1\njpg 512 4\n", "groups of"),
        (b"v1.2 1\njpg x 4 a.jpg\n", "bad offset"),
        (b"v1.2 1\njpg -5 4 a.jpg\n", "negative"),
        (b"v1.2 1\njpg 5 4 noext\n", "no field"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_idx_files_raise_naming_the_file(data, message):
    with pytest.raises(OffsetsFormatError, match=message) as info:
        ShardOffsets.from_idx(data, "s/a.tar")
    assert info.value.url == "s/a.idx"


def test_offsets_url_and_compression_by_name():
    assert offsets_url("s3://b/train-000001.tar") == "s3://b/train-000001.idx"
    assert offsets_url("/d/x.a.TAR") == "/d/x.a.idx"
    assert offsets_url("/d/x.shard") == "/d/x.shard.idx"
    assert is_compressed_url("a.tgz") and is_compressed_url("a.tar.gz")
    assert not is_compressed_url("a.tar")


def test_scanned_table_spans_hold_the_member_bytes(tmp_path):
    shards = make_shards(tmp_path, 1, 6, fields=("txt", "seg.png", "cls"))
    _, table = scan_shard_offsets(shards.paths[0])
    assert table is not None
    raw = open(shards.paths[0], "rb").read()
    for s in range(len(table)):
        key = table.key(s)
        for m in table.members(s):
            name = table.names[m]
            field = name[len(key) + 1 :]
            assert (
                raw[table.offsets[m] : table.offsets[m] + table.sizes[m]]
                == (shards.values[key][field])
            )
