"""Local storage through the public API: paths, ``file:``, ``-`` (stdin/stdout) and ``pipe:``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

import cloudwds as wds

READ_STDIN = """
import json, cloudwds as wds
ds = wds.WebDataset("-", shardshuffle=False).decode()
print(json.dumps([[s["__key__"], s["__url__"], s["cls"], s["txt"]] for s in ds]))
"""

WRITE_STDOUT = """
import cloudwds as wds
with wds.TarWriter("-") as sink:
    for i in range(5):
        sink.write({"__key__": f"k{i}", "cls": i, "txt": f"t{i}"})
"""


def fluent_keys(url) -> list[str]:
    return [s["__key__"] for s in wds.WebDataset(url, shardshuffle=False)]


def test_relative_and_absolute_paths_and_file_urls(shards, monkeypatch):
    monkeypatch.chdir(os.path.dirname(shards.paths[0]))
    relative = os.path.basename(shards.paths[0])
    for url in (shards.paths[0], relative, "file:" + shards.paths[0], "file://" + shards.paths[0]):
        assert fluent_keys(url) == shards.keys[0], url
    assert fluent_keys(shards.spec) == shards.all_keys


def test_pathlike_urls(shards):
    import pathlib

    assert fluent_keys(pathlib.Path(shards.paths[2])) == shards.keys[2]
    assert fluent_keys([pathlib.Path(p) for p in shards.paths[:2]]) == shards.all_keys[:20]


def test_stdin_dash_in_a_subprocess(shards):
    with open(shards.paths[1], "rb") as stdin:
        out = subprocess.run(
            [sys.executable, "-c", READ_STDIN], stdin=stdin, capture_output=True, check=True
        )
    got = json.loads(out.stdout)
    assert [k for k, _, _, _ in got] == shards.keys[1]
    assert all(url == "-" for _, url, _, _ in got)
    assert [c for _, _, c, _ in got] == list(range(10, 20))  # cls decoded to int
    assert got[0][3] == f"text of {shards.keys[1][0]}"


def test_stdout_dash_in_a_subprocess(tmp_path):
    out = subprocess.run([sys.executable, "-c", WRITE_STDOUT], capture_output=True, check=True)
    path = tmp_path / "from-stdout.tar"
    path.write_bytes(out.stdout)
    with tarfile.open(path) as tar:
        assert tar.getnames() == [f"k{i}.{f}" for i in range(5) for f in ("cls", "txt")]
    got = list(wds.WebDataset(str(path), shardshuffle=False).decode())
    assert [(s["__key__"], s["cls"], s["txt"]) for s in got] == [
        (f"k{i}", i, f"t{i}") for i in range(5)
    ]


def test_pipe_urls_through_webdataset(shards):
    url = f"pipe:cat {shards.paths[3]}"
    got = list(wds.WebDataset(url, shardshuffle=False).decode())
    assert [s["__key__"] for s in got] == shards.keys[3]
    assert [s["cls"] for s in got] == list(range(30, 40))
    assert {s["__url__"] for s in got} == {url}
    # brace expansion applies to the whole spec, pipes included (as in webdataset)
    spec = "pipe:cat " + shards.spec.replace("000003", "000001")
    assert fluent_keys(spec) == shards.all_keys[:20]


def test_pipe_output_with_tar_writer(tmp_path):
    target = tmp_path / "piped.tar"
    with wds.TarWriter(f"pipe:cat > {target}") as sink:
        for i in range(3):
            sink.write({"__key__": f"p{i}", "txt": f"piped {i}"})
    got = list(wds.WebDataset(str(target), shardshuffle=False).decode())
    assert [(s["__key__"], s["txt"]) for s in got] == [(f"p{i}", f"piped {i}") for i in range(3)]


def test_failing_pipe_writer_raises(tmp_path):
    with pytest.raises(wds.PipeError), wds.TarWriter("pipe:cat > /dev/null; exit 4") as sink:
        sink.write({"__key__": "x", "txt": "y"})


def test_rewrites_map_urls_to_local_files(shards):
    ds = wds.WebDataset(
        "gs://bucket/" + os.path.basename(shards.paths[0]),
        shardshuffle=False,
        rewrites=[("^gs://bucket/", os.path.dirname(shards.paths[0]) + "/")],
    )
    got = list(ds)
    assert [s["__key__"] for s in got] == shards.keys[0]
    assert got[0]["__url__"] == "gs://bucket/" + os.path.basename(shards.paths[0])


def test_missing_local_shard_is_shard_not_found(tmp_path):
    missing = str(tmp_path / "nope-000.tar")
    for url in (missing, "file://" + missing):
        with pytest.raises(wds.ShardNotFoundError) as e:
            list(wds.WebDataset(url, shardshuffle=False))
        assert isinstance(e.value, FileNotFoundError) and e.value.url == url
        assert url in str(e.value)
