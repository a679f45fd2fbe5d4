"""Reading brace-expanded shard sets from real endpoints: exact samples, exact bytes."""

from __future__ import annotations

import pytest

import cloudwds

from .shards import make_shards
from .storage_support import (
    ALL,
    Backend,
    assert_same,
    clean_wds_env,  # noqa: F401 - fixture
    expected_rows,
    make_backend,
    rows,
)

pytestmark = pytest.mark.usefixtures("clean_wds_env")

SHARDS = make_shards(4, [7, 3, 5, 9], bin_size=5000, seed=11)


@pytest.fixture(params=ALL)
def backend(request: pytest.FixtureRequest) -> Backend:
    return make_backend(request, request.param)


def test_webdataset_reads_every_sample_exactly(backend: Backend) -> None:
    base = backend.upload(SHARDS)
    pattern = backend.pattern(SHARDS, base)
    assert "{000000..000003}" in pattern
    ds = cloudwds.WebDataset(pattern, shardshuffle=False, **backend.kwargs)
    got = rows(ds)
    assert_same(got, expected_rows(SHARDS, backend.urls(SHARDS, base)))
    for name in SHARDS.names:  # small shards: one ranged GET each, no re-reads
        assert backend.get_count(f"{base}/{name}") == 1, name


def test_data_pipeline_reads_every_sample_exactly(backend: Backend) -> None:
    base = backend.upload(SHARDS)
    pipeline = cloudwds.DataPipeline(
        cloudwds.SimpleShardList(backend.pattern(SHARDS, base), **backend.kwargs),
        cloudwds.tarfile_to_samples(),
    )
    want = expected_rows(SHARDS, backend.urls(SHARDS, base))
    assert_same(rows(pipeline), want)
    assert_same(rows(pipeline), want)  # a second pass reads the same again
    for name in SHARDS.names:
        assert backend.get_count(f"{base}/{name}") == 2, name


def test_multi_block_shard_is_byte_exact(s3_server: object, request: pytest.FixtureRequest) -> None:
    """A shard spanning several blocks (1 MiB first block, then 8 MiB) reads byte-exact."""
    backend = make_backend(request, "s3")
    shards = make_shards(1, 40, bin_size=300_000, seed=3)  # ~12 MiB: blocks 1 + 8 + 3 MiB
    base = backend.upload(shards)
    url = backend.urls(shards, base)[0]
    got = rows(cloudwds.WebDataset(url, **backend.kwargs))
    assert_same(got, expected_rows(shards, [url]))
    reqs = backend.server.requests(f"{base}/{shards.names[0]}")
    size = len(shards.data[shards.names[0]])
    assert sorted(r.range for r in reqs) == [  # blocks are requested in parallel
        "bytes=0-1048575",
        f"bytes=1048576-{(9 << 20) - 1}",
        f"bytes={9 << 20}-{size - 1}",
    ]


def test_missing_shard_names_the_url(backend: Backend) -> None:
    base = f"{backend.server.new_bucket()}/none"
    url = backend.url(f"{base}/shard-000000.tar")
    with pytest.raises(cloudwds.StorageError) as e:
        list(cloudwds.WebDataset(url, **backend.kwargs))
    assert e.value.url == url
