"""resolve_cache: explicit arguments beat WDS_CACHE / WDS_CACHE_SIZE / WDS_VERBOSE_CACHE."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudwds.cache import ShardCache, resolve_cache


def test_no_directory_means_no_cache() -> None:
    assert resolve_cache(environ={}) is None
    assert resolve_cache(environ={"WDS_CACHE": "", "WDS_CACHE_SIZE": "1G"}) is None


def test_environment_fills_missing_arguments(tmp_path: Path) -> None:
    env = {"WDS_CACHE": str(tmp_path / "c"), "WDS_CACHE_SIZE": "50G", "WDS_VERBOSE_CACHE": "1"}
    cache = resolve_cache(environ=env)
    assert isinstance(cache, ShardCache)
    assert cache.cache_dir == str(tmp_path / "c")
    assert cache.cache_size == 50 << 30 and cache.verbose is True


def test_explicit_arguments_beat_the_environment(tmp_path: Path) -> None:
    env = {"WDS_CACHE": str(tmp_path / "env"), "WDS_CACHE_SIZE": "50G", "WDS_VERBOSE_CACHE": "yes"}
    cache = resolve_cache(str(tmp_path / "arg"), cache_size="500M", verbose=False, environ=env)
    assert cache is not None
    assert cache.cache_dir == str(tmp_path / "arg")
    assert cache.cache_size == 500 << 20 and cache.verbose is False
    assert resolve_cache("", environ=env) is None  # "" switches caching off explicitly


def test_size_and_verbose_defaults(tmp_path: Path) -> None:
    cache = resolve_cache(tmp_path, environ={"WDS_VERBOSE_CACHE": "0"})
    assert cache is not None and cache.cache_size is None and cache.verbose is False
    cache = resolve_cache(tmp_path, environ={"WDS_CACHE_SIZE": "1000"})
    assert cache is not None and cache.cache_size == 1000


def test_bad_size_in_environment_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WDS_CACHE_SIZE"):
        resolve_cache(tmp_path, environ={"WDS_CACHE_SIZE": "lots"})


def test_reads_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WDS_CACHE", str(tmp_path))
    cache = resolve_cache()
    assert cache is not None and cache.cache_dir == str(tmp_path)
