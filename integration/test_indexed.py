"""Random access on real endpoints: byte-exact samples, one Range GET per sample, coalesced
neighbours, and a cache that serves the second epoch without any request."""

from __future__ import annotations

import random

import pytest

import cloudwds
from cloudwds.index import build_index
from cloudwds.indexed import IndexedWebDataset, ShardOffsets
from cloudwds.storage import StorageConfig

from .servers import Endpoint
from .shards import make_shards
from .storage_support import (
    DIRECT,
    ROUTED,
    Backend,
    assert_same,
    clean_wds_env,  # noqa: F401 - fixture
    expected_rows,
    make_backend,
    rows,
)

pytestmark = pytest.mark.usefixtures("clean_wds_env")

SHARDS = make_shards(3, [6, 4, 5], bin_size=3000, seed=5)


@pytest.fixture(params=DIRECT + ROUTED)
def backend(request: pytest.FixtureRequest) -> Backend:
    return make_backend(request, request.param)


def upload_indexed(backend: Backend) -> tuple[str, str]:
    """Upload the shards and their offsets files; returns ``(base, pattern)``."""
    base = backend.upload(SHARDS)
    pattern = backend.pattern(SHARDS, base)
    if backend.name == "http" or backend.gateway is not None:
        # a static server takes no uploads, and AIStore routing is for reads (writes would go
        # to the real cloud): the offsets files are written beside the shards directly
        for name in SHARDS.names:
            url = backend.url(f"{base}/{name}")
            table = ShardOffsets.from_idx(_local_idx(SHARDS.data[name]), url)
            backend.server.write(f"{base}/{name[:-4]}.idx", table.to_idx())
    else:  # cloudwds index writes them next to the shards, on the store itself
        manifest = build_index(
            pattern, StorageConfig.resolve(**backend.kwargs), offsets=True, checksum=None
        )
        assert all(s.offsets and s.offsets.endswith(".idx") for s in manifest.shards)
    backend.reset_counts()
    return base, pattern


def _local_idx(data: bytes) -> bytes:
    import tempfile

    from cloudwds.index import scan_shard_offsets

    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        f.write(data)
        f.flush()
        _, table = scan_shard_offsets(f.name)
    assert table is not None
    return table.to_idx()


def data_gets(server: Endpoint, base: str) -> list[tuple[str, str | None]]:
    """``(object, Range header)`` of every data GET on the shards (not the .idx files)."""
    out = []
    for r in server.proxy.requests:
        obj = server.object_of(r)
        if obj is not None and obj.startswith(base) and obj.endswith(".tar"):
            out.append((obj, r.range))
    return out


def test_every_sample_by_index_is_exact(backend: Backend) -> None:
    base, pattern = upload_indexed(backend)
    ds = IndexedWebDataset(pattern, **backend.kwargs)
    assert len(ds) == 15
    got = rows(ds[i] for i in range(len(ds)))
    assert_same(got, expected_rows(SHARDS, backend.urls(SHARDS, base)))
    streamed = rows(cloudwds.WebDataset(pattern, shardshuffle=False, **backend.kwargs))
    assert got == streamed


def test_getitem_reads_only_the_samples_byte_range(backend: Backend) -> None:
    base, pattern = upload_indexed(backend)
    ds = IndexedWebDataset(pattern, **backend.kwargs)
    backend.reset_counts()
    for index in (7, 0, 14):
        shard, number = ds.locate(index)
        start, end = ds.tables[shard].span(number)
        before = len(data_gets(backend.server, base))
        sample = ds[index]
        gets = data_gets(backend.server, base)[before:]
        name = SHARDS.names[shard]
        assert gets == [(f"{base}/{name}", f"bytes={start}-{end - 1}")], gets
        assert sample["bin"] == SHARDS.per_shard[name][number].members["bin"]
    assert ds.reader.bytes_read == sum(
        ds.tables[s].span(n)[1] - ds.tables[s].span(n)[0] for s, n in map(ds.locate, (7, 0, 14))
    )


def test_neighbours_are_fetched_with_one_request(backend: Backend) -> None:
    base, pattern = upload_indexed(backend)
    ds = IndexedWebDataset(pattern, **backend.kwargs)
    ds[0]  # the per-shard size check is done; count the batch alone
    backend.reset_counts()
    batch = ds.__getitems__([1, 2, 3, 8])
    assert [s["__key__"] for s in batch] == [SHARDS.keys[i] for i in (1, 2, 3, 8)]
    gets = data_gets(backend.server, base)
    first, last = ds.tables[0].span(1)[0], ds.tables[0].span(3)[1]
    shard1 = ds.tables[1].span(2)
    assert sorted(gets) == sorted(
        [
            (f"{base}/{SHARDS.names[0]}", f"bytes={first}-{last - 1}"),
            (f"{base}/{SHARDS.names[1]}", f"bytes={shard1[0]}-{shard1[1] - 1}"),
        ]
    )


def test_cache_serves_the_second_epoch_without_requests(backend: Backend, tmp_path) -> None:
    base, pattern = upload_indexed(backend)
    cache = str(tmp_path / "cache")
    ds = IndexedWebDataset(pattern, cache_dir=cache, **backend.kwargs)
    order = list(range(len(ds)))
    random.Random(1).shuffle(order)
    first = {i: ds[i] for i in order}
    for name in SHARDS.names:  # each shard downloaded once, whole
        assert backend.get_count(f"{base}/{name}") == 1, name
    # a second epoch, in another process's dataset (fresh reader) and another order
    fresh = IndexedWebDataset(pattern, cache_dir=cache, **backend.kwargs)
    backend.reset_counts()
    random.Random(2).shuffle(order)
    second = {i: fresh[i] for i in order}
    assert backend.server.proxy.count() == 0  # no request of any kind
    assert second == first
    assert_same(
        rows(second[i] for i in range(len(ds))),
        expected_rows(SHARDS, backend.urls(SHARDS, base)),
    )
