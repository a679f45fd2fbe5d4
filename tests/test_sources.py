"""cloudwds.sources: shard items → samples for tar, CBOR and MsgPack; pipes, errors, leaks."""

from __future__ import annotations

import gc
import logging
import os
import sys
import time

import cbor2
import msgpack
import numpy as np
import pytest
from conftest import make_shards, write_tar

import cloudwds as wds
from cloudwds.errors import PipeError, StorageError

FOREVER_TAR = r"""
import itertools, sys, tarfile
out = sys.stdout.buffer
for i in itertools.count():
    data = b"%08d" % i
    info = tarfile.TarInfo("%08d.txt" % i)
    info.size = len(data)
    out.write(info.tobuf(format=tarfile.USTAR_FORMAT) + data + bytes(512 - len(data)))
"""


def keys_of(pipeline) -> list[str]:
    return [s["__key__"] for s in pipeline]


def pipeline(urls, *stages):
    return wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(), *stages)


def test_local_paths_and_file_urls(shards):
    for url in (shards.paths[1], "file:" + shards.paths[1], "file://" + shards.paths[1]):
        got = list(pipeline(url))
        assert [s["__key__"] for s in got] == shards.keys[1]
        assert all(s["__url__"] == url for s in got)
        assert got[3]["cls"] == shards.values[shards.keys[1][3]]["cls"]


def test_brace_expansion_double_colon_lists_and_url_lists(shards):
    assert keys_of(pipeline(shards.spec)) == shards.all_keys
    two = f"{shards.paths[2]}::{shards.paths[0]}"
    assert keys_of(pipeline(two)) == shards.keys[2] + shards.keys[0]
    assert keys_of(pipeline([shards.paths[3], shards.paths[1]])) == shards.keys[3] + shards.keys[1]
    braces_and_list = shards.spec.replace("000003", "000001") + "::" + shards.paths[3]
    assert keys_of(pipeline(braces_and_list)) == shards.keys[0] + shards.keys[1] + shards.keys[3]


def test_plain_string_items_work_without_a_shard_list(shards):
    stage = wds.tarfile_to_samples()
    got = list(stage(iter([shards.paths[0], {"url": shards.paths[1]}])))
    assert [s["__key__"] for s in got] == shards.keys[0] + shards.keys[1]


def test_gzipped_shards(tmp_path):
    members = [(f"k{i}.txt", f"value {i}".encode()) for i in range(5)]
    for name in ("a.tar.gz", "b.tgz"):
        path = write_tar(tmp_path / name, members, mode="w:gz")
        got = list(pipeline(path))
        assert [(s["__key__"], s["txt"]) for s in got] == [(n[:-4], d) for n, d in members]


def test_pipe_cat(shards):
    url = f"pipe:cat {shards.paths[0]}"
    got = list(pipeline(url))
    assert [s["__key__"] for s in got] == shards.keys[0]
    assert got[0]["__url__"] == url and "__local_path__" not in got[0]
    assert got[-1]["txt"] == shards.values[shards.keys[0][-1]]["txt"]


def test_pipe_failure_after_a_complete_archive_raises_pipe_error(shards):
    url = f"pipe:cat {shards.paths[0]}; exit 3"
    ds = pipeline(url)
    with pytest.raises(PipeError) as info:
        list(ds)
    assert "status 3" in str(info.value) and url in str(info.value)
    # with || true the same data reads without error
    assert keys_of(pipeline(f"pipe:(cat {shards.paths[0]}; exit 3) || true")) == shards.keys[0]


def test_pipe_failure_without_output_raises_pipe_error(tmp_path):
    url = f"pipe:cat {tmp_path}/does-not-exist.tar"
    with pytest.raises(PipeError) as info:
        list(pipeline(url))
    assert isinstance(info.value, StorageError) and url in str(info.value)


