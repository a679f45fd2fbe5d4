"""URL → cache path: readable, aliased where it should be, never colliding, never escaping."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from cloudwds.cache import CacheLayout, ShardCache, url_to_key


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("s3://bucket/a/b.tar", "s3/bucket/a/b.tar"),
        ("gs://bucket/a/b.tar", "gs/bucket/a/b.tar"),
        ("gcs://bucket/a/b.tar", "gs/bucket/a/b.tar"),
        ("az://container/p/x.tar", "az/container/p/x.tar"),
        ("abfs://container@account.dfs.core.windows.net/p/x.tar", "az/container/p/x.tar"),
        ("abfss://container@account.dfs.core.windows.net/p/x.tar", "az/container/p/x.tar"),
        ("http://host:8080/p/x.tar", "http/host_8080/p/x.tar"),
        ("https://Host.Example/p/x.tar", "https/host.example/p/x.tar"),
        ("http://user:secret@host/x.tar", "http/host/x.tar"),
        ("ais://bucket/o/x.tar", "ais/bucket/o/x.tar"),
        ("file:///data/x.tar", "file/data/x.tar"),
        ("/data/x.tar", "file/data/x.tar"),
        ("http://host/x.tar?v=2&sig=a/b", "http/host/x.tar%3Fv=2%26sig=a%2Fb"),
        ("http://host?id=3", "http/host/%3Fid=3"),
        ("pipe:curl -s http://h/x.tar", "pipe/curl%20-s%20http%3A%2F%2Fh%2Fx.tar"),
    ],
)
def test_layout_is_readable(url: str, key: str) -> None:
    assert url_to_key(url) == key


def test_same_object_path_in_two_buckets_does_not_collide() -> None:
    assert url_to_key("s3://one/shard-000.tar") != url_to_key("s3://two/shard-000.tar")
    assert url_to_key("s3://b/x.tar") != url_to_key("gs://b/x.tar")
    assert url_to_key("http://h/x.tar") != url_to_key("https://h/x.tar")


def test_hostile_paths_are_sanitized_and_stay_inside(tmp_path: object) -> None:
    layout = CacheLayout(str(tmp_path))
    for url in [
        "s3://b/../../../etc/passwd",
        "s3://b/./x/../y",
        "http://h/%2e%2e/x",
        "s3://../x",
        "s3://b/.hidden",
        "s3://b/a\\..\\..\\x",
        "ais://b/\x00nul",
    ]:
        key = url_to_key(url)
        parts = key.split("/")
        assert all(p and p not in (".", "..") and not p.startswith(".") for p in parts), key
        path = os.path.realpath(layout.path(key))
        assert path.startswith(os.path.realpath(str(tmp_path)) + os.sep)


def test_escaping_is_injective_on_tricky_names() -> None:
    alphabet = [
        "a",
        "b",
        ".",
        "..",
        "%",
        "%2F",
        "%25",
        "_",
        "~",
        "?",
        "=",
        "&",
        ":",
        " ",
        "é",
        "/",
        "//",
    ]
    rng = random.Random(0)
    netlocs = {"s3": ["b", "B", "b_1"], "ais": ["b"], "http": ["b", "b_1", "b:1", "b%5F1"]}
    urls = set()
    for scheme, hosts in netlocs.items():
        for netloc, _ in itertools.product(hosts, range(300)):
            path = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
            urls.add(f"{scheme}://{netloc}/x{path}")
    keys: dict[str, str] = {}
    for url in sorted(urls):
        assert keys.setdefault(url_to_key(url), url) == url, url
    assert len(keys) == len(urls)


def test_long_names_are_shortened_with_a_hash() -> None:
    a = url_to_key("s3://b/" + "x" * 300 + "1.tar")
    b = url_to_key("s3://b/" + "x" * 300 + "2.tar")
    assert a != b
    assert all(len(p) <= 180 for p in a.split("/"))


def test_empty_path_parts_are_kept_apart() -> None:
    assert url_to_key("s3://b/a//c") != url_to_key("s3://b/a/c")


@pytest.mark.parametrize("url", ["s3://", "s3:///x.tar", "s3://bucket/", "http://"])
def test_urls_naming_no_object_are_rejected(url: str) -> None:
    with pytest.raises(ValueError, match="cache path"):
        url_to_key(url)


def test_local_path_is_under_the_cache_dir(tmp_path: object) -> None:
    cache = ShardCache(str(tmp_path))
    assert cache.local_path("s3://bucket/a/b.tar") == os.path.join(
        str(tmp_path), "s3", "bucket", "a", "b.tar"
    )
