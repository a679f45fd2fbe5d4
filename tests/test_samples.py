"""cloudwds.samples: tar members → samples, grouped by key, never across shards."""

from __future__ import annotations

import io
import os

import cbor2
import msgpack
import pytest
from conftest import tar_bytes, write_tar

import cloudwds as wds
from cloudwds.errors import DuplicateMemberError
from cloudwds.samples import cbor_items, group_members, msgpack_items, split_name, tar_samples


@pytest.mark.parametrize(
    "name,expected",
    [
        ("a.jpg", ("a", "jpg")),
        ("dir/a.b.jpg", ("dir/a", "b.jpg")),
        ("d.x/a.seg.PNG", ("d.x/a", "seg.png")),  # dots in directories do not split
        ("A.JPG", ("A", "jpg")),  # the key keeps its case, the suffix is lowercased
        ("noext", None),
        ("dir/noext", None),
        ("dir/.hidden", None),
        (".bashrc", None),
    ],
)
def test_split_name(name, expected):
    assert split_name(name) == expected


def samples_of(members, url="u.tar", local_path=None):
    return list(group_members(iter(members), url, local_path))


def test_grouping_by_key_with_dirs_and_multi_dot_suffixes():
    members = [
        ("dir/a.b.jpg", b"1"),
        ("dir/a.json", b"2"),
        ("dir/a.TXT", b"3"),
        ("dir/b.jpg", b"4"),
        ("other/b.jpg", b"5"),
    ]
    got = samples_of(members)
    assert got == [
        {"__key__": "dir/a", "__url__": "u.tar", "b.jpg": b"1", "json": b"2", "txt": b"3"},
        {"__key__": "dir/b", "__url__": "u.tar", "jpg": b"4"},
        {"__key__": "other/b", "__url__": "u.tar", "jpg": b"5"},
    ]


def test_only_consecutive_members_are_grouped():
    members = [("a.x", b"1"), ("b.x", b"2"), ("a.y", b"3")]
    got = samples_of(members)
    assert [(s["__key__"], sorted(k for k in s if not k.startswith("__"))) for s in got] == [
        ("a", ["x"]),
        ("b", ["x"]),
        ("a", ["y"]),
    ]


def test_names_without_a_dot_are_skipped():
    members = [("README", b"r"), ("a.x", b"1"), ("dir/LICENSE", b"l"), ("a.y", b"2")]
    got = samples_of(members)
    assert got == [{"__key__": "a", "__url__": "u.tar", "x": b"1", "y": b"2"}]


def test_duplicate_suffix_raises_naming_url_and_member():
    members = [("a.jpg", b"1"), ("a.JPG", b"2")]
    with pytest.raises(DuplicateMemberError) as info:
        samples_of(members, url="/data/shard-3.tar")
    assert info.value.url == "/data/shard-3.tar"
    assert info.value.member == "a.JPG"
    assert "/data/shard-3.tar" in str(info.value) and "a.JPG" in str(info.value)


def test_local_path_is_attached_when_given():
    got = samples_of([("k.txt", b"t")], url="file:/x/s.tar", local_path="/x/s.tar")
    assert got == [
        {"__key__": "k", "__url__": "file:/x/s.tar", "__local_path__": "/x/s.tar", "txt": b"t"}
    ]


def test_tar_samples_on_a_real_stream():
    data = tar_bytes([("k1.txt", b"a"), ("k1.cls", b"1"), ("k2.txt", b"b")])
    got = list(tar_samples(io.BytesIO(data), "mem"))
    assert [s["__key__"] for s in got] == ["k1", "k2"]
    assert got[0]["cls"] == b"1" and got[1]["txt"] == b"b"


def test_samples_never_span_shard_boundaries(tmp_path):
    # the same key ends shard 0 and starts shard 1: two samples, one per shard
    p0 = write_tar(tmp_path / "s0.tar", [("x.txt", b"0"), ("same.txt", b"end of 0")])
    p1 = write_tar(tmp_path / "s1.tar", [("same.cls", b"1"), ("y.txt", b"1")])
    got = list(wds.DataPipeline(wds.SimpleShardList([p0, p1]), wds.tarfile_to_samples()))
    assert [(s["__key__"], s["__url__"]) for s in got] == [
        ("x", p0),
        ("same", p0),
        ("same", p1),
        ("y", p1),
    ]
    assert got[1]["txt"] == b"end of 0" and "cls" not in got[1]
    assert got[2]["cls"] == b"1" and "txt" not in got[2]


def test_metadata_fields_for_local_files(tmp_path, shards):
    path = shards.paths[0]
    got = list(wds.DataPipeline(wds.SimpleShardList(path), wds.tarfile_to_samples()))
    assert len(got) == 10
    # fields first, __local_path__ last: the sample prints like webdataset's
    assert list(got[0]) == ["__key__", "__url__", "txt", "cls", "__local_path__"]
    for sample, key in zip(got, shards.keys[0]):
        assert sample["__key__"] == key
        assert sample["__url__"] == path
        assert sample["__local_path__"] == path
        assert sample["txt"] == shards.values[key]["txt"]
    url = "file:" + path
    got = list(wds.DataPipeline(wds.SimpleShardList(url), wds.tarfile_to_samples()))
    assert got[0]["__url__"] == url and got[0]["__local_path__"] == path
    assert os.path.exists(got[0]["__local_path__"])


def test_cbor_and_msgpack_items():
    values = [1, "two", [3.0, "x"], {"k": b"v"}, None]
    cbor = b"".join(cbor2.dumps(v) for v in values)
    assert list(cbor_items(io.BytesIO(cbor))) == values
    packed = b"".join(msgpack.packb(v) for v in values)
    assert list(msgpack_items(io.BytesIO(packed))) == values
    assert list(cbor_items(io.BytesIO(b""))) == []
