"""Smoke tests for the integration fixtures: real servers, real fsspec clients, no mocks."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import fsspec
import pytest

from .ais_gateway import AISGateway
from .fault_proxy import FaultProxy
from .servers import Endpoint, HTTPEndpoint, running
from .shards import make_shards, read_tar

BACKENDS = ["s3_server", "gcs_server", "azure_server", "http_server"]


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Endpoint:
    return request.getfixturevalue(request.param)


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def _refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.URLError as e:
        return isinstance(e.reason, ConnectionRefusedError)
    except ConnectionError:
        return False
    return False


# ----------------------------------------------------------------------------- shards
def test_shards_are_deterministic_and_uneven() -> None:
    a = make_shards(3, [2, 5, 1], bin_size=100, seed=7)
    b = make_shards(3, [2, 5, 1], bin_size=100, seed=7)
    assert a.data == b.data
    assert a.keys == [f"sample{i:06d}" for i in range(8)]
    assert [len(a.per_shard[n]) for n in a.names] == [2, 5, 1]
    assert a.pattern("s3://b/p") == "s3://b/p/shard-{000000..000002}.tar"
    members = read_tar(a.data["shard-000001.tar"])
    assert [m for m, _ in members][:3] == [
        "sample000002.txt",
        "sample000002.cls",
        "sample000002.bin",
    ]
    assert dict(members)["sample000003.bin"] == a.per_shard["shard-000001.tar"][1].members["bin"]
    assert make_shards(1, 1, seed=8).data != make_shards(1, 1, seed=7).data


# ----------------------------------------------------------------------------- each backend
def test_round_trip_ranges_and_get_counts(server: Endpoint) -> None:
    bucket = server.new_bucket()
    shards = make_shards(2, [3, 5], bin_size=3000)
    paths = shards.upload(server, f"{bucket}/train")
    fs = server.fs
    assert server.get_count() == 0  # uploads are not GETs
    for name, path in zip(shards.names, paths, strict=True):
        expected = shards.data[name]
        assert fs.cat_file(path) == expected
        assert server.get_count(path) == 1
        assert fs.cat_file(path, start=512, end=2048) == expected[512:2048]
        assert server.get_count(path) == 2
        assert server.requests(path)[-1].range == "bytes=512-2047"
        names = [m for m, _ in read_tar(expected)]
        assert names[0] == f"{shards.per_shard[name][0].key}.txt"
    assert server.get_count() == 4
    assert server.get_count(paths[0]) == 2  # per object, not per bucket

    before = server.get_count(paths[1])
    with fsspec.open(server.url(paths[1]), "rb", **server.storage_options) as f:
        f.seek(1000)
        assert f.read(100) == shards.data[shards.names[1]][1000:1100]
    assert server.get_count(paths[1]) == before + 1

    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/train", detail=False)) == (
        shards.names
    )
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{bucket}/train/missing.tar")


def test_url_and_path_of(s3_server: Endpoint, http_server: HTTPEndpoint) -> None:
    assert s3_server.url("b/k.tar") == "s3://b/k.tar"
    assert s3_server.path_of("s3://b/k.tar") == "b/k.tar"
    assert http_server.url("d/a b.tar") == f"{http_server.endpoint}/d/a%20b.tar"
    assert http_server.path_of(http_server.url("d/a b.tar")) == "d/a b.tar"


@pytest.mark.parametrize("name", ["s3_server", "gcs_server", "azure_server"])
def test_env_only_configuration_in_fresh_process(request: pytest.FixtureRequest, name: str) -> None:
    """What a user does without storage_options: export the variables, open the URL."""
    server: Endpoint = request.getfixturevalue(name)
    path = f"{server.new_bucket()}/x/shard-000000.tar"
    data = make_shards(1, 4).data["shard-000000.tar"]
    server.write(path, data)
    snippet = (
        "import fsspec, hashlib, sys\n"
        "with fsspec.open(sys.argv[1], 'rb') as f: print(hashlib.md5(f.read()).hexdigest())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSSPEC_", "PYTEST"))}
    out = subprocess.run(
        [sys.executable, "-c", snippet, server.url(path)],
        env={**env, **server.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == hashlib.md5(data).hexdigest()
    assert server.get_count(path) == 1  # the read really reached this server


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure", "http"])
def test_offline_reset_stop_start(kind: str) -> None:
    """On a private server: offline keeps data, reset wipes it, stop/start reuses the port."""
    with running(kind) as ep:
        bucket = ep.new_bucket()
        ep.write(f"{bucket}/a.bin", b"abc")
        url = ep.endpoint + "/"
        with ep.offline():
            assert _refused(url)
        assert ep.read(f"{bucket}/a.bin") == b"abc"
        ep.reset()
        with pytest.raises(FileNotFoundError):
            ep.new_fs().cat_file(f"{bucket}/a.bin")
        bucket = ep.new_bucket()
        ep.write(f"{bucket}/a.bin", b"abc")
        ep.stop()
        assert _refused(url)
        ep.start()
        assert ep.endpoint + "/" == url and ep.running
        if kind == "http":  # files on disk survive a restart
            assert ep.read(f"{bucket}/a.bin") == b"abc"
        else:  # in-memory servers come back empty
            assert not ep.fs.exists(f"{bucket}/a.bin")


def test_client_retries_injected_503(s3_server: Endpoint) -> None:
    path = f"{s3_server.new_bucket()}/r.bin"
    s3_server.write(path, b"x" * 1000)
    s3_server.proxy.fail_503(times=1, method="GET")
    assert s3_server.fs.cat_file(path) == b"x" * 1000
    assert [r.injected for r in s3_server.requests(path)] == ["503", None]


# ----------------------------------------------------------------------------- fault proxy
@pytest.fixture
def blob(http_server: HTTPEndpoint) -> tuple[str, bytes]:
    data = os.urandom(200_000)
    path = f"{http_server.new_bucket()}/blob.bin"
    http_server.write(path, data)
    return "/" + path, data


def test_fault_proxy_pass_through_and_counts(
    http_server: HTTPEndpoint, fault_proxy: Callable[[Any], FaultProxy], blob: tuple[str, bytes]
) -> None:
    path, data = blob
    proxy = fault_proxy(http_server)
    assert _get(proxy.endpoint + path) == (200, data)
    status, part = _get(proxy.endpoint + path, {"Range": "bytes=100-199"})
    assert (status, part) == (206, data[100:200])
    assert proxy.gets(path) == 2 and proxy.connections == 2
    assert http_server.get_count(path) == 2  # chained in front of the server's own proxy


def test_fault_proxy_cut_after(
    http_server: HTTPEndpoint, fault_proxy: Callable[[Any], FaultProxy], blob: tuple[str, bytes]
) -> None:
    path, data = blob
    proxy = fault_proxy(http_server)
    proxy.cut_after(5000, times=1)
    with pytest.raises(http.client.IncompleteRead) as e:
        _get(proxy.endpoint + path)
    assert 0 < len(e.value.partial) < 5000  # 5000 bytes of response, headers included
    assert _get(proxy.endpoint + path) == (200, data)  # only the first request was cut

    proxy.cut_after(10, times=1, abort=True)  # RST inside the status line
    with pytest.raises((ConnectionError, http.client.HTTPException, urllib.error.URLError)):
        _get(proxy.endpoint + path)
    assert proxy.connections == 3
    assert [r.injected for r in proxy.requests] == ["cut", None, "cut-abort"]


def test_fault_proxy_503_then_ok(
    http_server: HTTPEndpoint, fault_proxy: Callable[[Any], FaultProxy], blob: tuple[str, bytes]
) -> None:
    path, data = blob
    proxy = fault_proxy(http_server)
    proxy.fail_503(times=2)
    for _ in range(2):
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(proxy.endpoint + path)
        assert e.value.code == 503
    assert _get(proxy.endpoint + path) == (200, data)
    assert proxy.gets(path) == 3
    assert http_server.get_count(path) == 1  # the 503s never reached the server


def test_fault_proxy_delay_and_reset(
    http_server: HTTPEndpoint, fault_proxy: Callable[[Any], FaultProxy], blob: tuple[str, bytes]
) -> None:
    path, _ = blob
    proxy = fault_proxy(http_server)
    proxy.delay(0.3, times=1)
    t0 = time.perf_counter()
    _get(proxy.endpoint + path)
    assert time.perf_counter() - t0 >= 0.3
    proxy.delay(5.0)
    proxy.fail_503(times=5)
    proxy.reset()  # clears faults and counters
    t0 = time.perf_counter()
    assert _get(proxy.endpoint + path)[0] == 200
    assert time.perf_counter() - t0 < 1.0
    assert proxy.gets() == 1 and proxy.connections == 1


def test_fault_proxy_keep_alive_frames_each_request(
    http_server: HTTPEndpoint, fault_proxy: Callable[[Any], FaultProxy], blob: tuple[str, bytes]
) -> None:
    """Faults apply per request on a reused connection, not per connection."""
    path, data = blob
    proxy = fault_proxy(http_server)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        for i in range(3):
            conn.request("GET", path, headers={"Range": f"bytes={i}-{i + 9}"})
            r = conn.getresponse()
            assert (r.status, r.read()) == (206, data[i : i + 10])
        proxy.fail_503(times=1)
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.status == 503 and r.getheader("Connection") == "close"
        r.read()
    finally:
        conn.close()
    assert proxy.connections == 1 and proxy.gets(path) == 4


def test_fault_proxy_chunked_request_body(
    s3_server: Endpoint, fault_proxy: Callable[[Any], FaultProxy]
) -> None:
    """A chunked upload is framed and forwarded intact (moto accepts unsigned PUTs)."""
    bucket = s3_server.new_bucket()
    proxy = fault_proxy(s3_server)
    body = [b"abc", b"def" * 30_000, b"g"]
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        conn.request("PUT", f"/{bucket}/c.bin", body=iter(body), encode_chunked=True)
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"")
    finally:
        conn.close()
    assert s3_server.read(f"{bucket}/c.bin") == b"".join(body)
    assert [r.method for r in proxy.requests] == ["PUT"]
    assert proxy.requests[0].headers["transfer-encoding"] == "chunked"


def test_fault_proxy_offline_refuses(
    http_server: HTTPEndpoint, fault_proxy: Callable[[Any], FaultProxy], blob: tuple[str, bytes]
) -> None:
    path, data = blob
    proxy = fault_proxy(http_server)
    with proxy.offline():
        assert _refused(proxy.endpoint + path)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    assert _get(proxy.endpoint + path) == (200, data)


# ----------------------------------------------------------------------------- AIS gateway
def test_ais_gateway_serves_s3_and_gcs_objects(
    ais_gateway: AISGateway, s3_server: Endpoint, gcs_server: Endpoint
) -> None:
    data = make_shards(1, 6, bin_size=5000).data["shard-000000.tar"]
    s3_path = f"{s3_server.new_bucket()}/ais/shard-000000.tar"
    gs_path = f"{gcs_server.new_bucket()}/ais/shard-000000.tar"
    s3_server.write(s3_path, data)
    gcs_server.write(gs_path, data)
    s3_server.reset_counts()
    gcs_server.reset_counts()

    for url in (ais_gateway.url(s3_server.url(s3_path)), ais_gateway.url(gs_path, "gcp")):
        assert "/v1/objects/" in url
        assert _get(url) == (200, data)
        status, part = _get(url, {"Range": "bytes=1000-1999"})
        assert (status, part) == (206, data[1000:2000])
        assert _get(url, {"Range": "bytes=-100"}) == (206, data[-100:])
        head = urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5)
        assert int(head.headers["Content-Length"]) == len(data)

    assert ais_gateway.get_count(s3_path, provider="aws") == 3
    assert ais_gateway.get_count(f"gs://{gs_path}") == 3
    assert ais_gateway.total == 8  # 6 GETs + 2 HEADs
    assert s3_server.get_count(s3_path) >= 3  # bytes really came from the S3 endpoint
    assert gcs_server.get_count(gs_path) >= 3

    with fsspec.open(ais_gateway.url(gs_path, "gcp"), "rb") as f:  # plain fsspec HTTP
        f.seek(len(data) - 10)
        assert f.read() == data[-10:]


def test_ais_gateway_local_provider_and_errors(ais_gateway: AISGateway) -> None:
    url = ais_gateway.put("abkt/dir/o.bin", b"0123456789")
    assert _get(url, {"Range": "bytes=2-4"}) == (206, b"234")
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(ais_gateway.url("abkt/missing.bin"))
    assert e.value.code == 404
    assert "ais://abkt/missing.bin" in json.loads(e.value.read())["message"]
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(url, {"Range": "bytes=50-60"})
    assert e.value.code == 416
    assert ais_gateway.get_count("abkt/dir/o.bin") == 1
    assert ais_gateway.counts()["GET ais://abkt/missing.bin"] == 1


def test_ais_gateway_redirect_mode(tmp_path: Any) -> None:
    with AISGateway(ais_root=tmp_path, redirect=True) as gw:
        url = gw.put("b/o", b"hello")
        assert _get(url) == (200, b"hello")  # urllib follows the 307 like the SDK does
        assert [r.status for r in gw.log] == [307, 200]
