"""cloudwds.dataset: WebDataset resolves storage once, so ``WDS_CACHE`` means one cache per dataset."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator

import pytest
from conftest import make_shards

import cloudwds as wds
from cloudwds.cache.shardcache import ShardCache


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, list[str], list[str]]]:
    """Four shards behind a real HTTP server on 127.0.0.1: (base URL, shard URLs, all keys)."""
    root = tmp_path / "www"
    root.mkdir()
    shards = make_shards(root, 4, 5)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        urls = [base + os.path.basename(p) for p in shards.paths]
        spec = root / "mix.yaml"
        names = [os.path.basename(p) for p in shards.paths]
        spec.write_text(
            "dataset:\n"
            f"  - shards: [{base}{names[0]}, {base}{names[1]}]\n"
            "    weight: 1\n"
            f"  - shards: [{base}{names[2]}, {base}{names[3]}]\n"
            "    weight: 1\n"
        )
        yield str(spec), urls, shards.all_keys
    finally:
        server.shutdown()
        server.server_close()


def keys(samples) -> list[str]:
    return [s["__key__"] for s in samples]


MODES = {
    "default": lambda spec, urls: wds.WebDataset(urls, shardshuffle=True, seed=1),
    "exact": lambda spec, urls: wds.WebDataset(urls, exact_epoch=True, seed=1),
    "mixed-spec": lambda spec, urls: wds.WebDataset(spec, seed=1),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_wds_cache_builds_exactly_one_cache_per_dataset(served, tmp_path, monkeypatch, mode):
    spec, urls, all_keys = served
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("WDS_CACHE", str(cache_dir))
    before = ShardCache.instances_created
    ds = MODES[mode](spec, urls)
    copy = ds.map(lambda s: s)  # fluent copies share the dataset's storage
    first, second = iter(ds), iter(copy)  # two live iterations
    assert sorted(keys(first)) == sorted(all_keys)
    assert sorted(keys(second)) == sorted(all_keys)
    ds.set_epoch(1)
    assert sorted(keys(ds)) == sorted(all_keys)
    assert ShardCache.instances_created - before == 1
    cache = ds.storage.cache
    assert cache is not None and copy.storage.cache is cache
    assert cache.cache_dir == str(cache_dir)
    stats = cache.stats()
    assert stats["downloads"] == len(urls)  # each shard was downloaded once, by this cache
    assert stats["hits"] >= 2 * len(urls)  # and served from it on the later passes
