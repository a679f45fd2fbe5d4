"""Fixtures shared by the unit (tests/) and integration (integration/) suites."""

from __future__ import annotations

import itertools
import os

import pytest

_CACHE_HOMES = itertools.count()


@pytest.fixture(scope="session")
def _xdg_cache_base(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(autouse=True)
def _private_user_cache(_xdg_cache_base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote shards are cached by default (cloudwds.cache.defaults) under ``XDG_CACHE_HOME``:
    point it at a fresh directory per test (created only if a test reads a remote shard), so no
    test writes into the real ``~/.cache`` and no test is served another test's shards."""
    path = os.path.join(_xdg_cache_base, str(next(_CACHE_HOMES)))
    monkeypatch.setenv("XDG_CACHE_HOME", path)
