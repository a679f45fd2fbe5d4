"""Caching by default (cloudwds.cache.defaults) against a real HTTP server that counts GETs:
a remote dataset read twice with no cache argument downloads each shard once; the opt-outs
(``cache_dir=False``, ``WDS_CACHE=off``) download it every time."""

from __future__ import annotations

from pathlib import Path

import pytest

import cloudwds
from cloudwds.cache.defaults import DefaultShardCache

from .servers import HTTPEndpoint
from .shards import make_shards
from .storage_support import clean_wds_env  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("clean_wds_env")

SHARDS = make_shards(3, [5, 4, 6], bin_size=3000, seed=13)


def _keys(ds: cloudwds.WebDataset) -> list[str]:
    return [s["__key__"] for s in ds]


def _upload(http_server: HTTPEndpoint) -> str:
    base = f"{http_server.new_bucket()}/data"
    SHARDS.upload(http_server, base)
    http_server.reset_counts()
    return base


def test_read_twice_without_cache_argument_downloads_each_shard_once(
    http_server: HTTPEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    base = _upload(http_server)
    ds = cloudwds.WebDataset(SHARDS.pattern(http_server.url(base)), shardshuffle=False)
    assert isinstance(ds.storage.cache, DefaultShardCache)
    first = _keys(ds)
    ds.storage.cache.wait()
    second = _keys(ds)
    assert first == second and len(first) == 15
    for name in SHARDS.names:
        assert http_server.get_count(f"{base}/{name}") == 1, name
    cached = sorted(p.name for p in (tmp_path / "cloudwds" / "shards").rglob("*.tar"))
    assert cached == sorted(SHARDS.names)


@pytest.mark.parametrize("how", ["cache_dir=False", "WDS_CACHE=off"])
def test_opt_out_downloads_every_time(
    how: str, http_server: HTTPEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kwargs: dict[str, object] = {}
    if how == "cache_dir=False":
        kwargs["cache_dir"] = False
    else:
        monkeypatch.setenv("WDS_CACHE", "off")
    base = _upload(http_server)
    ds = cloudwds.WebDataset(SHARDS.pattern(http_server.url(base)), shardshuffle=False, **kwargs)
    assert ds.storage.cache is None
    assert _keys(ds) == _keys(ds)
    for name in SHARDS.names:
        assert http_server.get_count(f"{base}/{name}") == 2, name
    assert not (tmp_path / "cloudwds").exists()
