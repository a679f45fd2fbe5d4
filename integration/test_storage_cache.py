"""The shard cache against real endpoints: offline epochs, hand-filled caches, one download per
shard across processes, the byte budget, and a first sample that does not wait for the download."""

from __future__ import annotations

import glob
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

import cloudwds
from cloudwds.cache import ShardCache

from .servers import Endpoint
from .shards import make_shards
from .storage_support import (
    ALL,
    DIRECT,
    Backend,
    assert_same,
    clean_wds_env,  # noqa: F401 - fixture
    dir_bytes,
    expected_rows,
    make_backend,
    read_in_process,
    rows,
    use_mode,
)

pytestmark = pytest.mark.usefixtures("clean_wds_env")

SHARDS = make_shards(4, [6, 4, 5, 3], bin_size=4000, seed=31)


@pytest.fixture(params=ALL)
def backend(request: pytest.FixtureRequest) -> Backend:
    return make_backend(request, request.param)


@pytest.fixture(params=DIRECT)
def direct(request: pytest.FixtureRequest) -> Backend:
    return make_backend(request, request.param)


def test_second_epoch_is_served_from_the_cache_offline(backend: Backend, tmp_path: Path) -> None:
    base = backend.upload(SHARDS)
    urls = backend.urls(SHARDS, base)
    want = expected_rows(SHARDS, urls)
    ds = cloudwds.WebDataset(backend.pattern(SHARDS, base), cache_dir=tmp_path, **backend.kwargs)
    assert_same(rows(ds), want)
    cache = ds.storage.cache
    cache.wait()
    for name, url in zip(SHARDS.names, urls, strict=True):
        assert backend.get_count(f"{base}/{name}") == 1, name  # downloaded exactly once
        assert Path(cache.local_path(url)).read_bytes() == SHARDS.data[name]
    backend.reset_counts()
    before = cache.stats()
    with backend.server.offline():
        assert_same(rows(ds), want)  # epoch 2
    assert sum(backend.get_count(f"{base}/{n}") for n in SHARDS.names) == 0
    after = cache.stats()
    assert after["hits"] - before["hits"] == len(SHARDS.names)
    assert after["misses"] == before["misses"]


def test_hand_filled_cache_is_used_with_the_server_offline(direct: Backend, tmp_path: Path) -> None:
    base = direct.upload(SHARDS)
    urls = direct.urls(SHARDS, base)
    cache_dir = tmp_path / "cache"
    for name, url in zip(SHARDS.names, urls, strict=True):
        if direct.name == "s3":  # the documented layout: <cache>/s3/<bucket>/<key>
            target = cache_dir / "s3" / base / name
        else:
            target = Path(ShardCache(cache_dir).local_path(url))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(SHARDS.data[name])
    with direct.server.offline():
        ds = cloudwds.WebDataset(direct.pattern(SHARDS, base), cache_dir=cache_dir, **direct.kwargs)
        assert_same(rows(ds), expected_rows(SHARDS, urls))
    assert sum(direct.get_count(f"{base}/{n}") for n in SHARDS.names) == 0
    assert direct.server.get_count() == 0


def test_http_url_cache_layout_keeps_host_and_port(http_server: Endpoint, tmp_path: Path) -> None:
    backend = Backend("http", http_server)
    base = backend.upload(SHARDS)
    url = backend.urls(SHARDS, base)[0]
    port = http_server.endpoint.rsplit(":", 1)[1]
    ds = cloudwds.WebDataset(url, cache_dir=tmp_path)
    assert len(rows(ds)) == len(SHARDS.per_shard[SHARDS.names[0]])
    ds.storage.cache.wait()
    cached = tmp_path / "http" / f"127.0.0.1_{port}" / base / SHARDS.names[0]
    assert cached.read_bytes() == SHARDS.data[SHARDS.names[0]]


# --------------------------------------------------------------------------- many processes
def _one_download_gets(backend: Backend, tmp_path: Path) -> int:
    """GETs that one download of a shard of this size costs (measured, not assumed)."""
    probe = make_shards(1, SHARDS_MP.per_shard[SHARDS_MP.names[0]].__len__(), bin_size=BIN_MP)
    base = backend.upload(probe, prefix="probe")
    url = backend.urls(probe, base)[0]
    ds = cloudwds.WebDataset(url, cache_dir=tmp_path / "probe-cache", **backend.kwargs)
    assert len(rows(ds)) == len(probe.samples)
    ds.storage.cache.wait()
    n = backend.get_count(f"{base}/{probe.names[0]}")
    assert n >= 1
    return n


BIN_MP = 20_000
SHARDS_MP = make_shards(6, 8, bin_size=BIN_MP, seed=41)  # ~480 kB each: one 1 MiB first block


