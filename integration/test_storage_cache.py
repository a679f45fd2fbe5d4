"""The shard cache against real endpoints: offline epochs, hand-filled caches, one download per
shard across processes, the byte budget, and a first sample that does not wait for the download."""

from __future__ import annotations

import glob
import multiprocessing
import os
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
        ds.storage.cache.wait()
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
    else:  # the first block and one read-ahead block (sent together: either may arrive first)
        expect = ["bytes=0-1048575", f"bytes=1048576-{(9 << 20) - 1}"]
        assert sorted(r.range for r in reqs) == expect
    assert len(list(it)) == 159
