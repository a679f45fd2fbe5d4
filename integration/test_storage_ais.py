"""AIStore routing: ``AIS_ENDPOINT`` + ``USE_AIS_FOR`` send gs:// and s3:// reads through the
gateway's REST API, ``ais://`` goes there directly, and samples keep the original URL."""

from __future__ import annotations

from pathlib import Path

import pytest

import cloudwds

from .ais_gateway import AISGateway
from .servers import Endpoint
from .shards import make_shards, read_tar
from .storage_support import (
    Backend,
    assert_same,
    clean_wds_env,  # noqa: F401 - fixture
    expected_rows,
    rows,
)

pytestmark = pytest.mark.usefixtures("clean_wds_env")

SHARDS = make_shards(4, [5, 3, 4, 6], bin_size=3500, seed=71)


def _upload_both(
    gateway: AISGateway, s3_server: Endpoint, gcs_server: Endpoint, mp: pytest.MonkeyPatch
) -> tuple[Backend, str, Backend, str]:
    """SHARDS in an S3 and a GCS bucket; AIS_ENDPOINT set to the gateway, its counts reset."""
    s3 = Backend("s3", s3_server)
    gs = Backend("gs", gcs_server)
    s3_base = s3.upload(SHARDS)
    gs_base = gs.upload(SHARDS)
    gateway.reset_counts()
    mp.setenv("AIS_ENDPOINT", gateway.endpoint)
    return s3, s3_base, gs, gs_base