@pytest.mark.parametrize("name", ["s3", "gs"])
def test_four_processes_share_one_download_per_shard(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend = make_backend(request, name)
    per_download = _one_download_gets(backend, tmp_path)
    base = backend.upload(SHARDS_MP)
    pattern = backend.pattern(SHARDS_MP, base)
    cache_dir = str(tmp_path / "shared-cache")
    # Slow every data GET down so that the processes really contend for the same shards.
    backend.server.proxy.delay(0.2, method="GET", path_contains=backend.data_match)
    results = run_processes(4, pattern, backend.kwargs, cache_dir, workers=0)
    want = expected_rows(SHARDS_MP, backend.urls(SHARDS_MP, base))
    for got in results:
        assert_same(got, want)
    for n in SHARDS_MP.names:
        assert backend.get_count(f"{base}/{n}") == per_download, n


def test_two_processes_with_two_loader_workers_each(s3_server: Endpoint, tmp_path: Path) -> None:
    backend = Backend("s3", s3_server)
    base = backend.upload(SHARDS_MP)
    cache_dir = str(tmp_path / "shared-cache")
    backend.server.proxy.delay(0.2, method="GET")
    results = run_processes(
        2, backend.pattern(SHARDS_MP, base), backend.kwargs, cache_dir, workers=2
    )
    want = sorted(expected_rows(SHARDS_MP, backend.urls(SHARDS_MP, base)))
    for got in results:
        assert_same(sorted(got), want)
    for n in SHARDS_MP.names:
        assert backend.get_count(f"{base}/{n}") == 1, n  # < 1 MiB: one ranged GET
    on_disk = sorted(
        os.path.basename(p) for p in glob.glob(f"{cache_dir}/s3/**/*.tar", recursive=True)
    )
    assert on_disk == SHARDS_MP.names


def run_processes(
    n: int, pattern: str, kwargs: dict[str, Any], cache_dir: str, workers: int
) -> list[list[Any]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=read_in_process, args=(pattern, kwargs, cache_dir, workers, barrier, queue)
        )
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
    errors = [r for r in results if isinstance(r, str)]
    assert not errors, errors[0]
    assert [p.exitcode for p in procs] == [0] * n
    return results


# --------------------------------------------------------------------------- budget
def test_cache_stays_within_its_budget(s3_server: Endpoint, tmp_path: Path) -> None:
    backend = Backend("s3", s3_server)
    shards = make_shards(10, 5, bin_size=6000, seed=51)
    base = backend.upload(shards)
    sizes = {len(b) for b in shards.data.values()}
    assert len(sizes) == 1
    budget = 3 * sizes.pop()
    cache_dir = tmp_path / "cache"
    ds = cloudwds.WebDataset(
        backend.pattern(shards, base), cache_dir=cache_dir, cache_size=budget, **backend.kwargs
    )
    want = expected_rows(shards, backend.urls(shards, base))
    for _ in range(2):
        assert_same(rows(ds), want)
        right_after = _listing(cache_dir)  # nothing of the finished epoch runs any more:
        ds.storage.cache.wait()
        assert _listing(cache_dir) == right_after  # waiting changes nothing
        assert dir_bytes(cache_dir) <= budget
    stats = ds.storage.cache.stats()
    assert stats["evictions"] >= 10  # 20 downloads into room for 3
    assert 0 < len(ds.storage.cache.entries()) <= 3
    ds.storage.cache.close()
    assert dir_bytes(cache_dir) <= budget


# --------------------------------------------------------------------------- first sample
BIG_SHARD = make_shards(1, 160, bin_size=256 * 1024, seed=61)  # ~41 MiB, 160 samples


def _upload_big(backend: Backend) -> tuple[str, str, str]:
    """Upload BIG_SHARD; return its member name, the bucket prefix and its URL."""
    base = backend.upload(BIG_SHARD)
    return BIG_SHARD.names[0], base, backend.urls(BIG_SHARD, base)[0]


def test_first_sample_arrives_before_the_download_ends(
    s3_server: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 MiB shard, cached, ranged reads: the first sample is out once the 1 MiB block is in."""
    use_mode(monkeypatch, "ranged")
    backend = Backend("s3", s3_server)
    shards = BIG_SHARD
    name, base, url = _upload_big(backend)
    assert len(shards.data[name]) > 40 << 20
    proxy = s3_server.proxy
    # The first data GET to arrive goes through at once; later ones are held back for a while,
    # so what the reader had at the first sample is visible (no timing is asserted).
    proxy.delay(0.0, times=1, method="GET")
    proxy.delay(3.0, times=None, method="GET")
    ds = cloudwds.WebDataset(url, cache_dir=tmp_path, **backend.kwargs)
    cache = ds.storage.cache
    it = iter(ds)
    first = next(it)
    ranges = [r.range for r in s3_server.requests(f"{base}/{name}")]
    temps = glob.glob(str(tmp_path / "s3" / base / f".{name}.*.part"))
    published = cache.contains(url)
    temp_size = os.path.getsize(temps[0]) if temps else None
    proxy.reset_faults()
    assert first["__key__"] == "sample000000"
    assert first["bin"] == shards.per_shard[name][0].members["bin"]
    assert not published  # the download was still going on
    # Requested so far: the 1 MiB first block and the read-ahead (8 MiB blocks), of 41 MiB.
    first_block, ahead = "bytes=0-1048575", f"bytes=1048576-{(9 << 20) - 1}"
    assert first_block in ranges and len(ranges) <= 3
    assert set(ranges) <= {first_block, ahead, f"bytes={9 << 20}-{(17 << 20) - 1}"}
    assert temp_size is not None and 0 < temp_size <= 9 << 20
    if ranges[0] == first_block:  # it was the undelayed one: nothing past it was on disk
        # (the download's 256 KiB chunks are served as they land, so the first sample may
        # come before the whole first block is written)
        assert temp_size <= 1 << 20
    rest = list(it)
    assert_same(rows([first, *rest]), expected_rows(shards, [url]))
    cache.wait()
    assert Path(cache.local_path(url)).read_bytes() == shards.data[name]


def test_first_sample_arrives_while_the_streamed_download_is_held(
    s3_server: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamed GET, cached: with the response held after 2 MiB, the first sample still comes."""
    use_mode(monkeypatch, "streamed")
    backend = Backend("s3", s3_server)
    shards = BIG_SHARD
    name, base, url = _upload_big(backend)
    s3_server.proxy.stall_after(2 << 20, times=1, path_contains=name)
    try:
        ds = cloudwds.WebDataset(url, cache_dir=tmp_path, **backend.kwargs)
        cache = ds.storage.cache
        it = iter(ds)
        first = next(it)
        ranges = [r.range for r in s3_server.requests(f"{base}/{name}")]
        temps = glob.glob(str(tmp_path / "s3" / base / f".{name}.*.part"))
        published = cache.contains(url)
        temp_size = os.path.getsize(temps[0]) if temps else None
    finally:
        s3_server.proxy.release()
    assert first["__key__"] == "sample000000"
    assert first["bin"] == shards.per_shard[name][0].members["bin"]
    assert ranges == [None]  # one GET for the whole object
    assert not published
    assert temp_size is not None and 0 < temp_size <= 2 << 20  # only what the proxy let through
    rest = list(it)
    assert_same(rows([first, *rest]), expected_rows(shards, [url]))
    cache.wait()
    assert Path(cache.local_path(url)).read_bytes() == shards.data[name]
    assert [r.range for r in s3_server.requests(f"{base}/{name}")] == [None]  # never re-read


@pytest.mark.parametrize("mode", ["ranged", "streamed"])
def test_first_sample_without_cache_requests_only_the_read_ahead(
    s3_server: Endpoint, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_mode(monkeypatch, mode)
    backend = Backend("s3", s3_server)
    name, base, url = _upload_big(backend)
    it = iter(cloudwds.WebDataset(url, **backend.kwargs))
    first = next(it)
    reqs = s3_server.requests(f"{base}/{name}")
    assert first["__key__"] == "sample000000"
    if mode == "streamed":
        assert [r.range for r in reqs] == [None]  # one GET, read as the samples are consumed
    else:
        # The first block and the read-ahead window (READAHEAD = 2 blocks in flight): block 2
        # is requested with block 1, and block 3 as soon as the reader's 1 MiB buffered read
        # crosses into block 2 -- that request is sent by a pool thread, so whether it has
        # reached the server when we look is a race. Never more, of the 41 MiB object.
        first_block, ahead = "bytes=0-1048575", f"bytes=1048576-{(9 << 20) - 1}"
        third = f"bytes={9 << 20}-{(17 << 20) - 1}"
        ranges = sorted(r.range for r in reqs)
        assert ranges in ([first_block, ahead], [first_block, ahead, third])
    assert len(list(it)) == 159


# --------------------------------------------------------------------------- ownership
def test_the_cache_never_deletes_files_it_did_not_write(
    s3_server: Endpoint, tmp_path: Path
) -> None:
    """The issue's case: D/notes.txt and D/photos/holiday.jpg, cache_size="15M", 10 MB shards."""
    backend = Backend("s3", s3_server)
    shards = make_shards(2, 40, bin_size=250_000, seed=71)  # two ~10 MB shards
    base = backend.upload(shards)
    root = tmp_path / "D"
    (root / "photos").mkdir(parents=True)
    (root / "notes.txt").write_text("my notes")
    (root / "photos" / "holiday.jpg").write_bytes(b"\xff\xd8" * 1000)
    pre_url = backend.url(f"{base}/pre-populated.tar")  # a shard the user put in by hand
    pre_path = Path(ShardCache(root).local_path(pre_url))
    pre_path.parent.mkdir(parents=True, exist_ok=True)
    pre_path.write_bytes(shards.data[shards.names[0]])
    ds = cloudwds.WebDataset(
        [*backend.urls(shards, base), pre_url],
        cache_dir=root,
        cache_size="15M",
        prefetch=0,  # one shard at a time: the eviction count is exact
        shardshuffle=False,
        **backend.kwargs,
    )
    got = rows(ds)
    assert len(got) == 120
    cache = ds.storage.cache
    assert (root / "notes.txt").read_text() == "my notes"
    assert (root / "photos" / "holiday.jpg").read_bytes() == b"\xff\xd8" * 1000
    assert pre_path.read_bytes() == shards.data[shards.names[0]]
    assert cache.stats()["evictions"] == 1  # 20 MB downloaded into 15M: the first went
    owned = sorted(os.path.basename(e.path) for e in cache.entries() if e.owned)
    assert owned == [shards.names[1]]
    cache.clear()
    assert (root / "notes.txt").exists() and (root / "photos" / "holiday.jpg").exists()
    assert pre_path.exists() and [e.owned for e in cache.entries()] == [False] * 3


# --------------------------------------------------------------------------- disk full
@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A real 4 MiB tmpfs (CI runs as root; covered without root by the RLIMIT_FSIZE unit test)."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.parametrize("name", ["http", "s3"])
def test_full_disk_reads_the_whole_shard_uncached(
    name: str, request: pytest.FixtureRequest, small_tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: a 10 MB shard of 103 samples, a cache that fills up after ~3/4 of it."""
    import logging

    backend = make_backend(request, name)
    shards = make_shards(1, 103, bin_size=100_000, seed=81)
    base = backend.upload(shards)
    url = backend.urls(shards, base)[0]
    caplog.set_level(logging.WARNING, logger="cloudwds.cache")
    ds = cloudwds.WebDataset(url, cache_dir=small_tmpfs, **backend.kwargs)
    assert_same(rows(ds), expected_rows(shards, [url]))  # all 103 samples, the same bytes
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"no space left to cache {url} (")
    ds.storage.cache.wait()
    assert not ds.storage.cache.contains(url)
    assert glob.glob(str(small_tmpfs / "**" / "*.part"), recursive=True) == []
    # one GET: the reader carried on with the download's own stream, from the same byte
    assert backend.get_count(f"{base}/{shards.names[0]}") == 1
    assert ds.storage.cache.stats()["uncached"] == 1


# --------------------------------------------------------------------------- end of a run
def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file of the shard tree, temp files included: size and mtime."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and ".cloudwds" not in p.parts:
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def test_nothing_of_a_closed_iteration_touches_the_cache_later(
    s3_server: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_mode(monkeypatch, "streamed")
    backend = Backend("s3", s3_server)
    shards = make_shards(3, 8, bin_size=200_000, seed=91)  # ~1.6 MB each
    base = backend.upload(shards)
    # The prefetch of the second shard is held after 300 kB: a download visibly in progress.
    s3_server.proxy.stall_after(300_000, times=1, path_contains=shards.names[1])
    ds = cloudwds.WebDataset(
        backend.pattern(shards, base), cache_dir=tmp_path, cache_size=2 << 20, **backend.kwargs
    )
    cache = ds.storage.cache
    try:
        it = iter(ds)
        first = next(it)
        assert first["__key__"] == "sample000000"
        temp = f".{shards.names[1]}."
        deadline = 600  # polls of 10 ms: the prefetch's temp file holds the bytes let through
        while not any(temp in k and v[0] > 0 for k, v in _listing(tmp_path).items()):
            deadline -= 1
            assert deadline > 0, "the prefetch never started"
            time.sleep(0.01)
        it.close()  # the run ends while its prefetch is stalled
        after_close = _listing(tmp_path)
        assert not any(temp in k for k in after_close)  # its temp file went at once
    finally:
        s3_server.proxy.release()
    # The stalled transfer now completes on the wire; nothing of the closed run may write,
    # publish or evict: wait until its thread has given up (it counts itself as cancelled).
    deadline = 1000
    while cache.stats()["cancelled"] < 1:
        deadline -= 1
        assert deadline > 0, "the cancelled download never finished"
        time.sleep(0.01)
    cache.wait()
    assert _listing(tmp_path) == after_close
    assert not cache.contains(backend.urls(shards, base)[1])
