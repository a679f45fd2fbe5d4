"""cloudwds.cache.defaults: remote shards are cached by default, within a bounded budget,
announced once, and never when the user opts out (``cache_dir=False``, ``WDS_CACHE=off``)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from conftest import make_shards

import cloudwds
from cloudwds.cache import ShardCache
from cloudwds.cache.defaults import (
    DEFAULT_BUDGET,
    OFF_VALUES,
    DefaultShardCache,
    _reset_announcement,
    default_budget,
    default_cache_dir,
    env_disables_cache,
    storage_cache,
)
from cloudwds.storage import StorageConfig


def test_default_dir_follows_xdg_cache_home(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert default_cache_dir(env) == str(tmp_path / "cloudwds" / "shards")
    home = os.path.expanduser("~")
    assert default_cache_dir({}) == os.path.join(home, ".cache", "cloudwds", "shards")
    # empty or relative XDG_CACHE_HOME is ignored, as the XDG spec says
    assert default_cache_dir({"XDG_CACHE_HOME": ""}) == default_cache_dir({})
    assert default_cache_dir({"XDG_CACHE_HOME": "rel/dir"}) == default_cache_dir({})


def test_default_budget_is_ten_gib_capped_by_a_tenth_of_free_space(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    budget = default_budget(str(tmp_path / "not" / "yet" / "created"))
    assert budget == min(DEFAULT_BUDGET, int(free * 0.10))
    assert DEFAULT_BUDGET == 10 * 2**30
    assert not (tmp_path / "not").exists()  # measuring creates nothing


@pytest.mark.parametrize("value", ["", "0", "off", "OFF", " false ", "no", "None"])
def test_off_values_disable_the_cache(value: str) -> None:
    assert value.strip().lower() in OFF_VALUES
    assert env_disables_cache({"WDS_CACHE": value})
    assert storage_cache(None, environ={"WDS_CACHE": value}) is None


def test_unset_wds_cache_gives_the_default_cache(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert not env_disables_cache(env)
    cache = storage_cache(None, environ=env)
    assert isinstance(cache, DefaultShardCache)
    assert cache.cache_dir == str(tmp_path / "cloudwds" / "shards")
    assert cache.cache_size == default_budget(str(tmp_path))
    assert not (tmp_path / "cloudwds").exists()  # nothing on disk before a remote read


def test_explicit_arguments_and_wds_cache_win(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "WDS_CACHE": str(tmp_path / "env")}
    cache = storage_cache(None, environ=env)
    assert type(cache) is ShardCache and cache.cache_dir == str(tmp_path / "env")
    cache = storage_cache(tmp_path / "arg", "1M", environ=env)
    assert type(cache) is ShardCache and cache.cache_dir == str(tmp_path / "arg")
    assert cache.cache_size == 2**20
    assert storage_cache(False, environ=env) is None
    assert storage_cache(False, environ={}) is None
    assert storage_cache("", environ=env) is None
    # cache_dir=True: the default cache even though WDS_CACHE says off
    forced = storage_cache(True, environ={"WDS_CACHE": "off", "XDG_CACHE_HOME": str(tmp_path)})
    assert isinstance(forced, DefaultShardCache)


def test_size_and_verbosity_of_the_default_cache_follow_the_environment(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path), "WDS_CACHE_SIZE": "2G", "WDS_VERBOSE_CACHE": "yes"}
    cache = storage_cache(None, environ=env)
    assert cache is not None and cache.cache_size == 2 * 2**30 and cache.verbose
    cache = storage_cache(None, cache_size="3M", verbose=False, environ=env)
    assert cache is not None and cache.cache_size == 3 * 2**20 and not cache.verbose
    with pytest.raises(ValueError, match="WDS_CACHE_SIZE"):
        storage_cache(None, environ={"WDS_CACHE_SIZE": "lots"})


def test_webdataset_opt_out_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WDS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cloudwds.WebDataset("s3://bucket/a.tar", cache_dir=False).storage.cache is None
    ds = cloudwds.WebDataset("s3://bucket/a.tar")
    assert isinstance(ds.storage.cache, DefaultShardCache)
    assert ds.storage.prefetch == 1  # read-ahead comes with the cache
    monkeypatch.setenv("WDS_CACHE", "off")
    assert cloudwds.WebDataset("s3://bucket/a.tar").storage.cache is None
    assert StorageConfig.resolve(environ={"WDS_CACHE": "0"}).cache is None


def test_default_cache_pickles_as_itself(tmp_path: Path) -> None:
    import pickle

    cache = storage_cache(None, environ={"XDG_CACHE_HOME": str(tmp_path)})
    clone = pickle.loads(pickle.dumps(cache))
    assert type(clone) is DefaultShardCache
    assert (clone.cache_dir, clone.cache_size) == (cache.cache_dir, cache.cache_size)


def test_local_shards_are_never_copied_into_the_default_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("WDS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "data").mkdir()
    shards = make_shards(tmp_path / "data", 2, 5)
    _reset_announcement()
    with caplog.at_level(logging.INFO, logger="cloudwds.cache"):
        keys = [s["__key__"] for s in cloudwds.WebDataset(shards.spec, shardshuffle=False)]
    assert len(keys) == 10
    assert not (tmp_path / "xdg").exists()
    assert "caching remote shards" not in caplog.text


def test_first_use_is_announced_once_per_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import io

    cache = storage_cache(None, environ={"XDG_CACHE_HOME": str(tmp_path)})
    assert cache is not None
    _reset_announcement()
    with caplog.at_level(logging.WARNING, logger="cloudwds.cache"):
        for _ in range(3):
            with cache.open("s3://b/x.tar", lambda: io.BytesIO(b"abc" * 100)) as f:
                assert f.read() == b"abc" * 100
    cache.close()
    lines = [r.getMessage() for r in caplog.records if "caching remote shards" in r.getMessage()]
    assert len(lines) == 1
    assert str(tmp_path / "cloudwds" / "shards") in lines[0]
    assert "cache_dir=False" in lines[0] and "WDS_CACHE=off" in lines[0]
