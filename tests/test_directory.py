"""Directories as shard sources: ``WebDataset("dir/")`` reads the shards inside, sorted, in place;
the renaming work queue is only the explicit :class:`~cloudwds.DirectoryShardList`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import make_shards

import cloudwds as wds
from cloudwds.directory import shards_in_directory


def _mixed_directory(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    d.mkdir()
    for prefix in ("b", "a"):  # written out of order: the reading order is by name
        make_shards(d, 1, 3, prefix=prefix)
    (d / "c.tgz").write_bytes(b"")
    (d / "d.tar.gz").write_bytes(b"")
    (d / "notes.txt").write_text("not a shard")
    (d / "sub.tar").mkdir()  # a directory named like a shard is not one
    return d


def test_shards_in_directory_sorted_by_name(tmp_path: Path) -> None:
    d = _mixed_directory(tmp_path)
    assert shards_in_directory(str(d)) == [
        str(d / n) for n in ("a-000000.tar", "b-000000.tar", "c.tgz", "d.tar.gz")
    ]


def test_empty_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    with pytest.raises(
        ValueError, match=r"no shards \(\*\.tar, \*\.tgz, \*\.tar\.gz\) in directory"
    ):
        wds.WebDataset(str(tmp_path / "e") + "/")


@pytest.mark.parametrize("suffix", ["/", ""])
def test_webdataset_reads_a_directory_in_place(tmp_path: Path, suffix: str) -> None:
    d = tmp_path / "d"
    d.mkdir()
    a = make_shards(d, 2, 3, prefix="a")
    before = sorted(os.listdir(d))
    ds = wds.WebDataset(str(d) + suffix, shardshuffle=False)
    assert [s["__key__"] for s in ds] == a.all_keys
    assert [s["__key__"] for s in ds] == a.all_keys  # a second epoch: nothing was consumed
    assert sorted(os.listdir(d)) == before  # no file renamed (no ._done_ / ._<pid>_)
    shuffled = wds.WebDataset(d, shardshuffle=True, seed=3)  # a PathLike works too
    assert sorted(s["__key__"] for s in shuffled) == sorted(a.all_keys)


def test_the_work_queue_is_explicit(tmp_path: Path) -> None:
    d = tmp_path / "q"
    d.mkdir()
    make_shards(d, 2, 3)
    queue = wds.DirectoryShardList(str(d) + "/", pattern="*.tar", poll=None, mode="keep")
    ds = wds.DataPipeline(queue, wds.tarfile_to_samples())
    assert len(list(ds)) == 6
    assert sorted(os.listdir(d)) == ["shard-000000.tar._done_", "shard-000001.tar._done_"]
