"""Faults on the wire: a cut connection or a 503 burst is resumed exactly; exhausted retries and
broken objects raise typed errors naming the URL (and the member)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import cloudwds
from cloudwds.stats import COUNTERS

from .fault_proxy import FaultProxy
from .servers import Endpoint
from .shards import make_shards, make_tar
from .storage_support import (
    DIRECT,
    MODES,
    Backend,
    assert_same,
    clean_wds_env,  # noqa: F401 - fixture
    expected_rows,
    make_backend,
    rows,
    streams,
    use_mode,
)

pytestmark = pytest.mark.usefixtures("clean_wds_env")

# Two shards of ~6 MiB: a 1 MiB first block, then a ~5 MiB block; a 600 kB cut lands inside
# whichever block is requested first.
BIG = make_shards(2, 24, bin_size=250_000, seed=21)
CUT_AT = 600_000


@pytest.fixture(params=DIRECT)
def backend(request: pytest.FixtureRequest) -> Backend:
    return make_backend(request, request.param)


def _data_requests(server: Endpoint, base: str, name: str) -> list[Any]:
    return server.requests(f"{base}/{name}")


def _assert_resumed(reqs: list[Any], fault: str, times: int) -> None:
    """Each faulted range was asked again later, and every range was served once unfaulted."""
    faulted = [r.range for r in reqs if r.injected == fault]
    assert len(faulted) == times, [(r.range, r.injected) for r in reqs]
    ok = Counter(r.range for r in reqs if r.injected is None)
    for rng in faulted:
        assert ok[rng] >= 1, f"range {rng} was never fetched again after the fault"


def _assert_stream_resumed(reqs: list[Any], times: int) -> None:
    """Streamed reads: every cut GET was followed by one resuming at a later byte offset."""
    assert [r.injected for r in reqs].count("cut") == times, [(r.range, r.injected) for r in reqs]
    starts = [0 if r.range is None else int(r.range.split("=")[1].split("-")[0]) for r in reqs]
    per_shard = [i for i, r in enumerate(reqs) if r.range is None]  # one GET opens each shard
    assert len(per_shard) == len(BIG.names)
    for i, r in enumerate(reqs):
        if r.injected == "cut":
            nxt = reqs[i + 1]
            assert nxt.range is not None and nxt.range.endswith("-"), nxt.range  # open-ended
            assert starts[i + 1] > starts[i]  # resumed where the cut left it, not from 0


@pytest.mark.parametrize("mode", MODES)
def test_cut_connections_are_resumed_exactly(
    backend: Backend, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_mode(monkeypatch, mode)
    base = backend.upload(BIG)
    urls = backend.urls(BIG, base)
    backend.server.proxy.cut_after(CUT_AT, times=3, path_contains=backend.data_match)
    got = rows(cloudwds.WebDataset(backend.pattern(BIG, base), **backend.kwargs))
    assert_same(got, expected_rows(BIG, urls))  # no missing, no duplicate sample; same bytes
    reqs = [r for n in BIG.names for r in _data_requests(backend.server, base, n)]
    if streams(backend.name, mode):
        _assert_stream_resumed(reqs, 3)
    else:
        _assert_resumed(reqs, "cut", 3)


def test_503_burst_is_retried(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    shards = make_shards(3, 4, bin_size=3000, seed=2)
    base = backend.upload(shards)
    burst = 2
    if backend.name == "az":
        # The Azure SDK sleeps 15 s before its own first retry; a short per-attempt timeout
        # lets the storage layer's retry (from the same offset) take over instead.
        monkeypatch.setenv("WDS_TIMEOUT", "2")
    backend.server.proxy.fail_503(times=burst, method="GET")
    got = rows(cloudwds.WebDataset(backend.pattern(shards, base), **backend.kwargs))
    assert_same(got, expected_rows(shards, backend.urls(shards, base)))
    injected = [r for r in backend.server.proxy.requests if r.injected == "503"]
    assert len(injected) == burst


@pytest.mark.parametrize("provider", ["gs", "s3"])
def test_ais_route_resumes_after_a_cut(
    provider: str,
    request: pytest.FixtureRequest,
    fault_proxy: Callable[[Any], FaultProxy],
) -> None:
    """A cut between reader and AIS gateway (a proxy in front of the gateway) is resumed."""
    backend = make_backend(request, f"ais-{provider}")
    assert backend.gateway is not None
    base = backend.upload(BIG)
    front = fault_proxy(backend.gateway)
    front.cut_after(CUT_AT, times=2)
    ds = cloudwds.WebDataset(
        backend.pattern(BIG, base), ais_endpoint=front.endpoint, use_ais_for=provider
    )
    assert_same(rows(ds), expected_rows(BIG, backend.urls(BIG, base)))
    cut = [r for r in front.requests if r.injected == "cut"]
    assert len(cut) == 2 and all("/v1/objects/" in r.target for r in cut)
    assert backend.gateway.get_count() > len(cut)


def test_cut_during_a_cache_download_caches_the_exact_object(
    s3_server: Endpoint, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    backend = make_backend(request, "s3")
    base = backend.upload(BIG)
    s3_server.proxy.cut_after(CUT_AT, times=2)
    ds = cloudwds.WebDataset(backend.pattern(BIG, base), cache_dir=tmp_path, **backend.kwargs)
    assert_same(rows(ds), expected_rows(BIG, backend.urls(BIG, base)))
    ds.storage.cache.close()
    for name, url in zip(BIG.names, backend.urls(BIG, base), strict=True):
        with open(ds.storage.cache.local_path(url), "rb") as f:
            assert f.read() == BIG.data[name]


@pytest.mark.parametrize("how", ["offline", "503"])
def test_retries_exhausted_raise_storage_error_naming_the_url(
    backend: Backend, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # WDS_TIMEOUT bounds each attempt, including the cloud SDK's own inner retries.
    monkeypatch.setenv("WDS_RETRIES", "1")
    monkeypatch.setenv("WDS_TIMEOUT", "1")
    shards = make_shards(1, 3, bin_size=100)
    base = backend.upload(shards)
    url = backend.urls(shards, base)[0]
    ds = cloudwds.WebDataset(url, **backend.kwargs)
    t0 = time.monotonic()
    if how == "offline":
        with backend.server.offline(), pytest.raises(cloudwds.StorageError) as e:
            list(ds)
    else:
        backend.server.proxy.fail_503(times=None)
        with pytest.raises(cloudwds.StorageError) as e:
            list(ds)
    elapsed = time.monotonic() - t0
    assert e.value.url == url
    assert url in str(e.value)
    assert "after 1 retries" in str(e.value)
    assert elapsed < 30, f"gave up only after {elapsed:.1f} s"


def test_http_503_on_open_is_retried_not_reported_missing(http_server: Endpoint) -> None:
    """fsspec's HTTP size lookup reports any failure as FileNotFoundError; a 503 is retried."""
    shards = make_shards(1, 3, bin_size=100)
    backend = Backend("http", http_server)
    base = backend.upload(shards)
    url = backend.urls(shards, base)[0]
    http_server.proxy.fail_503(times=2)  # the HEAD, then fsspec's GET fallback
    got = rows(cloudwds.WebDataset(url))
    assert_same(got, expected_rows(shards, [url]))
    assert [r.injected for r in http_server.proxy.requests][:2] == ["503", "503"]


