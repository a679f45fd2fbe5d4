"""Remembered sample counts of remote shards follow their content (issue 11, last bullet).

Exact epochs need every shard's sample count before reading. Without an index the counts are
remembered per shard identity; for S3 and GCS objects the identity is the URL plus the size
and version marker (ETag, generation...) of one listing of their directory. On the real
emulators (S3, GCS, and Azure too): a shard overwritten in place with more samples is counted again (the exact epoch
then yields all of them), and the unchanged shards are not read again (counted in the
server's request log).
"""

from __future__ import annotations

from typing import Any

import pytest

import cloudwds as wds
from cloudwds.storage import StorageConfig, object_identities

from .shards import make_shards
from .storage_support import Backend, clean_wds_env, make_backend  # noqa: F401 - fixture

BACKENDS = ["s3", "gs", "az"]
# Requests one fs.ls() of a directory makes: adlfs lists "prefix" then "prefix/".
LISTINGS_PER_DIRECTORY = {"s3": 1, "gs": 1, "az": 2}
pytestmark = pytest.mark.usefixtures("clean_wds_env")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    return make_backend(request, request.param)


def listings(backend: Backend) -> int:
    """Directory listings the endpoint received (S3 ``?list-type=2&prefix=``, GCS ``/o?prefix=``)."""
    return sum(1 for r in backend.server.requests() if r.method == "GET" and "prefix=" in r.target)


def heads_and_gets(backend: Backend) -> int:
    """Per-object requests: data GETs plus HEAD/metadata requests naming one object."""
    return sum(
        1
        for r in backend.server.requests()
        if r.method == "HEAD" or (r.method == "GET" and "prefix=" not in r.target)
    )


def exact_dataset(backend: Backend, urls: list[str]) -> Any:
    return wds.WebDataset(
        urls, exact_epoch=True, shardshuffle=False, cache_dir=False, **backend.kwargs
    )


def test_identities_take_one_listing_per_directory(backend: Backend) -> None:
    shards = make_shards(4, 3)
    base = backend.upload(shards)
    urls = backend.urls(shards, base)
    config = StorageConfig.resolve(cache_dir=False, **backend.kwargs)
    backend.reset_counts()
    ids = object_identities(urls, config)
    assert listings(backend) == LISTINGS_PER_DIRECTORY[backend.name]  # for all four shards
    assert heads_and_gets(backend) == 0  # no request per object
    assert [i["url"] for i in ids] == urls
    assert [i["size"] for i in ids] == [len(shards.data[n]) for n in shards.names]
    for identity in ids:  # a version marker beyond the size (S3 ETag; GCS etag/generation)
        assert {"etag", "generation", "modified"} & set(identity), identity


def test_a_shard_overwritten_in_place_is_recounted(backend: Backend) -> None:
    shards = make_shards(3, 4)
    base = backend.upload(shards)
    urls = backend.urls(shards, base)
    keys = sorted(shards.keys)

    backend.reset_counts()
    first = exact_dataset(backend, urls)
    for name in shards.names:  # building the dataset counted every shard once
        assert backend.get_count(f"{base}/{name}") == 1, name
    assert sorted(s["__key__"] for s in first) == keys

    # unchanged: nothing is counted again
    backend.reset_counts()
    again = exact_dataset(backend, urls)
    # no shard is read (the only object request is the probe for a cloudwds-index.json,
    # answered 404: a GET now that streamed reads learn the size from the GET, not a HEAD)
    assert [backend.get_count(f"{base}/{name}") for name in shards.names] == [0, 0, 0]
    probes = [r.target for r in backend.server.requests() if r.method in ("GET", "HEAD")]
    assert all("cloudwds-index.json" in t or "prefix=" in t for t in probes), probes
    assert sorted(s["__key__"] for s in again) == keys

    # shard 1 regenerated in place with six samples instead of four
    bigger = make_shards(3, [4, 6, 4], seed=1, first_index=100)
    changed = shards.names[1]
    backend.server.write(f"{base}/{changed}", bigger.data[changed])
    backend.reset_counts()
    third = exact_dataset(backend, urls)
    assert backend.get_count(f"{base}/{changed}") == 1  # recounted
    assert backend.get_count(f"{base}/{shards.names[0]}") == 0  # not read again
    assert backend.get_count(f"{base}/{shards.names[2]}") == 0
    want = sorted(
        [s.key for s in shards.per_shard[shards.names[0]]]
        + [s.key for s in bigger.per_shard[changed]]
        + [s.key for s in shards.per_shard[shards.names[2]]]
    )
    got = sorted(s["__key__"] for s in third)
    assert len(got) == 14 and got == want
