"""Writing shards to object stores: numbered shards read back exactly, objects appear only whole."""

from __future__ import annotations

import glob
import os
import tempfile
import time

import pytest

import cloudwds

from .servers import Endpoint
from .shards import make_shards, read_tar
from .storage_support import (
    assert_same,
    clean_wds_env,  # noqa: F401 - fixture
    rows,
)

pytestmark = pytest.mark.usefixtures("clean_wds_env")

WRITABLE = ["s3_server", "gcs_server", "azure_server"]
SAMPLES = make_shards(1, 10, bin_size=2000, seed=5).samples


@pytest.fixture(params=WRITABLE)
def server(request: pytest.FixtureRequest) -> Endpoint:
    return request.getfixturevalue(request.param)


def _exists(server: Endpoint, path: str) -> bool:
    return bool(server.new_fs().exists(server.path_of(path)))


def _uploads() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "cloudwds-upload-*")))


def test_shard_writer_round_trip(server: Endpoint) -> None:
    bucket = server.new_bucket()
    pattern = server.url(f"{bucket}/out/out-%06d.tar")
    with cloudwds.ShardWriter(
        pattern, maxcount=4, encoder=False, storage_options=server.storage_options
    ) as sink:
        for s in SAMPLES:
            sink.write(s.as_wds())
    want_urls = [server.url(f"{bucket}/out/out-{i:06d}.tar") for i in range(3)]
    assert sink.shards == want_urls
    names = sorted(p.rsplit("/", 1)[1] for p in server.new_fs().ls(f"{bucket}/out", detail=False))
    assert names == ["out-000000.tar", "out-000001.tar", "out-000002.tar"]

    # The raw objects hold exactly the members written, in order.
    for i, url in enumerate(want_urls):
        members = read_tar(server.read(url))
        chunk = SAMPLES[4 * i : 4 * i + 4]
        assert members == [
            (f"{s.key}.{ext}", s.members[ext]) for s in chunk for ext in sorted(s.members)
        ]

    pattern_read = server.url(f"{bucket}/out/out-{{000000..000002}}.tar")
    got = rows(cloudwds.WebDataset(pattern_read, storage_options=server.storage_options))
    want = [
        (s.key, want_urls[i // 4], s.members["txt"], s.members["cls"], s.members["bin"])
        for i, s in enumerate(SAMPLES)
    ]
    assert_same(got, want)


def test_object_appears_only_when_the_shard_is_complete(server: Endpoint) -> None:
    bucket = server.new_bucket()
    url = server.url(f"{bucket}/w/one.tar")
    before = _uploads()
    writer = cloudwds.TarWriter(url, encoder=False, storage_options=server.storage_options)
    for s in SAMPLES[:5]:
        writer.write(s.as_wds())
        assert not _exists(server, url)  # written to, still open: no object yet
    writer.close()
    assert _exists(server, url)
    assert [m for m, _ in read_tar(server.read(url))][-1] == f"{SAMPLES[4].key}.txt"
    assert _uploads() == before  # the local spool file is gone


def test_exception_inside_tar_writer_leaves_no_object(server: Endpoint) -> None:
    bucket = server.new_bucket()
    url = server.url(f"{bucket}/w/aborted.tar")
    before = _uploads()
    with (
        pytest.raises(RuntimeError, match="boom"),
        cloudwds.TarWriter(url, encoder=False, storage_options=server.storage_options) as w,
    ):
        w.write(SAMPLES[0].as_wds())
        raise RuntimeError("boom")
    assert not _exists(server, url)
    assert _uploads() == before
    # ShardWriter: the shards closed before the exception stay, the open one is dropped.
    pattern = server.url(f"{bucket}/w/part-%06d.tar")
    with (
        pytest.raises(RuntimeError, match="boom"),
        cloudwds.ShardWriter(
            pattern, maxcount=3, encoder=False, storage_options=server.storage_options
        ) as sw,
    ):
        for s in SAMPLES[:5]:
            sw.write(s.as_wds())
        raise RuntimeError("boom")
    assert _exists(server, pattern % 0)
    assert not _exists(server, pattern % 1)
    assert _uploads() == before


def test_upload_failure_names_the_url_and_leaves_nothing(
    s3_server: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WDS_RETRIES", "1")
    bucket = s3_server.new_bucket()
    url = s3_server.url(f"{bucket}/w/failed.tar")
    before = _uploads()
    # No botocore retries: the storage layer's own retry is what is tested.
    options = {**s3_server.storage_options, "config_kwargs": {"retries": {"max_attempts": 1}}}
    writer = cloudwds.TarWriter(url, encoder=False, storage_options=options)
    writer.write(SAMPLES[0].as_wds())
    t0 = time.monotonic()
    with s3_server.offline(), pytest.raises(cloudwds.StorageError) as e:
        writer.close()
    assert time.monotonic() - t0 < 20
    assert e.value.url == url
    assert "after 1 retries" in str(e.value)
    assert "EndpointConnectionError" in str(e.value)  # the server was unreachable
    assert not _exists(s3_server, url)
    assert _uploads() == before