def test_env_routes_gs_and_s3_through_the_gateway(
    ais_gateway: AISGateway,
    s3_server: Endpoint,
    gcs_server: Endpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3, s3_base, gs, gs_base = _upload_both(ais_gateway, s3_server, gcs_server, monkeypatch)
    monkeypatch.setenv("USE_AIS_FOR", "gs:s3")
    urls = s3.urls(SHARDS, s3_base)[:2] + gs.urls(SHARDS, gs_base)[2:]
    # No storage_options at all: the reader never talks to S3 or GCS itself.
    got = rows(cloudwds.WebDataset(urls, shardshuffle=False))
    assert_same(got, expected_rows(SHARDS, urls))  # __url__ is the gs:// / s3:// URL
    for name in SHARDS.names[:2]:
        assert ais_gateway.get_count(f"s3://{s3_base}/{name}") == 1
        assert ais_gateway.get_count(f"gs://{gs_base}/{name}") == 0
        assert s3_server.get_count(f"{s3_base}/{name}") >= 1  # the gateway fetched it from S3
    for name in SHARDS.names[2:]:
        assert ais_gateway.get_count(f"gs://{gs_base}/{name}") == 1
        assert ais_gateway.get_count(f"s3://{s3_base}/{name}") == 0
        assert gcs_server.get_count(f"{gs_base}/{name}") >= 1
    providers = {r.provider for r in ais_gateway.log if r.method == "GET"}
    assert providers == {"aws", "gcp"}


def test_use_ais_for_only_routes_the_named_schemes(
    ais_gateway: AISGateway,
    s3_server: Endpoint,
    gcs_server: Endpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3, s3_base, gs, gs_base = _upload_both(ais_gateway, s3_server, gcs_server, monkeypatch)
    monkeypatch.setenv("USE_AIS_FOR", "gs")
    urls = [s3.urls(SHARDS, s3_base)[0], gs.urls(SHARDS, gs_base)[1]]
    ds = cloudwds.WebDataset(urls, storage_options={"s3": s3_server.storage_options})
    assert_same(rows(ds), expected_rows(SHARDS, urls, names=SHARDS.names[:2]))
    assert ais_gateway.get_count(f"s3://{s3_base}/{SHARDS.names[0]}") == 0
    assert s3_server.get_count(f"{s3_base}/{SHARDS.names[0]}") == 1  # read directly
    assert ais_gateway.get_count(f"gs://{gs_base}/{SHARDS.names[1]}") == 1


def test_ais_scheme_reads_from_the_gateway(
    ais_gateway: AISGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in SHARDS.names:
        ais_gateway.put(f"abkt/train/{name}", SHARDS.data[name])
    pattern = SHARDS.pattern("ais://abkt/train")
    urls = SHARDS.urls("ais://abkt/train")
    with pytest.raises(cloudwds.StorageError) as e:  # no endpoint: a clear error, not a guess
        list(cloudwds.WebDataset(pattern))
    assert e.value.url == urls[0]
    assert "AIS_ENDPOINT" in str(e.value)
    monkeypatch.setenv("AIS_ENDPOINT", ais_gateway.endpoint)
    assert_same(rows(cloudwds.WebDataset(pattern)), expected_rows(SHARDS, urls))
    for name in SHARDS.names:
        assert ais_gateway.get_count(f"ais://abkt/train/{name}") == 1


def test_ais_route_with_cache_keys_by_the_original_url(
    ais_gateway: AISGateway, gcs_server: Endpoint, tmp_path: Path
) -> None:
    gs = Backend("gs", gcs_server)
    base = gs.upload(SHARDS)
    ais_gateway.reset_counts()
    urls = gs.urls(SHARDS, base)
    ds = cloudwds.WebDataset(
        gs.pattern(SHARDS, base),
        cache_dir=tmp_path,
        ais_endpoint=ais_gateway.endpoint,
        use_ais_for="gs",
    )
    want = expected_rows(SHARDS, urls)
    assert_same(rows(ds), want)
    ds.storage.cache.wait()
    for name in SHARDS.names:
        assert (tmp_path / "gs" / base / name).read_bytes() == SHARDS.data[name]
    ais_gateway.reset_counts()
    assert_same(rows(ds), want)
    assert ais_gateway.get_count() == 0


def test_gateway_redirects_are_followed(s3_server: Endpoint, tmp_path: Path) -> None:
    """A real AIS proxy answers 307 to a target; every request must follow it."""
    s3 = Backend("s3", s3_server)
    base = s3.upload(SHARDS)
    with AISGateway({"aws": s3_server.new_fs()}, ais_root=tmp_path, redirect=True) as gw:
        ds = cloudwds.WebDataset(
            s3.pattern(SHARDS, base), ais_endpoint=gw.endpoint, use_ais_for="s3"
        )
        assert_same(rows(ds), expected_rows(SHARDS, s3.urls(SHARDS, base)))
        statuses = [r.status for r in gw.log]
    assert statuses.count(307) >= len(SHARDS.names)
    assert statuses.count(206) + statuses.count(200) >= len(SHARDS.names)


def test_writing_with_ais_routing_set_goes_to_the_cloud(
    ais_gateway: AISGateway, s3_server: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AIS routing is for reads; a writer with USE_AIS_FOR=s3 still writes to S3 itself."""
    monkeypatch.setenv("AIS_ENDPOINT", ais_gateway.endpoint)
    monkeypatch.setenv("USE_AIS_FOR", "s3")
    bucket = s3_server.new_bucket()
    pattern = s3_server.url(f"{bucket}/out-%06d.tar")
    with cloudwds.ShardWriter(
        pattern, maxcount=3, encoder=False, storage_options=s3_server.storage_options
    ) as sink:
        for s in SHARDS.samples[:5]:
            sink.write(s.as_wds())
    members = read_tar(s3_server.read(pattern % 0))
    assert [m for m, _ in members][:3] == [
        f"{SHARDS.samples[0].key}.{e}" for e in ("bin", "cls", "txt")
    ]
    assert s3_server.new_fs().exists(f"{bucket}/out-000001.tar")
    # ...and reading it back goes through the gateway.
    ais_gateway.reset_counts()
    got = rows(cloudwds.WebDataset(s3_server.url(f"{bucket}/out-{{000000..000001}}.tar")))
    assert [r[0] for r in got] == [s.key for s in SHARDS.samples[:5]]
    assert ais_gateway.get_count() == 2