def test_truncated_object_names_url_and_member(backend: Backend) -> None:
    shards = make_shards(1, 4, bin_size=3000, seed=9)
    data = shards.data[shards.names[0]]
    # Cut inside sample000002.bin's data: 2 whole samples, then txt, cls and half a bin.
    cut = data.index(b"sample000002.bin") + 512 + 1500
    base = f"{backend.server.new_bucket()}/cut"
    backend.server.write(f"{base}/shard-000000.tar", data[:cut])
    url = backend.url(f"{base}/shard-000000.tar")
    got: list[dict[str, Any]] = []
    with pytest.raises(cloudwds.TruncatedShardError) as e:
        for sample in cloudwds.WebDataset(url, **backend.kwargs):
            got.append(sample)
    assert e.value.url == url
    assert e.value.member == "sample000002.bin"
    assert [s["__key__"] for s in got] == ["sample000000", "sample000001"]
    assert_same(rows(got), expected_rows(shards, [url])[:2])


def test_non_tar_object_is_a_tar_format_error(backend: Backend) -> None:
    base = f"{backend.server.new_bucket()}/junk"
    backend.server.write(f"{base}/shard-000000.tar", b"this is not a tar archive\n" * 200)
    url = backend.url(f"{base}/shard-000000.tar")
    with pytest.raises(cloudwds.TarFormatError) as e:
        list(cloudwds.WebDataset(url, **backend.kwargs))
    assert e.value.url == url
    assert make_tar([])[:512] == b"\0" * 512  # sanity: an empty tar starts with a zero block


# --------------------------------------------------------------------------- fail fast
# Errors no retry can fix come back after one attempt, typed and naming the URL. Attempts are
# counted at the server (the proxy's request log) with WDS_RETRIES=0 and =5: the same count
# means nothing was retried; the retry counter must not move either.
def _failed_read(
    url: str, kwargs: dict[str, Any], server: Endpoint, name: str
) -> tuple[Any, int, int]:
    server.proxy.reset()
    before = COUNTERS.snapshot().get("retries", 0)
    with pytest.raises(cloudwds.StorageError) as e:
        list(cloudwds.WebDataset(url, **kwargs))
    attempts = sum(1 for r in server.proxy.requests if name in r.target)
    return e.value, attempts, int(COUNTERS.snapshot().get("retries", 0) - before)


