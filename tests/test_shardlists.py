"""cloudwds.shardlists: URL expansion, shard sources and the directory work queue."""

from __future__ import annotations

import os
from itertools import islice

import pytest

from cloudwds import shardlists as sl


def test_expand_urls_env_braces_and_lists(monkeypatch):
    monkeypatch.setenv("WDS_BUCKET", "s3://b/${SUB}")
    monkeypatch.setenv("WDS_SUB", "train")
    assert sl.expand_urls("${BUCKET}/x-{0..1}.tar::y.tar") == [
        "s3://b/train/x-0.tar",
        "s3://b/train/x-1.tar",
        "y.tar",
    ]
    with pytest.raises(ValueError, match="WDS_MISSING"):
        sl.expand_urls("${MISSING}/a.tar")
    assert sl.expand_source(["a-{0..1}"]) == ["a-{0..1}"]
    assert sl.expand_source(iter(["a", "b", "c"]), max_urls=2) == ["a", "b"]


def test_simple_and_resampled_lists_take_lists_literally():
    urls = ["http://example.com/file1", "http://example.com/{a,b}"]
    assert [s["url"] for s in sl.SimpleShardList(urls)] == urls
    rs = sl.ResampledShards(urls, 2, 0, lambda: 1, False, int(1e6))  # webdataset's positions
    assert rs.urls == urls and rs.nshards == 2 and rs.epoch == -1
    assert len(list(rs)) == 2 and all(s["url"] in urls for s in rs)
    with pytest.raises(ValueError):
        sl.ResampledShards([])
    assert list(sl.ResampledShards([], empty_check=False)) == []


def test_worker_seed_hook_decides_the_draws():
    urls = [str(i) for i in range(1000)]
    one = [s["url"] for s in sl.ResampledShards(urls, 10, seed=5, worker_seed=lambda: 1)]
    again = [s["url"] for s in sl.ResampledShards(urls, 10, seed=5, worker_seed=lambda: 1)]
    other = [s["url"] for s in sl.ResampledShards(urls, 10, seed=5, worker_seed=lambda: 2)]
    assert one == again and one != other


def test_non_empty_and_resampled():
    assert list(sl.non_empty([1, 2])) == [1, 2]
    with pytest.raises(ValueError):
        list(sl.non_empty([]))
    assert len(list(sl.resampled_(["a", "b"], 7))) == 7


def _touch(directory, n, start=0):
    for i in range(start, start + n):
        (directory / f"file{i}.tar").touch()


def test_directory_shard_list_oldest_unlink(tmp_path):
    _touch(tmp_path, 5)
    for i in range(5):
        os.utime(tmp_path / f"file{i}.tar", (i, i))
    ds = sl.DirectoryShardList(
        f"{tmp_path}/", pattern="*.tar", select="oldest", mode="unlink", poll=None
    )
    claimed = [s["url"] for s in islice(ds, 3)]
    assert claimed == [f"{tmp_path}/file{i}.tar._{os.getpid()}_" for i in range(3)]
    assert sorted(os.listdir(tmp_path)) == [
        f"file2.tar._{os.getpid()}_",
        "file3.tar",
        "file4.tar",
    ]


def test_directory_shard_list_keep_and_stale_claims(tmp_path):
    _touch(tmp_path, 2)
    ds = sl.DirectoryShardList(f"{tmp_path}/", pattern="*.tar", poll=None, mode="keep")
    assert len(list(ds)) == 2
    assert sorted(os.listdir(tmp_path)) == ["file0.tar._done_", "file1.tar._done_"]
    (tmp_path / "file9.tar._99999999_").touch()  # claimed by a process that no longer exists
    resample = sl.DirectoryShardList(f"{tmp_path}/", pattern="*.tar", poll=None)
    resample.cleanup_files_without_processes()
    assert (tmp_path / "file9.tar").exists()
    with pytest.raises(ValueError):
        sl.DirectoryShardList(str(tmp_path))  # must end with "/"


def test_multishard_sample_refused():
    with pytest.raises(NotImplementedError, match="spec"):
        sl.MultiShardSample({"datasets": []})
