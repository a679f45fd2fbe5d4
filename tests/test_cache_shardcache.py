"""ShardCache as a whole: pre-populated hits, logs, pickling, clear, and many real processes."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import pickle
import random
import threading
import time
from pathlib import Path

import pytest

from cloudwds.cache import CacheEntry, ShardCache

CONTRACT_STATS = {
    "hits",
    "misses",
    "downloads",
    "evictions",
    "bytes_downloaded",
    "bytes_served_from_cache",
}


class CountingFetch:
    """Picklable fetch: opens a local "remote" file, slowly, and logs each call to a file.

    The log is shared by every process (``O_APPEND`` writes of one short line are atomic), so
    the test can count fetches across processes. Reads are slowed a little to widen races.
    """

    def __init__(self, url: str, remote: str, log: str, delay: float = 0.0):
        self.url, self.remote, self.log, self.delay = url, remote, log, delay

    def __call__(self) -> SlowFile:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{self.url}\n".encode())
        finally:
            os.close(fd)
        return SlowFile(self.remote, self.delay)

    @staticmethod
    def calls(log: str) -> list[str]:
        return Path(log).read_text().split() if os.path.exists(log) else []


class SlowFile:
    def __init__(self, path: str, delay: float):
        self.f = open(path, "rb")  # noqa: SIM115
        self.delay = delay

    def read(self, n: int = -1) -> bytes:
        if self.delay:
            time.sleep(self.delay)
        return self.f.read(min(n, 16384) if n > 0 else n)

    def close(self) -> None:
        self.f.close()


def never_fetch():
    raise AssertionError("fetch() must not be called for a cached shard")


def make_shards(tmp_path: Path, n: int, size: int) -> dict[str, str]:
    rng = random.Random(n)
    remote = tmp_path / "remote"
    remote.mkdir(exist_ok=True)
    out = {}
    for i in range(n):
        path = remote / f"train-{i:04d}.tar"
        path.write_bytes(rng.randbytes(size + i * 977))
        out[f"s3://bucket/train/train-{i:04d}.tar"] = str(path)
    return out


def test_hand_copied_file_is_a_hit_without_fetch(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path / "cache")
    url = "gs://bucket/pre/shard-000.tar"
    path = Path(cache.local_path(url))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"copied by hand")
    assert cache.contains(url)
    with cache.open(url, never_fetch) as f:
        assert f.read() == b"copied by hand"
    [entry] = cache.entries()
    assert entry == CacheEntry(path=str(path), url=url, size=14, last_used=entry.last_used)
    assert time.time() - entry.last_used < 60
    assert cache.stats()["hits"] == 1 and cache.stats()["bytes_served_from_cache"] == 14


def test_stats_have_the_contract_keys(tmp_path: Path) -> None:
    assert set(ShardCache(tmp_path).stats()) >= CONTRACT_STATS


def test_verbose_logs_hits_misses_downloads_and_evictions(tmp_path: Path, caplog) -> None:
    shards = make_shards(tmp_path, 3, 1000)  # 1000, 1977 and 2954 bytes
    urls = sorted(shards)
    cache = ShardCache(tmp_path / "cache", cache_size=5000, verbose=True)
    caplog.set_level(logging.INFO, logger="cloudwds.cache")
    for url in [urls[0], urls[1], urls[2], urls[2]]:
        with cache.open(url, lambda url=url: open(shards[url], "rb")) as f:
            f.read()
    records = [r for r in caplog.records if r.name == "cloudwds.cache"]
    assert {r.levelno for r in records} == {logging.INFO}
    messages = [r.getMessage() for r in records]
    assert messages[0] == f"miss {urls[0]}: downloading"
    assert messages[1].startswith(f"downloaded {urls[0]}: 1000 bytes in ")
    assert any(m.startswith(f"evicted {urls[0]} (1000 B, last used ") for m in messages)
    assert messages[-1] == f"hit {urls[2]} (2.9 KiB)"


def test_quiet_cache_logs_nothing_at_info(tmp_path: Path, caplog) -> None:
    shards = make_shards(tmp_path, 1, 100)
    cache = ShardCache(tmp_path / "cache")
    caplog.set_level(logging.INFO, logger="cloudwds.cache")
    url, remote = next(iter(shards.items()))
    for _ in range(2):
        with cache.open(url, lambda: open(remote, "rb")) as f:
            f.read()
    assert [r for r in caplog.records if r.name == "cloudwds.cache"] == []


def test_pickle_round_trip_after_use(tmp_path: Path) -> None:
    shards = make_shards(tmp_path, 2, 5000)
    (u0, r0), (u1, r1) = shards.items()
    cache = ShardCache(tmp_path / "cache", cache_size="1M", verbose=True, prefetch_workers=3)
    with cache.open(u0, lambda: open(r0, "rb")) as f:
        f.read()
    cache.prefetch(u1, lambda: open(r1, "rb"))  # a live pool and index must not break pickling
    clone = pickle.loads(pickle.dumps(cache))
    assert (clone.cache_dir, clone.cache_size, clone.verbose, clone.prefetch_workers) == (
        cache.cache_dir,
        1 << 20,
        True,
        3,
    )
    with clone.open(u0, never_fetch) as f:
        assert f.read() == Path(r0).read_bytes()
    assert clone.stats()["hits"] == 1 and clone.stats()["misses"] == 0  # per-process counters
    cache.close()
    clone.close()


def test_clear_removes_the_caches_own_files_not_being_read(tmp_path: Path) -> None:
    shards = make_shards(tmp_path, 3, 100)
    cache = ShardCache(tmp_path / "cache")
    for url, remote in shards.items():
        with cache.open(url, lambda remote=remote: open(remote, "rb")) as f:
            f.read()
    mine = tmp_path / "cache" / "notes.txt"
    mine.write_text("keep me")
    pre = Path(cache.local_path("s3://bucket/pre.tar"))
    pre.write_bytes(b"pre-populated")
    first = next(iter(shards))
    held = cache.open(first, never_fetch)
    assert cache.clear() == 2
    assert sorted(e.url or e.path for e in cache.entries()) == sorted([first, str(mine), str(pre)])
    held.close()
    assert cache.clear() == 1
    assert sorted(e.path for e in cache.entries()) == sorted([str(mine), str(pre)])
    assert mine.read_text() == "keep me" and pre.read_bytes() == b"pre-populated"
    assert cache.clear(everything=True) == 2  # explicitly: every file, bookkeeping kept
    assert cache.entries() == []
    assert os.path.isdir(tmp_path / "cache" / ".cloudwds" / "index")


def test_stale_temp_cleanup_removes_only_the_caches_temp_pattern(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path / "cache")
    shard_dir = Path(cache.local_path("s3://bucket/x.tar")).parent
    shard_dir.mkdir(parents=True)
    dead = 2**22 + 12345  # above any pid_max: surely not running
    ours = shard_dir / f".x.tar.{socket_host()}-{dead}.0123abcd.part"
    theirs = [
        shard_dir / ".x.tar.part",
        shard_dir / f".x.tar.{socket_host()}-{dead}.part",
        shard_dir / ".notes.swp",
        tmp_path / "cache" / ".bashrc",
    ]
    for path in [ours, *theirs]:
        path.write_bytes(b"t")
    cache.maintain()
    assert not ours.exists()
    assert all(p.exists() for p in theirs)


def socket_host() -> str:
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"


def _consume(
    cache: ShardCache, fetches: dict[str, CountingFetch], order: list[str], barrier, results
) -> None:
    barrier.wait(30)
    digests = {}
    for i, url in enumerate(order):
        if i + 1 < len(order):
            cache.prefetch(order[i + 1], fetches[order[i + 1]])
        h = hashlib.sha256()
        with cache.open(url, fetches[url]) as f:
            while chunk := f.read(10_000):
                h.update(chunk)
        digests[url] = h.hexdigest()
    cache.close()
    results.put((os.getpid(), digests, cache.stats()))


def test_four_processes_fetch_each_shard_exactly_once(tmp_path: Path) -> None:
    shards = make_shards(tmp_path, 8, 150_000)
    log = str(tmp_path / "fetches.log")
    fetches = {url: CountingFetch(url, remote, log, delay=0.001) for url, remote in shards.items()}
    cache = ShardCache(tmp_path / "cache", prefetch_workers=1)
    urls = sorted(shards)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_consume, args=(cache, fetches, urls[k:] + urls[:k], barrier, results))
        for k in (0, 0, 3, 5)  # two start on the same shard, two elsewhere
    ]
    for p in procs:
        p.start()
    outputs = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    expected = {url: hashlib.sha256(Path(r).read_bytes()).hexdigest() for url, r in shards.items()}
    for _, digests, _ in outputs:
        assert digests == expected  # every process read identical, correct bytes
    calls = CountingFetch.calls(log)
    assert sorted(calls) == urls  # each shard fetched exactly once, across all processes
    assert sum(stats["downloads"] for *_, stats in outputs) == 8
    assert not [p for p in Path(tmp_path / "cache").rglob(".*.part")]


def _open_in_child(cache: ShardCache, url: str, remote: str, out) -> None:
    with cache.open(url, lambda: open(remote, "rb")) as f:
        out.put(hashlib.sha256(f.read()).hexdigest())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_during_a_download_does_not_leak_the_shard_lock(tmp_path: Path) -> None:
    shards = make_shards(tmp_path, 1, 400_000)
    [(url, remote)] = shards.items()
    data = Path(remote).read_bytes()
    gate = threading.Event()

    class Stalling:
        def __init__(self):
            self.f = open(remote, "rb")  # noqa: SIM115

        def read(self, n: int) -> bytes:
            if self.f.tell() > 0:
                assert gate.wait(10)
            return self.f.read(min(n, 1000))

        def close(self) -> None:
            self.f.close()

    cache = ShardCache(tmp_path / "cache")
    f = cache.open(url, Stalling)  # our download thread holds the shard lock
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_open_in_child, args=(cache, url, remote, out), daemon=True)
    child.start()  # inherits the lock's descriptor; must not keep the shard locked
    time.sleep(0.2)
    gate.set()
    assert f.read() == data
    f.close()
    assert out.get(timeout=20) == hashlib.sha256(data).hexdigest()
    child.join(10)
    assert child.exitcode == 0


def test_cli_cache_clear_keeps_user_files_unless_all(tmp_path: Path, capsys) -> None:
    from cloudwds.cli import main

    shards = make_shards(tmp_path, 2, 1000)
    root = tmp_path / "D"
    cache = ShardCache(root)
    for url, remote in shards.items():
        with cache.open(url, lambda remote=remote: open(remote, "rb")) as f:
            f.read()
    cache.close()
    (root / "notes.txt").write_text("notes")
    (root / "photos").mkdir()
    (root / "photos" / "holiday.jpg").write_bytes(b"jpeg")
    assert main(["--cache-dir", str(root), "cache", "ls"]) == 0
    listed = capsys.readouterr().out.splitlines()
    kept = [line for line in listed if line.endswith("(not downloaded by the cache: kept)")]
    assert len(listed) == 4 and len(kept) == 2
    assert main(["--cache-dir", str(root), "cache", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["downloaded_shards"], stats["other_files"], stats["other_bytes"]) == (2, 2, 9)
    assert main(["--cache-dir", str(root), "cache", "clear"]) == 0
    err = capsys.readouterr().err
    assert "removed 2 shards" in err and "2 files the cache did not download were kept" in err
    assert (root / "notes.txt").read_text() == "notes"
    assert (root / "photos" / "holiday.jpg").read_bytes() == b"jpeg"
    assert main(["--cache-dir", str(root), "cache", "clear", "--all"]) == 0
    assert "removed 2 shards" in capsys.readouterr().err
    assert not (root / "notes.txt").exists() and not (root / "photos" / "holiday.jpg").exists()


def test_symlinked_pre_populated_shard_is_the_users(tmp_path: Path) -> None:
    shards = make_shards(tmp_path, 2, 3000)
    (u0, r0), (u1, r1) = shards.items()
    cache = ShardCache(tmp_path / "cache", cache_size=1000)  # smaller than any shard here
    link = Path(cache.local_path(u0))
    link.parent.mkdir(parents=True)
    link.symlink_to(r0)  # pre-populated by linking to a shared copy
    with cache.open(u0, never_fetch) as f:
        assert f.read() == Path(r0).read_bytes()
    with cache.open(u1, lambda: open(r1, "rb")) as f:  # larger than the budget: streamed
        f.read()
    cache.maintain()
    [entry] = cache.entries()
    assert (entry.path, entry.url, entry.size, entry.owned) == (str(link), u0, 3000, False)
    assert cache.clear() == 0 and link.is_symlink()
    assert cache.clear(everything=True) == 1
    assert not link.exists() and not link.is_symlink()
    assert Path(r0).read_bytes()  # the target is untouched
