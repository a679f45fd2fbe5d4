"""Temp files: naming, and cleaning those left by crashed downloaders (at start-up, on a miss)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cloudwds.cache import ShardCache
from cloudwds.cache.layout import url_to_key
from cloudwds.cache.locks import ShardLock
from cloudwds.cache.tempfiles import STALE_AFTER, make_temp_path, parse_temp_name, temps_for

URL = "s3://bucket/x/shard.tar"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_named(final: str, pid: int, age: float = 0.0) -> str:
    """A temp file for ``final`` as if written by ``pid``, last modified ``age`` seconds ago."""
    made = make_temp_path(final)
    head, name = os.path.split(made)
    host_pid = name.split(".")[-3]
    host = host_pid.rsplit("-", 1)[0]
    path = os.path.join(head, name.replace(host_pid, f"{host}-{pid}"))
    os.makedirs(head, exist_ok=True)
    Path(path).write_bytes(b"partial")
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_temp_names_round_trip_and_stay_beside_the_final(tmp_path: Path) -> None:
    final = str(tmp_path / "d" / "shard-1.tar")
    temp = make_temp_path(final)
    assert os.path.dirname(temp) == os.path.dirname(final)
    name = os.path.basename(temp)
    assert name.startswith(".shard-1.tar.") and name.endswith(".part")
    parsed = parse_temp_name(name)
    assert parsed is not None and parsed.final_name == "shard-1.tar" and parsed.pid == os.getpid()
    assert make_temp_path(final) != temp
    assert parse_temp_name("shard-1.tar") is None and parse_temp_name(".DS_Store") is None
    os.makedirs(os.path.dirname(final))
    Path(temp).write_bytes(b"")
    Path(make_temp_path(str(tmp_path / "d" / "other.tar"))).write_bytes(b"")
    assert list(temps_for(final)) == [temp]


def test_startup_scan_removes_only_stale_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = ShardCache(root)
    final = cache.local_path(URL)
    dead = temp_named(final, dead_pid())
    old = temp_named(final, os.getppid(), age=STALE_AFTER + 60)
    live = temp_named(final, os.getppid())  # a live process, recently written: keep
    other = cache.local_path("s3://bucket/x/busy.tar")
    busy_old = temp_named(other, dead_pid(), age=STALE_AFTER + 60)
    lock = ShardLock(cache.layout.lock_path(url_to_key("s3://bucket/x/busy.tar")))
    lock.acquire()  # someone is downloading busy.tar right now: keep its temp, however old
    try:
        cache.entries()  # first use of this directory runs the start-up scan
    finally:
        lock.release()
    assert not os.path.exists(dead) and not os.path.exists(old)
    assert os.path.exists(live) and os.path.exists(busy_old)
    assert cache.entries() == []  # temp files are never shards


def test_miss_removes_stale_temps_of_that_shard(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path / "cache")
    cache.entries()  # start-up scan done on an empty directory
    final = cache.local_path(URL)
    mine = temp_named(final, os.getpid())  # an earlier process that had our pid (container pid 1)
    remote = tmp_path / "remote.tar"
    remote.write_bytes(b"shard bytes")
    with cache.open(URL, lambda: open(remote, "rb")) as f:
        assert f.read() == b"shard bytes"
    assert not os.path.exists(mine)
    assert list(temps_for(final)) == []
