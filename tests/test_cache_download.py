"""The miss path: atomic publish, streaming while caching, early close, failures, oversize."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cloudwds.cache import ShardCache
from cloudwds.errors import StorageError

URL = "s3://bucket/shards/shard-000.tar"


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class GatedStream:
    """Hands out ``first`` bytes, then blocks until ``gate`` is set: a remote that stalls."""

    def __init__(self, data: bytes, first: int, gate: threading.Event):
        self.data, self.first, self.gate, self.pos = data, first, gate, 0
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.first and not self.gate.wait(10):
            raise TimeoutError("gate never opened")
        end = len(self.data) if n < 0 else self.pos + n
        if self.pos < self.first:
            end = min(end, self.first)
        chunk = self.data[self.pos : end]
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        self.closed = True


class FailingStream:
    """Serves ``good`` bytes, then raises like a connection reset."""

    def __init__(self, data: bytes, good: int):
        self.data, self.good, self.pos = data, good, 0

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.good:
            raise ConnectionResetError("remote went away")
        chunk = self.data[self.pos : min(self.pos + n, self.good)]
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class SizedStream:
    """A stream that announces ``size`` (as fsspec files do) but may deliver fewer bytes."""

    def __init__(self, data: bytes, size: int):
        self.data, self.size, self.pos = data, size, 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class Counter:
    def __init__(self, make):
        self.make, self.calls = make, 0

    def __call__(self):
        self.calls += 1
        return self.make()


def leftovers(root: Path) -> list[str]:
    """Every file in the shard tree that is not bookkeeping (temp files included)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".cloudwds"]
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames]
    return sorted(out)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def read_in_thread(f, n: int, timeout: float = 5.0) -> bytes:
    box: list[bytes] = []
    t = threading.Thread(target=lambda: box.append(f.read(n)), daemon=True)
    t.start()
    t.join(timeout)
    assert box, f"read({n}) still blocked after {timeout} s"
    return box[0]


def test_miss_downloads_once_then_hits(tmp_path: Path) -> None:
    data = payload(700_000)
    remote = tmp_path / "remote.tar"
    remote.write_bytes(data)
    cache = ShardCache(tmp_path / "cache")
    fetch = Counter(lambda: open(remote, "rb"))
    with cache.open(URL, fetch) as f:
        assert f.read() == data
    assert cache.contains(URL)
    with cache.open(URL, fetch) as f:
        assert f.read() == data
    assert fetch.calls == 1
    stats = cache.stats()
    assert (stats["misses"], stats["hits"], stats["downloads"]) == (1, 1, 1)
    assert stats["bytes_downloaded"] == stats["bytes_served_from_cache"] == len(data)
    assert leftovers(tmp_path / "cache") == ["s3/bucket/shards/shard-000.tar"]
    cache.close()


def test_stream_failing_midway_publishes_nothing_and_raises(tmp_path: Path) -> None:
    data = payload(600_000)
    cache = ShardCache(tmp_path / "cache")
    f = cache.open(URL, lambda: FailingStream(data, good=300_000))
    got = b""
    with pytest.raises(ConnectionResetError, match="went away"):
        while chunk := f.read(65536):
            got += chunk
    f.close()
    cache.wait()
    assert got == data[: len(got)]  # what arrived before the error was right
    assert not cache.contains(URL)
    assert leftovers(tmp_path / "cache") == []  # no final file, no temp file
    assert cache.stats()["failed_downloads"] == 1
    # the lock was released: a later open downloads afresh
    with cache.open(URL, lambda: SizedStream(data, len(data))) as f:
        assert f.read() == data
    assert cache.contains(URL)


def test_stream_shorter_than_announced_is_an_error(tmp_path: Path) -> None:
    data = payload(100_000)
    cache = ShardCache(tmp_path / "cache")
    with (
        cache.open(URL, lambda: SizedStream(data, len(data) + 10)) as f,
        pytest.raises(StorageError) as info,
    ):
        f.read()
    assert info.value.url == URL and "100000 of 100010" in str(info.value)
    cache.wait()
    assert leftovers(tmp_path / "cache") == []


