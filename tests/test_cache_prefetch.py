"""prefetch(): background, bounded, deduplicated, and silent about its failures."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from cloudwds.cache import ShardCache
from cloudwds.cache.prefetch import Prefetcher

URL = "ais://bucket/shard-7.tar"


class GatedFile:
    """A local file whose first read waits for ``gate``: a download we can hold in flight."""

    def __init__(self, path: Path, gate: threading.Event):
        self.f = open(path, "rb")  # noqa: SIM115
        self.gate = gate

    def read(self, n: int = -1) -> bytes:
        assert self.gate.wait(10)
        return self.f.read(n)

    def close(self) -> None:
        self.f.close()


class Counter:
    def __init__(self, make):
        self.make, self.calls = make, 0

    def __call__(self):
        self.calls += 1
        return self.make()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "remote.tar"
    path.write_bytes(b"0123456789" * 50_000)
    return path


def test_prefetch_then_open_is_a_hit(tmp_path: Path, remote: Path) -> None:
    cache = ShardCache(tmp_path / "cache")
    fetch = Counter(lambda: open(remote, "rb"))
    cache.prefetch(URL, fetch)
    cache.wait()
    assert cache.contains(URL)
    with cache.open(URL, fetch) as f:
        assert f.read() == remote.read_bytes()
    assert fetch.calls == 1
    stats = cache.stats()
    assert (stats["prefetches"], stats["hits"], stats["misses"]) == (1, 1, 0)
    cache.close()


def test_prefetch_is_a_noop_when_cached_or_in_flight(tmp_path: Path, remote: Path) -> None:
    cache = ShardCache(tmp_path / "cache")
    gate = threading.Event()
    fetch = Counter(lambda: GatedFile(remote, gate))
    cache.prefetch(URL, fetch)
    cache.prefetch(URL, fetch)  # still queued or running
    f = cache.open(URL, fetch)  # reads along with the prefetch, or waits for it
    gate.set()
    assert f.read() == remote.read_bytes()
    f.close()
    cache.prefetch(URL, fetch)  # cached now
    cache.wait()
    assert fetch.calls == 1
    cache.close()


def test_prefetch_errors_are_logged_not_raised(tmp_path: Path, caplog) -> None:
    cache = ShardCache(tmp_path / "cache")
    caplog.set_level(logging.WARNING, logger="cloudwds.cache")

    def broken():
        raise ConnectionError("remote unreachable")

    cache.prefetch(URL, broken)  # must not raise
    cache.wait()
    assert "remote unreachable" in caplog.text
    assert not cache.contains(URL)
    with pytest.raises(ConnectionError):  # the consumer's own open raises properly
        cache.open(URL, broken)
    cache.close()


def test_prefetch_disabled_with_zero_workers(tmp_path: Path, remote: Path) -> None:
    cache = ShardCache(tmp_path / "cache", prefetch_workers=0)
    fetch = Counter(lambda: open(remote, "rb"))
    cache.prefetch(URL, fetch)
    cache.wait()
    assert fetch.calls == 0 and not cache.contains(URL)


def test_prefetcher_is_bounded_and_runs_each_key_once() -> None:
    gate = threading.Event()
    ran: list[str] = []
    pool = Prefetcher(workers=1, max_pending=2)

    def job(key: str):
        return lambda: (gate.wait(10), ran.append(key))

    assert pool.submit("a", job("a"))
    assert not pool.submit("a", job("a"))  # in flight
    assert pool.submit("b", job("b"))
    assert not pool.submit("c", job("c"))  # full
    gate.set()
    pool.wait()
    assert sorted(ran) == ["a", "b"]
    deadline = time.monotonic() + 5
    while pool.pending("b") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.submit("c", job("c"))
    pool.wait()
    assert sorted(ran) == ["a", "b", "c"]
    gate.clear()
    started = threading.Event()
    assert pool.submit("d", lambda: (started.set(), gate.wait(10), ran.append("d")))
    assert started.wait(5)  # "d" occupies the only worker
    assert pool.submit("e", job("e"))  # queued
    pool_shutdown = threading.Thread(target=pool.shutdown)
    pool_shutdown.start()  # drops "e", waits for "d"
    time.sleep(0.05)
    gate.set()
    pool_shutdown.join(5)
    assert sorted(ran) == ["a", "b", "c", "d"]


# ---------------------------------------------------------------- prefetch groups (one per run)
class HalfGatedFile:
    """Serves the first ``first`` bytes at once, then waits for ``gate``: a stalled transfer."""

    def __init__(self, path: Path, gate: threading.Event, first: int = 100_000):
        self.f = open(path, "rb")  # noqa: SIM115
        self.gate, self.first = gate, first

    def read(self, n: int = -1) -> bytes:
        if self.f.tell() >= self.first:
            assert self.gate.wait(10)
        return self.f.read(min(n, max(1, self.first - self.f.tell())) if n > 0 else n)

    def close(self) -> None:
        self.f.close()


def files_under(root: Path) -> dict[str, int]:
    """Every file of the shard tree (temp files included) with its size."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and ".cloudwds" not in p.parts
    }


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def test_closing_a_group_cancels_its_prefetches_and_nothing_touches_the_cache_later(
    tmp_path: Path, remote: Path
) -> None:
    from cloudwds.cache import PrefetchGroup

    gate = threading.Event()
    cache = ShardCache(tmp_path / "cache", prefetch_workers=1)
    running = Counter(lambda: HalfGatedFile(remote, gate))
    queued = Counter(lambda: open(remote, "rb"))
    group = PrefetchGroup()
    cache.prefetch("s3://b/running.tar", running, group)
    cache.prefetch("s3://b/queued.tar", queued, group)  # waits for the only worker
    wait_until(lambda: sum(files_under(tmp_path / "cache").values()) == 100_000)  # in flight
    group.close()  # the run ends
    assert files_under(tmp_path / "cache") == {}  # its temp file went at once
    gate.set()  # the stalled transfer goes on: its thread must not write, publish or evict
    wait_until(lambda: cache.stats()["cancelled"] == 1)  # counted as its thread finishes
    cache.wait()
    assert files_under(tmp_path / "cache") == {}
    assert (running.calls, queued.calls) == (1, 0)  # the queued one never ran
    assert cache.stats()["downloads"] == 0
    cache.prefetch("s3://b/late.tar", queued, group)  # a closed group starts nothing
    cache.wait()
    assert queued.calls == 0


def test_a_prefetch_being_read_outlives_its_group_until_the_reader_is_done(
    tmp_path: Path, remote: Path
) -> None:
    from cloudwds.cache import PrefetchGroup

    gate = threading.Event()
    cache = ShardCache(tmp_path / "cache")
    fetch = Counter(lambda: HalfGatedFile(remote, gate))
    with PrefetchGroup() as group:
        cache.prefetch(URL, fetch, group)
        wait_until(lambda: cache.stats()["bytes_downloaded"] == 0 and fetch.calls == 1)
        reader = cache.open(URL, never_fetch)  # reads along with the prefetch
    # the group is closed, but the shard is being read: the download goes on for the reader
    gate.set()
    assert reader.read() == remote.read_bytes()
    reader.close()
    cache.wait()
    assert cache.contains(URL) and fetch.calls == 1 and cache.stats()["downloads"] == 1


def never_fetch():
    raise AssertionError("fetch() must not be called: the prefetch is in flight")