def group_members_alive(pgid: int) -> list[str]:
    """Processes (not zombies) in process group ``pgid``, read from /proc."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            alive.append(f"{entry}:{stat.split()[1]}:{state}")
    return alive


def wait_for_file(path, timeout=20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            text = open(path).read().strip()
            if text:
                return text
        time.sleep(0.01)
    raise AssertionError(f"{path} never written")


@pytest.mark.parametrize("abandon", ["close", "del"])
def test_abandoned_pipe_shard_leaves_no_process(tmp_path, abandon):
    script = tmp_path / "forever.py"
    script.write_text(FOREVER_TAR)
    pidfile = tmp_path / "pid"
    # a shell, a python writer and a cat: the whole group must go when the reader stops
    url = f"pipe:echo $$ > {pidfile}; {sys.executable} {script} | cat"
    ds = pipeline(url)
    it = iter(ds)
    got = [next(it)["__key__"] for _ in range(2000)]
    assert got == [f"{i:08d}" for i in range(2000)]
    pgid = int(wait_for_file(pidfile))
    assert len(group_members_alive(pgid)) >= 2  # the shell and its children are running
    if abandon == "close":
        it.close()
    else:
        del it
        gc.collect()
    with pytest.raises(ProcessLookupError):
        os.kill(pgid, 0)  # the shell was killed and reaped
    deadline = time.monotonic() + 10
    while group_members_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)  # orphans are reaped by init, not by us
    assert group_members_alive(pgid) == []


def test_abandoned_yes_pipe_with_warn_handler_leaves_no_process(tmp_path):
    # not a tar at all, endless output: the error closes the pipe and kills the writer
    pidfile = tmp_path / "pid"
    url = f"pipe:echo $$ > {pidfile}; yes | head -c 1000000000"
    ds = wds.DataPipeline(
        wds.SimpleShardList(url), wds.tarfile_to_samples(handler=wds.ignore_and_continue)
    )
    assert list(ds) == []
    pgid = int(wait_for_file(pidfile))
    with pytest.raises(ProcessLookupError):
        os.kill(pgid, 0)
    deadline = time.monotonic() + 10
    while group_members_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert group_members_alive(pgid) == []


def test_cbors_to_samples_readme_example(tmp_path):
    path = tmp_path / "test.cbors"
    with open(path, "wb") as stream:
        for i in np.linspace(-5.0, 5.0, 1000):
            cbor2.dump((i, str(i)[-5:]), stream)
    dataset = wds.DataPipeline(wds.SimpleShardList(str(path)), wds.cbors_to_samples())
    data = list(iter(dataset))
    assert len(data) == 1000
    assert data[0] == [-5.0, "-5.0"]
    assert data[-1] == [5.0, "5.0"]
    assert data[1][0] == pytest.approx(-4.98998998998999)


def test_cbors_through_a_pipe(tmp_path):
    path = tmp_path / "x.cbors"
    path.write_bytes(b"".join(cbor2.dumps({"i": i}) for i in range(50)))
    ds = wds.DataPipeline(wds.SimpleShardList(f"pipe:cat {path}"), wds.cbors_to_samples())
    assert list(ds) == [{"i": i} for i in range(50)]


def test_msgpack_to_samples(tmp_path):
    paths = []
    for s in range(2):
        path = tmp_path / f"m{s}.msgpack"
        path.write_bytes(b"".join(msgpack.packb([s, i, f"v{i}"]) for i in range(30)))
        paths.append(str(path))
    ds = wds.DataPipeline(wds.SimpleShardList(paths), wds.msgpack_to_samples())
    data = list(ds)
    assert len(data) == 60
    assert data[0] == [0, 0, "v0"] and data[31] == [1, 1, "v1"]


def test_open_errors_name_the_url(tmp_path, shards):
    missing = str(tmp_path / "missing.tar")
    with pytest.raises(StorageError) as info:
        list(pipeline([shards.paths[0], missing]))
    assert missing in str(info.value)


def test_open_errors_with_handlers(tmp_path, caplog):
    shards = make_shards(tmp_path, 3, 4)
    missing = str(tmp_path / "missing.tar")
    urls = [shards.paths[0], missing, shards.paths[1], shards.paths[2]]
    with caplog.at_level(logging.WARNING, "cloudwds"):  # warn_ policies log once
        cont = list(pipeline_with(urls, wds.warn_and_continue))
    assert "missing.tar" in caplog.text
    assert [s["__key__"] for s in cont] == shards.all_keys
    stop = list(pipeline_with(urls, wds.ignore_and_stop))
    assert [s["__key__"] for s in stop] == shards.keys[0]


def pipeline_with(urls, handler):
    return wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(handler=handler))


def test_wds_cache_builds_one_cache_per_pipeline_not_one_per_shard(shards, tmp_path, monkeypatch):
    from cloudwds.cache.shardcache import ShardCache

    monkeypatch.setenv("WDS_CACHE", str(tmp_path / "cache"))
    before = ShardCache.instances_created
    source = wds.SimpleShardList(shards.spec)
    assert keys_of(wds.DataPipeline(source, wds.tarfile_to_samples())) == shards.all_keys
    assert len(shards.paths) > 1
    assert ShardCache.instances_created - before == 1
    assert source.storage.cache is not None
    assert source.storage.cache.cache_dir == str(tmp_path / "cache")
    # plain string items (no shard list): the stage resolves its own config once, not per shard
    before = ShardCache.instances_created
    stage = wds.tarfile_to_samples()
    assert keys_of(stage(iter(shards.paths))) == shards.all_keys
    assert ShardCache.instances_created - before == 1
    assert stage.storage is not None and stage.storage.cache is not None