def test_fetch_error_propagates_from_open_and_releases_the_lock(tmp_path: Path) -> None:
    cache = ShardCache(tmp_path / "cache")

    def missing():
        raise FileNotFoundError("no such object")

    with pytest.raises(FileNotFoundError):
        cache.open(URL, missing)
    with cache.open(URL, lambda: SizedStream(b"abc", 3)) as f:  # would hang if the lock leaked
        assert f.read() == b"abc"


def test_first_bytes_arrive_before_the_source_is_exhausted(tmp_path: Path) -> None:
    data = payload(1_000_000)
    gate = threading.Event()
    cache = ShardCache(tmp_path / "cache")
    f = cache.open(URL, lambda: GatedStream(data, first=4096, gate=gate))
    assert read_in_thread(f, 4096) == data[:4096]  # the remote is stalled, yet we got bytes
    assert not cache.contains(URL)
    [temp] = leftovers(tmp_path / "cache")
    assert os.path.basename(temp).startswith(".shard-000.tar.") and temp.endswith(".part")
    gate.set()
    assert f.read() == data[4096:]
    assert cache.contains(URL)  # published by the time the reader sees EOF
    f.close()
    assert leftovers(tmp_path / "cache") == ["s3/bucket/shards/shard-000.tar"]
    cache.close()


def test_early_close_cancels_the_download_at_once(tmp_path: Path) -> None:
    data = payload(900_000)
    gate = threading.Event()
    cache = ShardCache(tmp_path / "cache")
    fetch = Counter(lambda: GatedStream(data, first=1000, gate=gate))
    f = cache.open(URL, fetch)
    assert read_in_thread(f, 10) == data[:10]
    assert len(leftovers(tmp_path / "cache")) == 1  # the temp file of the download
    f.close()  # the consumer stops early, while the remote is stalled
    assert leftovers(tmp_path / "cache") == []  # cancelled on the spot: temp file gone
    gate.set()  # the stalled read returns: the copy must notice and touch nothing
    wait_until(lambda: cache.stats()["cancelled"] == 1)  # counted when its thread is done
    assert leftovers(tmp_path / "cache") == []
    assert not cache.contains(URL)
    with cache.open(URL, fetch) as f:  # fetched again, fully, and now cached
        assert f.read() == data
    assert fetch.calls == 2 and cache.contains(URL)
    assert cache.stats()["cancelled"] == 1 and cache.stats()["downloads"] == 1


def test_second_open_in_the_same_process_reads_along(tmp_path: Path) -> None:
    data = payload(500_000)
    gate = threading.Event()
    cache = ShardCache(tmp_path / "cache")
    fetch = Counter(lambda: GatedStream(data, first=2000, gate=gate))
    a = cache.open(URL, fetch)
    b = cache.open(URL, fetch)  # must not deadlock on the shard lock held by a's download
    assert read_in_thread(b, 2000) == data[:2000]
    gate.set()
    assert a.read() == data and b.read() == data[2000:]
    a.close()
    b.close()
    assert fetch.calls == 1
    assert cache.stats()["misses"] == 2 and cache.stats()["downloads"] == 1


def test_shard_larger_than_the_budget_is_streamed_not_cached(tmp_path: Path) -> None:
    small, big = payload(1000, 1), payload(600_000, 2)
    cache = ShardCache(tmp_path / "cache", cache_size=100_000)
    with cache.open("s3://b/small.tar", lambda: SizedStream(small, len(small))) as f:
        assert f.read() == small
    with cache.open("s3://b/big.tar", lambda: SizedStream(big, len(big))) as f:
        assert f.read() == big
    cache.wait()
    assert not cache.contains("s3://b/big.tar")
    assert cache.contains("s3://b/small.tar")  # nothing was evicted for it
    assert leftovers(tmp_path / "cache") == ["s3/b/small.tar"]
    assert cache.stats()["uncached"] == 1 and cache.stats()["evictions"] == 0


