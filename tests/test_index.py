"""cloudwds.index: building, saving and finding manifests, on local disk and on S3 (moto)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import make_shards, write_tar
from moto_support import moto_s3

from cloudwds.errors import TruncatedShardError
from cloudwds.index import (
    INDEX_NAME,
    Manifest,
    ManifestError,
    ShardInfo,
    build_index,
    default_index_url,
    find_index,
    load_index,
    scan_shard,
)
from cloudwds.storage import StorageConfig


@dataclass
class S3:
    endpoint: str
    fs: Any  # an s3fs filesystem for setting up buckets

    @property
    def options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "use_listings_cache": False}

    def storage(self) -> StorageConfig:
        return StorageConfig.resolve(storage_options=self.options, rewrites="")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """A moto S3 server on 127.0.0.1 with dummy credentials."""
    with moto_s3("indexdata") as (endpoint, fs):
        yield S3(endpoint, fs)


def shards_in(directory, nshards: int, nsamples: int, **kw: Any):
    os.makedirs(directory, exist_ok=True)
    return make_shards(directory, nshards, nsamples, **kw)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_build_index_counts_sizes_and_checksums(tmp_path):
    shards = make_shards(tmp_path, 3, 7)
    manifest = build_index(shards.spec, workers=2)
    assert [s.url for s in manifest.shards] == shards.paths
    assert manifest.counts() == {p: 7 for p in shards.paths}
    assert manifest.total_samples == 21
    for info, path in zip(manifest.shards, shards.paths):
        assert info.bytes == os.path.getsize(path)
        assert info.sha256 == sha256(path)
        assert info.members == 14  # txt + cls


def test_samples_are_counted_as_readers_group_them(tmp_path):
    members = [
        ("a.txt", b"1"),
        ("a.cls", b"2"),
        ("b.txt", b"3"),
        ("README", b"no field: not a sample"),
        ("a.json", b"4"),  # 'a' again after 'b': a reader yields a second sample
        ("__meta__", b"skipped metadata"),
    ]
    path = write_tar(tmp_path / "x.tar", members)
    info = scan_shard(path, checksum=None)
    assert (info.samples, info.members, info.sha256) == (3, 5, None)


def test_gzipped_shard_checksum_is_of_stored_bytes(tmp_path):
    shards = make_shards(tmp_path, 1, 5)
    gz = str(tmp_path / "shard.tar.gz")
    with open(shards.paths[0], "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    (info,) = build_index([gz]).shards
    assert info.samples == 5
    assert info.bytes == os.path.getsize(gz)
    assert info.sha256 == sha256(gz)


def test_truncated_shard_raises_with_url(tmp_path):
    shards = make_shards(tmp_path, 2, 5)
    with open(shards.paths[1], "r+b") as f:
        f.truncate(1500)
    with pytest.raises(TruncatedShardError) as info:
        build_index(shards.paths)
    assert info.value.url == shards.paths[1]


def test_save_and_load_store_relative_urls_under_the_manifest(tmp_path):
    shards = shards_in(tmp_path / "data", 2, 4)
    other = shards_in(tmp_path / "elsewhere", 1, 3, prefix="extra")
    manifest = build_index(shards.paths + other.paths)
    target = str(tmp_path / "data" / INDEX_NAME)
    assert manifest.save(target) == target

    with open(target) as f:
        doc = json.load(f)
    assert doc["format"] == "cloudwds-index" and doc["version"] == 1
    assert doc["total_samples"] == 11 and doc["num_shards"] == 3
    assert [s["url"] for s in doc["shards"]] == [
        "shard-000000.tar",
        "shard-000001.tar",
        other.paths[0],  # not under the manifest's directory: absolute
    ]

    loaded = load_index(target)
    assert loaded == manifest
    assert loaded.url == target
    # A copied dataset directory keeps a working index.
    shutil.copytree(tmp_path / "data", tmp_path / "copy")
    copied = load_index(str(tmp_path / "copy" / INDEX_NAME))
    assert copied.shards[0].url == str(tmp_path / "copy" / "shard-000000.tar")
    assert copied.shards[0].sha256 == manifest.shards[0].sha256


def test_get_matches_local_paths_however_spelled(tmp_path, monkeypatch):
    shards = make_shards(tmp_path, 2, 3)
    manifest = build_index(shards.spec)
    monkeypatch.chdir(tmp_path)
    assert manifest.get("shard-000001.tar") is manifest.shards[1]
    assert manifest.get(f"file://{shards.paths[0]}") is manifest.shards[0]
    assert manifest.get("nope.tar") is None
    assert manifest.covers("shard-{000000..000001}.tar")
    assert not manifest.covers("shard-{000000..000002}.tar")


def test_default_index_url_and_find_index(tmp_path):
    shards = shards_in(tmp_path / "a" / "b", 2, 3)
    assert default_index_url(shards.spec) == str(tmp_path / "a" / "b" / INDEX_NAME)
    other = shards_in(tmp_path / "a" / "c", 1, 3)
    assert default_index_url(shards.paths + other.paths) == str(tmp_path / "a" / INDEX_NAME)
    assert default_index_url(["s3://b/x/1.tar", "s3://b/x/y/2.tar"]) == f"s3://b/x/{INDEX_NAME}"
    with pytest.raises(ValueError):
        default_index_url(["s3://b1/1.tar", "s3://b2/2.tar"])
    with pytest.raises(ValueError):
        default_index_url(["pipe:cat x.tar"])

    assert find_index(shards.spec) is None
    build_index(shards.spec).save()
    found = find_index(shards.spec)
    assert found is not None and found.counts() == {p: 3 for p in shards.paths}


def test_load_rejects_what_is_not_a_manifest(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_index(str(bad))
    bad.write_text(json.dumps({"shards": []}))
    with pytest.raises(ManifestError, match="not a cloudwds index"):
        load_index(str(bad))
    bad.write_text(json.dumps({"format": "cloudwds-index", "version": 99, "shards": []}))
    with pytest.raises(ManifestError, match="newer"):
        load_index(str(bad))
    bad.write_text(json.dumps({"format": "cloudwds-index", "version": 1, "shards": [{"url": 1}]}))
    with pytest.raises(ManifestError, match=r"shards\[0\]"):
        load_index(str(bad))


def test_manifest_roundtrip_in_memory():
    m = Manifest(shards=[ShardInfo("s3://b/d/x.tar", 3, 100, "ab", 6)])
    doc = m.to_json("s3://b/d")
    assert doc["shards"][0]["url"] == "x.tar"
    assert Manifest.from_json(doc, "s3://b/d/" + INDEX_NAME) == m


def test_index_on_s3(s3, tmp_path):
    shards = make_shards(tmp_path, 3, 6)
    for path in shards.paths:
        s3.fs.put_file(path, f"indexdata/idx/{os.path.basename(path)}")
    spec = "s3://indexdata/idx/shard-{000000..000002}.tar"
    storage = s3.storage()
    manifest = build_index(spec, storage)
    assert manifest.total_samples == 18
    assert [s.sha256 for s in manifest.shards] == [sha256(p) for p in shards.paths]

    url = manifest.save(storage=storage)
    assert url == f"s3://indexdata/idx/{INDEX_NAME}"
    doc = json.loads(s3.fs.cat_file(f"indexdata/idx/{INDEX_NAME}"))
    assert doc["shards"][0]["url"] == "shard-000000.tar"
    found = find_index(spec, storage)
    assert found == manifest
    assert found is not None and found.get("s3://indexdata/idx/shard-000002.tar") is not None
    assert find_index("s3://indexdata/nothing-here/a.tar", storage) is None


# ---------------------------------------------------------------------------------------------
# offsets (random access)
# ---------------------------------------------------------------------------------------------


def test_build_index_with_offsets_writes_idx_next_to_each_shard(tmp_path):
    shards = make_shards(tmp_path, 2, 5, fields=("txt", "cls"))
    manifest = build_index(shards.spec, offsets=True)
    idx = [p[: -len(".tar")] + ".idx" for p in shards.paths]
    assert [s.offsets for s in manifest.shards] == idx
    with open(idx[0], encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "v1.2 5"
    assert len(lines) == 6
    # every recorded offset points at the member's bytes in the shard
    with open(shards.paths[0], "rb") as f:
        raw = f.read()
    for line in lines[1:]:
        fields = line.split()
        for i in range(0, len(fields), 4):
            ext, offset, size, name = (
                fields[i],
                int(fields[i + 1]),
                int(fields[i + 2]),
                fields[i + 3],
            )
            key = name[: name.index(".")]
            assert raw[offset : offset + size] == shards.values[key][ext]


def test_offsets_survive_save_and_load_relative(tmp_path):
    shards = make_shards(tmp_path, 2, 3, fields=("txt",))
    manifest = build_index(shards.spec, offsets=True)
    url = manifest.save()
    with open(url, encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["shards"][1]["offsets"] == "shard-000001.idx"
    assert "compressed" not in doc["shards"][1]
    loaded = load_index(url)
    assert [s.offsets for s in loaded.shards] == [s.offsets for s in manifest.shards]


def test_gzipped_shard_gets_no_offsets_and_is_marked(tmp_path):
    path = write_tar(tmp_path / "a.tar", [("k.txt", b"hello")])
    with open(path, "rb") as f, gzip.open(tmp_path / "a.tgz", "wb") as g:
        g.write(f.read())
    manifest = build_index([str(tmp_path / "a.tgz")], offsets=True)
    entry = manifest.shards[0]
    assert entry.compressed is True and entry.offsets is None
    assert not (tmp_path / "a.tgz.idx").exists()
    assert manifest.to_json()["shards"][0]["compressed"] is True


def test_scan_shard_offsets_matches_tarfile(tmp_path):
    import tarfile

    from cloudwds.index import scan_shard_offsets

    path = write_tar(
        tmp_path / "p.tar",
        [("a.txt", b"x" * 700), ("b" * 120 + ".bin", b"yy"), ("noext", b"z"), ("c.txt", b"")],
        format=tarfile.PAX_FORMAT,
    )
    info, table = scan_shard_offsets(path)
    assert table is not None and info.samples == len(table) == 3
    with tarfile.open(path) as tar:
        expected = [(m.name, m.offset_data, m.size) for m in tar if m.name != "noext"]
    assert list(zip(table.names, table.offsets, table.sizes)) == expected
    assert table.shard_size == os.path.getsize(path)


def test_index_with_offsets_on_s3(s3, tmp_path):
    shards = make_shards(tmp_path, 2, 4)
    for path in shards.paths:
        s3.fs.put_file(path, f"indexdata/off/{os.path.basename(path)}")
    manifest = build_index(
        "s3://indexdata/off/shard-{000000..000001}.tar", s3.storage(), offsets=True
    )
    assert manifest.shards[0].offsets == "s3://indexdata/off/shard-000000.idx"
    text = s3.fs.cat_file("indexdata/off/shard-000001.idx").decode()
    assert text.splitlines()[0] == "v1.2 4"


def test_cli_index_writes_offsets_unless_told_not_to(tmp_path):
    from cloudwds.cli import main

    shards = make_shards(tmp_path, 2, 3, fields=("txt",))
    assert main(["-q", "index", "--no-offsets", shards.spec]) == 0
    assert not os.path.exists(shards.paths[0][:-4] + ".idx")
    assert load_index(str(tmp_path / INDEX_NAME)).shards[0].offsets is None
    assert main(["-q", "index", shards.spec]) == 0
    manifest = load_index(str(tmp_path / INDEX_NAME))
    assert [s.offsets for s in manifest.shards] == [p[:-4] + ".idx" for p in shards.paths]
    with open(shards.paths[1][:-4] + ".idx", encoding="utf-8") as f:
        assert f.readline() == "v1.2 3\n"
