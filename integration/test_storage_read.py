"""Reading brace-expanded shard sets from real endpoints: exact samples, exact bytes."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import cloudwds

from .fault_proxy import FaultProxy
from .shards import make_shards
from .storage_support import (
    ALL,
    MODES,
    Backend,
    assert_same,
    clean_wds_env,  # noqa: F401 - fixture
    expected_rows,
    make_backend,
    rows,
    use_mode,
)

pytestmark = pytest.mark.usefixtures("clean_wds_env")

SHARDS = make_shards(4, [7, 3, 5, 9], bin_size=5000, seed=11)


@pytest.fixture(params=ALL)
def backend(request: pytest.FixtureRequest) -> Backend:
    return make_backend(request, request.param)


@pytest.mark.parametrize("mode", MODES)
def test_webdataset_reads_every_sample_exactly(
    backend: Backend, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_mode(monkeypatch, mode)
    base = backend.upload(SHARDS)
    pattern = backend.pattern(SHARDS, base)
    assert "{000000..000003}" in pattern
    ds = cloudwds.WebDataset(pattern, shardshuffle=False, **backend.kwargs)
    got = rows(ds)
    assert_same(got, expected_rows(SHARDS, backend.urls(SHARDS, base)))
    for name in SHARDS.names:  # small shards: one GET each, no re-reads
        assert backend.get_count(f"{base}/{name}") == 1, name


def test_data_pipeline_reads_every_sample_exactly(backend: Backend) -> None:
    base = backend.upload(SHARDS)
    pipeline = cloudwds.DataPipeline(  # no cache: each pass reads from the server
        cloudwds.SimpleShardList(backend.pattern(SHARDS, base), cache_dir=False, **backend.kwargs),
        cloudwds.tarfile_to_samples(),
    )
    want = expected_rows(SHARDS, backend.urls(SHARDS, base))
    assert_same(rows(pipeline), want)
    assert_same(rows(pipeline), want)  # a second pass reads the same again
    for name in SHARDS.names:
        assert backend.get_count(f"{base}/{name}") == 2, name


@pytest.mark.parametrize("mode", MODES)
def test_multi_block_shard_is_byte_exact(
    mode: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ~12 MiB shard: ranged blocks (1 MiB first, then 8 MiB) or one streamed GET."""
    use_mode(monkeypatch, mode)
    backend = make_backend(request, "s3")
    shards = make_shards(1, 40, bin_size=300_000, seed=3)
    base = backend.upload(shards)
    url = backend.urls(shards, base)[0]
    got = rows(cloudwds.WebDataset(url, **backend.kwargs))
    assert_same(got, expected_rows(shards, [url]))
    reqs = backend.server.requests(f"{base}/{shards.names[0]}")
    size = len(shards.data[shards.names[0]])
    if mode == "streamed":
        assert [r.range for r in reqs] == [None]  # the whole object in one GET
    else:
        assert sorted(r.range for r in reqs) == [  # blocks are requested in parallel
            "bytes=0-1048575",
            f"bytes=1048576-{(9 << 20) - 1}",
            f"bytes={9 << 20}-{size - 1}",
        ]


def test_server_that_ignores_range_is_read_once(
    fault_proxy: Callable[[Any], FaultProxy], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stdlib http.server answers every GET with the whole file: no retry storm follows."""
    use_mode(monkeypatch, "ranged")
    shards = make_shards(1, 12, bin_size=250_000, seed=4)  # ~3 MiB: blocks 0 and 1 at once
    shards.write_dir(tmp_path)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        proxy = fault_proxy(server.server_address[1])
        url = f"{proxy.endpoint}/{shards.names[0]}"
        assert_same(rows(cloudwds.WebDataset(url)), expected_rows(shards, [url]))
        time.sleep(1.0)  # a retried read-ahead block would come back after 0.25 s, then 0.5 s
        gets = [r.range for r in proxy.requests if r.method == "GET"]
    finally:
        server.shutdown()
        server.server_close()
    size = len(shards.data[shards.names[0]])
    # Block 0 and the read-ahead block, each answered with the whole file; nothing more.
    assert sorted(gets) == ["bytes=0-1048575", f"bytes=1048576-{size - 1}"]


def test_missing_shard_names_the_url(backend: Backend) -> None:
    base = f"{backend.server.new_bucket()}/none"
    url = backend.url(f"{base}/shard-000000.tar")
    with pytest.raises(cloudwds.StorageError) as e:
        list(cloudwds.WebDataset(url, **backend.kwargs))
    assert e.value.url == url


@pytest.mark.parametrize("name", ["s3", "http"])
def test_a_streamed_shard_is_one_get_and_no_head(
    request: pytest.FixtureRequest, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first GET's Content-Length gives the size: no HEAD round trip before the data."""
    use_mode(monkeypatch, "streamed")
    backend = make_backend(request, name)
    base = backend.upload(SHARDS)
    backend.server.proxy.requests.clear()
    ds = cloudwds.WebDataset(
        backend.pattern(SHARDS, base), shardshuffle=False, cache_dir=False, **backend.kwargs
    )
    assert_same(rows(ds), expected_rows(SHARDS, backend.urls(SHARDS, base)))
    for shard in SHARDS.names:
        methods = [r.method for r in backend.server.proxy.requests if shard in r.target]
        assert methods == ["GET"], (shard, methods)
    # a missing object still fails when it is opened, typed and naming the URL
    missing = backend.url(f"{base}/missing-000000.tar")
    with pytest.raises(cloudwds.ShardNotFoundError) as e:
        list(cloudwds.WebDataset(missing, cache_dir=False, **backend.kwargs))
    assert e.value.url == missing