def test_cache_that_cannot_hold_the_file_still_serves_it(tmp_path: Path, caplog) -> None:
    cache = ShardCache(tmp_path / "cache")
    os.makedirs(cache.local_path(URL))  # a directory squats the shard's path
    caplog.set_level(logging.WARNING, logger="cloudwds.cache")
    with cache.open(URL, lambda: SizedStream(b"xyz", 3)) as f:
        assert f.read() == b"xyz"
    assert "without caching" in caplog.text
    assert cache.stats()["uncached"] == 1


def test_threads_opening_together_share_one_download(tmp_path: Path) -> None:
    data = payload(300_000)
    gate = threading.Event()
    cache = ShardCache(tmp_path / "cache")

    def slow_fetch():  # the remote takes a while to answer, then stalls after the first chunk
        time.sleep(0.2)
        return GatedStream(data, first=1000, gate=gate)

    fetch = Counter(slow_fetch)
    results: list[bytes] = []
    started = threading.Semaphore(0)

    def consume():
        with cache.open(URL, fetch) as f:
            head = f.read(1000)
            started.release()
            results.append(head + f.read())

    threads = [threading.Thread(target=consume, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    # the remote stays stalled until all four have their first bytes: none may be waiting
    # on the shard lock behind a sibling, they must all read along with the one download
    assert all(started.acquire(timeout=5) for _ in threads)
    gate.set()
    for t in threads:
        t.join(10)
    assert results == [data] * 4
    assert fetch.calls == 1


# ---------------------------------------------------------------- a full disk degrades
@pytest.fixture
def small_fs(tmp_path: Path):
    """A real 1 MiB tmpfs (this suite runs as root in CI; mounting needs CAP_SYS_ADMIN)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:  # covered anyway by the RLIMIT_FSIZE test below
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def disk_full_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "cloudwds.cache" and r.levelno == logging.WARNING
    ]


def test_full_disk_streams_on_uncached_from_the_same_stream(small_fs: Path, caplog) -> None:
    data = payload(3 << 20)  # three times the file system
    cache = ShardCache(small_fs / "cache")
    fetch = Counter(lambda: SizedStream(data, len(data)))
    caplog.set_level(logging.WARNING, logger="cloudwds.cache")
    with cache.open(URL, fetch) as f:
        assert f.read() == data
    cache.wait()
    [warning] = disk_full_warnings(caplog)
    assert warning.startswith(f"no space left to cache {URL} (No space left on device)")
    assert fetch.calls == 1  # the reader took over the download's own stream
    assert leftovers(small_fs / "cache") == []  # the partial temp file is gone
    assert not cache.contains(URL)
    assert cache.stats()["uncached"] == 1 and cache.stats()["failed_downloads"] == 0
    small = payload(1000, 3)  # space is back (the temp file went): a small shard caches fine
    with cache.open("s3://bucket/small.tar", lambda: SizedStream(small, 1000)) as f:
        assert f.read() == small
    assert cache.contains("s3://bucket/small.tar")


def test_full_disk_with_two_readers_each_gets_every_byte(small_fs: Path, caplog) -> None:
    data = payload(2 << 20, 5)
    gate = threading.Event()
    cache = ShardCache(small_fs / "cache")
    fetch = Counter(lambda: GatedStream(data, first=300_000, gate=gate))
    a = cache.open(URL, fetch)
    b = cache.open(URL, fetch)  # reads along with a's download
    assert read_in_thread(a, 1000) == data[:1000]
    gate.set()
    assert a.read() == data[1000:]  # a reaches the end of the file first: takes the stream over
    assert b.read() == data  # b fetches its own copy and skips to where the file ended
    a.close()
    b.close()
    assert fetch.calls == 2
    assert leftovers(small_fs / "cache") == []


def test_disk_already_full_serves_uncached(small_fs: Path, caplog) -> None:
    filler = small_fs / "filler"
    with open(filler, "wb") as f, pytest.raises(OSError):  # fill the file system to the brim
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    data = payload(200_000, 4)
    caplog.set_level(logging.WARNING, logger="cloudwds.cache")
    cache = ShardCache(small_fs / "cache")
    with cache.open(URL, lambda: SizedStream(data, len(data))) as f:
        assert f.read() == data
    assert len(disk_full_warnings(caplog)) == 1 and URL in disk_full_warnings(caplog)[0]
    assert filler.exists()  # the user's file is never a candidate for making room


FSIZE_CHILD = """
import json, logging, resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # writes past 1 MiB: EFBIG
from cloudwds.cache import ShardCache
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
remote, cache_dir, url = sys.argv[1:]
cache = ShardCache(cache_dir)
with cache.open(url, lambda: open(remote, "rb")) as f:
    data = f.read()
cache.close()
print(json.dumps({"size": len(data), "same": data == open(remote, "rb").read(),
                  "stats": cache.stats()}))
"""


def test_file_size_limit_is_treated_like_a_full_disk(tmp_path: Path) -> None:
    """EFBIG from RLIMIT_FSIZE, in a child process: works without root or mount."""
    remote = tmp_path / "remote.tar"
    remote.write_bytes(payload(3 << 20, 6))
    cache_dir = tmp_path / "cache"
    child = subprocess.run(
        [sys.executable, "-c", FSIZE_CHILD, str(remote), str(cache_dir), URL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["size"] == 3 << 20 and result["same"]
    assert result["stats"]["uncached"] == 1 and result["stats"]["failed_downloads"] == 0
    assert child.stderr.count("no space left to cache") == 1
    assert f"no space left to cache {URL} (File too large)" in child.stderr
    assert leftovers(cache_dir) == []


def test_a_reader_that_stops_just_before_the_end_finishes_the_download_before_close_returns(
    tmp_path: Path,
) -> None:
    # A tar reader stops at the end-of-archive block, before the record padding: the shard is
    # worth keeping, and publishing it (with its eviction pass) must not outlive the close.
    data = payload(900_000, 8)
    gate = threading.Event()
    cache = ShardCache(tmp_path / "cache", cache_size=2_000_000)

    class HeldTail(SizedStream):  # the last 10 KiB are held until the gate opens
        def read(self, n: int = -1) -> bytes:
            cut = len(self.data) - 10_240
            if self.pos >= cut:
                assert gate.wait(10)
            elif n < 0 or self.pos + n > cut:
                n = cut - self.pos
            return super().read(n)

    f = cache.open(URL, lambda: HeldTail(data, len(data)))
    assert f.read(len(data) - 10_240) == data[:-10_240]
    closing = threading.Thread(target=f.close, daemon=True)
    closing.start()
    closing.join(0.5)
    assert closing.is_alive()  # the close waits for the tail, rather than cancel or leave it
    assert not cache.contains(URL)
    gate.set()
    closing.join(10)
    assert not closing.is_alive()
    assert cache.contains(URL)  # no wait(): the close itself saw the publication through
    assert Path(cache.local_path(URL)).read_bytes() == data
    assert cache.stats()["downloads"] == 1 and cache.stats()["cancelled"] == 0


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_cached_shards_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)  # pytest runs tests in one thread
    try:
        cache = ShardCache(tmp_path / "cache")
        data = payload(1000)
        with cache.open(URL, lambda: SizedStream(data, len(data))) as f:
            assert f.read() == data
        cache.wait()
    finally:
        os.umask(old)
    assert os.stat(cache.local_path(URL)).st_mode & 0o777 == 0o666 & ~umask
