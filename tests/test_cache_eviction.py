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
        index.touch(key, None, 10, when=float(i))
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


def test_hand_copied_files_count_against_the_budget(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path / "cache", cache_size=2500)
    urls = [f"s3://b/pre-{i}.tar" for i in range(3)]
    for age, url in zip([30, 20, 10], urls):
        path = Path(cache.local_path(url))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (time.time() - age, time.time() - age))
    cache.maintain()  # indexes them with their mtime as last use, then evicts the oldest
    assert [e.path for e in cache.entries()] == [cache.local_path(u) for u in urls[1:]]
    assert all(e.url is None for e in cache.entries())
