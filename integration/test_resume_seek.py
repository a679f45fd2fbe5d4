"""Resume by seeking on real endpoints: a resumed exact epoch's first shard is read from the owed
sample's offset (its ``.idx`` next to the shard), not from byte 0 — checked in the request log.

Without the ``.idx`` the same resume reads the shard from its start and discards; both give the
same remainder. With a cache the shard is fetched whole into the cache once and the cached file
is read from the offset (a second resume works offline).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import cloudwds
from cloudwds.index import build_index
from cloudwds.indexed import ShardOffsets
from cloudwds.sources.seek import sample_offset
from cloudwds.storage import StorageConfig

from .servers import Endpoint
from .shards import make_shards
from .storage_support import (
    Backend,
    clean_wds_env,  # noqa: F401 - fixture
    make_backend,
    rows,
)

pytestmark = pytest.mark.usefixtures("clean_wds_env")

SHARDS = make_shards(3, [6, 4, 5], bin_size=3000, seed=9)
STOP = 3  # inside the first shard (6 samples): the resumed run starts at its sample 3


@pytest.fixture(params=["s3", "gs"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return make_backend(request, request.param)


def indexed(backend: Backend) -> tuple[str, str, Any]:
    """Upload the shards, write their .idx files beside them: ``(base, pattern, manifest)``."""
    base = backend.upload(SHARDS)
    pattern = backend.pattern(SHARDS, base)
    manifest = build_index(
        pattern, StorageConfig.resolve(**backend.kwargs), offsets=True, checksum=None
    )
    backend.reset_counts()
    return base, pattern, manifest


def exact(pattern: str, manifest: Any, **kw: Any) -> cloudwds.WebDataset:
    return cloudwds.WebDataset(
        pattern, exact_epoch=True, shardshuffle=False, seed=5, index=manifest, **kw
    )


def checkpoint(pattern: str, manifest: Any, kwargs: dict[str, Any]) -> tuple[list[Any], Any]:
    it = iter(exact(pattern, manifest, **kwargs))
    head = [next(it) for _ in range(STOP)]
    state = json.loads(json.dumps(it.state_dict()))
    it.close()
    return head, state


def resume(pattern: str, manifest: Any, state: Any, kwargs: dict[str, Any]) -> tuple[list, Any]:
    ds = exact(pattern, manifest, **kwargs)
    ds.load_state_dict(state)
    run = iter(ds)
    return list(run), run.source


def shard_gets(server: Endpoint, obj: str) -> list[str | None]:
    """Range headers of the GETs of object ``obj`` (None: the whole object)."""
    return [
        r.range for r in server.proxy.requests if r.method == "GET" and server.object_of(r) == obj
    ]


def first_table(backend: Backend, base: str) -> ShardOffsets:
    idx = backend.server.read(f"{base}/{SHARDS.names[0][:-4]}.idx")
    return ShardOffsets.from_idx(idx, backend.url(f"{base}/{SHARDS.names[0]}"))


def test_resumed_shard_is_read_from_the_samples_offset(backend: Backend) -> None:
    base, pattern, manifest = indexed(backend)
    kwargs = {**backend.kwargs, "cache_dir": False}  # no cache: every read is a request
    reference = rows(exact(pattern, manifest, **kwargs))
    assert len(reference) == 15
    head, state = checkpoint(pattern, manifest, kwargs)
    backend.reset_counts()
    rest, source = resume(pattern, manifest, state, kwargs)
    assert rows(head) + rows(rest) == reference
    first = f"{base}/{SHARDS.names[0]}"
    offset = sample_offset(first_table(backend, base), STOP)
    size = len(SHARDS.data[SHARDS.names[0]])
    assert source.seeks == [(backend.url(first), STOP, offset)]
    assert 0 < offset < size
    assert shard_gets(backend.server, first) == [f"bytes={offset}-{size - 1}"]
    for name in SHARDS.names[1:]:  # the other shards: read as usual, from byte 0
        gets = shard_gets(backend.server, f"{base}/{name}")
        assert gets and (gets[0] is None or gets[0].startswith("bytes=0-")), gets

    # the same resume without the .idx reads the first shard from byte 0 and discards
    backend.server.fs.rm(backend.server.path_of(f"{base}/{SHARDS.names[0][:-4]}.idx"))
    backend.reset_counts()
    rest_again, source = resume(pattern, manifest, state, kwargs)
    assert source.seeks == []
    assert rows(rest_again) == rows(rest)
    gets = shard_gets(backend.server, first)
    assert gets and (gets[0] is None or gets[0].startswith("bytes=0-")), gets


def test_cached_resume_reads_the_cached_file_from_the_offset(backend: Backend, tmp_path) -> None:
    base, pattern, manifest = indexed(backend)
    kwargs = {**backend.kwargs, "cache_dir": str(tmp_path / "cache")}
    reference = rows(exact(pattern, manifest, **backend.kwargs, cache_dir=False))
    backend.reset_counts()
    head, state = checkpoint(pattern, manifest, kwargs)
    rest, source = resume(pattern, manifest, state, kwargs)
    assert rows(head) + rows(rest) == reference
    assert len(source.seeks) == 1
    first = f"{base}/{SHARDS.names[0]}"
    size = len(SHARDS.data[SHARDS.names[0]])
    gets = shard_gets(backend.server, first)  # the checkpointed run's download, no other
    assert len(gets) == 1 and gets[0] in (None, "bytes=0-", f"bytes=0-{size - 1}"), gets
    with backend.server.offline():  # every shard and .idx is in the cache now
        rest_offline, source = resume(pattern, manifest, state, kwargs)
    assert rows(rest_offline) == rows(rest)
    assert len(source.seeks) == 1  # the cached file, read from the offset


def test_cached_resume_without_an_index_reads_from_the_start(backend: Backend, tmp_path) -> None:
    base, pattern, manifest = indexed(backend)
    for name in SHARDS.names:
        backend.server.fs.rm(backend.server.path_of(f"{base}/{name[:-4]}.idx"))
    kwargs = {**backend.kwargs, "cache_dir": str(tmp_path / "cache")}
    reference = rows(exact(pattern, manifest, **backend.kwargs, cache_dir=False))
    head, state = checkpoint(pattern, manifest, kwargs)
    rest, source = resume(pattern, manifest, state, kwargs)
    assert source.seeks == []
    assert rows(head) + rows(rest) == reference