def _assert_fails_fast(
    url: str,
    kwargs: dict[str, Any],
    server: Endpoint,
    name: str,
    cls: type[BaseException],
    monkeypatch: pytest.MonkeyPatch,
) -> int:
    counts = []
    for retries in ("0", "5"):
        monkeypatch.setenv("WDS_RETRIES", retries)
        err, attempts, retried = _failed_read(url, kwargs, server, name)
        assert type(err) is cls, f"{type(err).__name__}: {err}"
        assert err.url == url and url in str(err)
        assert retried == 0
        counts.append(attempts)
    assert counts[0] == counts[1], f"attempts with 0 and 5 retries: {counts}"
    return counts[0]


@pytest.mark.parametrize("mode", MODES)
def test_missing_object_fails_fast(
    backend: Backend, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_mode(monkeypatch, mode)
    base = backend.upload(make_shards(1, 2, bin_size=100))
    url = backend.url(f"{base}/missing-000000.tar")
    n = _assert_fails_fast(
        url,
        backend.kwargs,
        backend.server,
        "missing-000000",
        cloudwds.ShardNotFoundError,
        monkeypatch,
    )
    assert n >= 1  # the server was asked, once per operation


@pytest.mark.parametrize("name", ["s3", "gs", "az"])
def test_missing_bucket_fails_fast(
    name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(request, name)
    url = backend.url("no-such-bucket-c11/shard-000000.tar")
    n = _assert_fails_fast(
        url,
        backend.kwargs,
        backend.server,
        "no-such-bucket-c11",
        cloudwds.ShardNotFoundError,
        monkeypatch,
    )
    assert n >= 1


def test_missing_credentials_fail_fast_without_a_request(
    s3_server: Endpoint, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = Backend("s3", s3_server)
    base = backend.upload(make_shards(1, 2, bin_size=100))
    url = backend.url(f"{base}/shard-000000.tar")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    kwargs = {"storage_options": {"endpoint_url": s3_server.endpoint}}  # no key, no secret
    n = _assert_fails_fast(
        url, kwargs, s3_server, "shard-000000", cloudwds.StorageAccessError, monkeypatch
    )
    assert n == 0  # botocore refuses to send an unsigned request: nothing reached the server


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "status, cls",
    [(403, "StorageAccessError"), (401, "StorageAccessError"), (404, "ShardNotFoundError")],
)
def test_http_refusals_fail_fast(
    http_server: Endpoint, mode: str, status: int, cls: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_mode(monkeypatch, mode)
    backend = Backend("http", http_server)
    base = backend.upload(make_shards(1, 2, bin_size=100))
    url = backend.url(f"{base}/shard-000000.tar")
    name = f"{base}/shard-000000"
    counts = []
    for retries in ("0", "5"):
        monkeypatch.setenv("WDS_RETRIES", retries)
        http_server.proxy.reset()
        http_server.proxy.fail_status(status, times=None, path_contains=name)
        before = COUNTERS.snapshot().get("retries", 0)
        with pytest.raises(cloudwds.StorageError) as e:
            list(cloudwds.WebDataset(url))
        assert type(e.value).__name__ == cls, f"{type(e.value).__name__}: {e.value}"
        assert e.value.url == url
        assert COUNTERS.snapshot().get("retries", 0) == before
        counts.append(sum(1 for r in http_server.proxy.requests if r.injected == str(status)))
    assert counts[0] == counts[1] and counts[0] >= 1, counts


def test_refused_connection_keeps_its_retries(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that is down may be restarting: connection refused is retried, then reported."""
    monkeypatch.setenv("WDS_RETRIES", "2")
    monkeypatch.setenv("WDS_TIMEOUT", "1")
    base = backend.upload(make_shards(1, 2, bin_size=100))
    url = backend.url(f"{base}/shard-000000.tar")
    before = COUNTERS.snapshot().get("retries", 0)
    with backend.server.offline(), pytest.raises(cloudwds.StorageError) as e:
        list(cloudwds.WebDataset(url, **backend.kwargs))
    assert not isinstance(e.value, cloudwds.ShardNotFoundError | cloudwds.StorageAccessError)
    assert "after 2 retries" in str(e.value) and e.value.url == url
    assert COUNTERS.snapshot().get("retries", 0) - before == 2


@pytest.mark.parametrize("name", ["ais-s3", "ais-gs"])
def test_missing_object_through_aistore_fails_fast(
    name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(request, name)
    base = backend.upload(make_shards(1, 2, bin_size=100))
    url = backend.url(f"{base}/missing-000000.tar")
    _assert_fails_fast(
        url,
        backend.kwargs,
        backend.server,
        "missing-000000",
        cloudwds.ShardNotFoundError,
        monkeypatch,
    )
