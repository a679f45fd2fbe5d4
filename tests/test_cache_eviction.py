"""LRU by bytes: order by use, budget kept after every publication, pinned shards spared."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from cloudwds.cache import ShardCache
from cloudwds.cache.eviction import evict_to_budget, lru_order
from cloudwds.cache.index import CacheIndex, IndexRecord


def make_remotes(tmp_path: Path, sizes: list[int]) -> list[tuple[str, Path]]:
    rng = random.Random(1)
    out = []
    for i, size in enumerate(sizes):
        path = tmp_path / "remote" / f"shard-{i:03d}.tar"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        out.append((f"gs://bucket/shard-{i:03d}.tar", path))
    return out


def read_through(cache: ShardCache, url: str, remote: Path) -> None:
    with cache.open(url, lambda: open(remote, "rb")) as f:
        assert f.read() == remote.read_bytes()
    cache.wait()


def on_disk(cache: ShardCache) -> dict[str, int]:
    return {e.url or e.path: e.size for e in cache.entries()}


def test_lru_order_is_by_last_use_then_key() -> None:
    recs = [
        IndexRecord("c", None, 1, 5.0),
        IndexRecord("a", None, 1, 9.0),
        IndexRecord("b", None, 1, 5.0),
    ]
    assert [r.key for r in lru_order(recs)] == ["b", "c", "a"]


def test_evict_to_budget_skips_busy_entries(tmp_path: Path) -> None:
    index = CacheIndex(str(tmp_path / "index"))
    for i, key in enumerate("abcd"):
        index.touch(key, None, 10, when=float(i), owner=(1, i))
    index.touch("user", None, 1000, when=-1.0)  # not the cache's: neither counted nor asked
    answers = {"a": "busy", "b": "removed", "c": "missing", "d": "removed"}
    asked = []

    def remove(record: IndexRecord) -> str:
        asked.append(record.key)
        return answers[record.key]

    gone = evict_to_budget(index, 20, remove)
    assert asked == ["a", "b", "c"]  # a is busy: skipped; b and c bring 40 down to 20
    assert [g.record.key for g in gone] == ["b"]
    index.close()


def test_eviction_follows_use_not_insertion(tmp_path: Path) -> None:
    (a, ra), (b, rb), (c, rc), (d, rd) = make_remotes(tmp_path, [1000, 1000, 1000, 1000])
    cache = ShardCache(tmp_path / "cache", cache_size=3000)
    for url, remote in [(a, ra), (b, rb), (c, rc)]:
        read_through(cache, url, remote)
    read_through(cache, a, ra)  # a hit: a is now the most recently used
    read_through(cache, d, rd)
    assert set(on_disk(cache)) == {a, c, d}  # b went: inserted after a, but used before it
    assert cache.stats()["evictions"] == 1


def test_budget_holds_after_every_publication(tmp_path: Path) -> None:
    rng = random.Random(7)
    remotes = make_remotes(tmp_path, [rng.randint(500, 1500) for _ in range(24)])
    budget = 4000
    cache = ShardCache(tmp_path / "cache", cache_size=budget)
    total_read = 0
    for url, remote in remotes + remotes[::3]:  # larger than the budget, with some re-reads
        read_through(cache, url, remote)
        total_read += remote.stat().st_size
        assert sum(on_disk(cache).values()) <= budget
    assert total_read > 5 * budget
    assert cache.stats()["evictions"] > 10
    indexed = sum(e.size for e in cache.entries())
    assert indexed == sum(os.path.getsize(e.path) for e in cache.entries())


def test_shard_open_for_reading_is_not_evicted(tmp_path: Path) -> None:
    remotes = make_remotes(tmp_path, [1000] * 5)
    cache = ShardCache(tmp_path / "cache", cache_size=2000)
    (a, ra), rest = remotes[0], remotes[1:]
    read_through(cache, a, ra)
    pinned = cache.open(a, lambda: open(ra, "rb"))  # a hit, held open
    for url, remote in rest[:3]:
        read_through(cache, url, remote)
    assert a in on_disk(cache)  # the least recently used, but being read
    assert sum(on_disk(cache).values()) <= 2000 + 1000  # over only by the pinned shard
    assert pinned.read() == ra.read_bytes()
    pinned.close()
    read_through(cache, *rest[3])
    assert a not in on_disk(cache)
    assert sum(on_disk(cache).values()) <= 2000


def put(root: Path, relpath: str, data: bytes, age: float = 0.0) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_files_the_cache_did_not_write_are_never_evicted(tmp_path: Path) -> None:
    # The case: D/notes.txt and D/photos/holiday.jpg exist, cache_size="15M", one 10 MB
    # shard is read: both files must survive, and the budget must still hold for the cache.
    root = tmp_path / "D"
    notes = put(root, "notes.txt", b"my notes" * 1000, age=3600)
    photo = put(root, "photos/holiday.jpg", random.Random(2).randbytes(6 << 20), age=3600)
    (url, remote), (url2, remote2) = make_remotes(tmp_path, [10 << 20, 8 << 20])
    cache = ShardCache(root, cache_size="15M")
    read_through(cache, url, remote)
    cache.maintain()  # a scan must not adopt or delete them either
    assert notes.read_bytes() == b"my notes" * 1000 and photo.stat().st_size == 6 << 20
    read_through(cache, url2, remote2)  # 18 MB of downloads: the first one is evicted
    assert notes.exists() and photo.exists()
    assert not cache.contains(url) and cache.contains(url2)
    assert cache.stats()["evictions"] == 1
    entries = {os.path.relpath(e.path, root): e.owned for e in cache.entries()}
    assert entries == {
        "notes.txt": False,
        "photos/holiday.jpg": False,
        "gs/bucket/shard-001.tar": True,
    }


def test_pre_populated_shards_are_served_never_evicted_and_not_counted(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path / "cache", cache_size=2500)
    pre = "s3://b/pre-0.tar"
    pre_path = put(Path(cache.cache_dir), "s3/b/pre-0.tar", b"p" * 5000, age=86400)
    with cache.open(pre, never_fetch) as f:  # a hit: no network, and now listed with its URL
        assert f.read() == b"p" * 5000
    remotes = make_remotes(tmp_path, [1000, 1000, 1000])
    for url, remote in remotes:
        read_through(cache, url, remote)
    # 5000 pre-populated bytes are the user's: the 2500-byte budget is for downloads only
    assert pre_path.read_bytes() == b"p" * 5000
    assert [url for url, _ in remotes if cache.contains(url)] == [remotes[1][0], remotes[2][0]]
    owned = {e.url: e.owned for e in cache.entries()}
    assert owned == {pre: False, remotes[1][0]: True, remotes[2][0]: True}


def test_a_cached_shard_replaced_by_hand_becomes_the_users(tmp_path: Path) -> None:
    (a, ra), (b, rb) = make_remotes(tmp_path, [1000, 1000])
    cache = ShardCache(tmp_path / "cache", cache_size=1500)
    read_through(cache, a, ra)
    path = Path(cache.local_path(a))
    replacement = path.with_name("mine")
    replacement.write_bytes(b"mine" * 250)
    os.replace(replacement, path)  # same path, another file: no longer the cache's
    read_through(cache, b, rb)  # over budget by a, but a is not the cache's to delete
    assert path.read_bytes() == b"mine" * 250 and cache.contains(b)
    assert cache.stats()["evictions"] == 0


def test_ownership_survives_the_process(tmp_path: Path) -> None:
    (a, ra), (b, rb) = make_remotes(tmp_path, [1000, 1000])
    first = ShardCache(tmp_path / "cache")
    read_through(first, a, ra)
    first.close()
    second = ShardCache(tmp_path / "cache", cache_size=1500)  # a new process would see the same
    read_through(second, b, rb)
    assert not second.contains(a) and second.contains(b)  # a was the cache's: evicted


def never_fetch():
    raise AssertionError("fetch() must not be called for a cached shard")


KILLED_CHILD = """
import os, sys
from cloudwds.cache import ShardCache
cache_dir, url, remote = sys.argv[1:]
f = ShardCache(cache_dir).open(url, lambda: open(remote, "rb"))
assert f.read() == open(remote, "rb").read()
os._exit(0)  # die at once: no close, no atexit, no index flush of any kind
"""


def test_ownership_survives_a_process_that_dies_right_after_publishing(tmp_path: Path) -> None:
    import subprocess
    import sys

    (a, ra), (b, rb) = make_remotes(tmp_path, [1000, 1000])
    cache_dir = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", KILLED_CHILD, cache_dir, a, str(ra)], timeout=60)
    assert done.returncode == 0
    cache = ShardCache(cache_dir, cache_size=1500)
    assert [e.owned for e in cache.entries()] == [True]  # recorded before it was renamed in
    read_through(cache, b, rb)
    assert not cache.contains(a) and cache.contains(b)
