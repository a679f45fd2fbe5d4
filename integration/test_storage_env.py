"""Configuration by environment only: a fresh Python process with the cloud variables and
``WDS_CACHE`` reads s3/gs/az shards; ``WDS_REWRITE``/``GOPEN_REWRITE``/``set_rewrites`` map URLs
to a local copy, a ``pipe:`` command or another server while samples keep the original URL."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import cloudwds
from cloudwds.storage import StorageConfig
from cloudwds.urls import Rewrite

from .servers import Endpoint
from .shards import ShardSet, make_shards
from .storage_support import (
    WDS_VARS,
    Backend,
    assert_same,
    clean_wds_env,  # noqa: F401 - fixture
    expected_rows,
    rows,
)

pytestmark = pytest.mark.usefixtures("clean_wds_env")

SHARDS = make_shards(3, [4, 2, 5], bin_size=2500, seed=81)

_CHILD = r"""
import hashlib, json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
import cloudwds
ds = cloudwds.WebDataset(sys.argv[1:], shardshuffle=False)
out = [
    [s["__key__"], s["__url__"], s["txt"].decode(), s["cls"].decode(),
     hashlib.sha256(s["bin"]).hexdigest(), sorted(k for k in s if not k.startswith("__"))]
    for s in ds
]
cache = ds.storage.cache
cache.close()
print(json.dumps({"rows": out, "dir": cache.cache_dir, "size": cache.cache_size,
                  "stats": cache.stats()}))
"""


def _expected(shards: ShardSet, urls: list[str]) -> list[list[Any]]:
    return [
        [k, u, t.decode(), c.decode(), hashlib.sha256(b).hexdigest(), ["bin", "cls", "txt"]]
        for k, u, t, c, b in expected_rows(shards, urls)
    ]


def _run_child(urls: list[str], env: dict[str, str]) -> tuple[dict[str, Any], str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FSSPEC_", "PYTEST")) and k not in WDS_VARS
    }
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *urls],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_env_only_configuration_in_a_fresh_process(
    s3_server: Endpoint, gcs_server: Endpoint, azure_server: Endpoint, tmp_path: Path
) -> None:
    """One dataset spanning S3, GCS and Azure, configured only by environment variables."""
    servers = [s3_server, gcs_server, azure_server]
    bases = [Backend(s.protocol, s).upload(SHARDS) for s in servers]
    # shard i comes from server i: s3://.../shard-000000.tar, gs://.../shard-000001.tar, ...
    urls = [s.url(f"{b}/{n}") for s, b, n in zip(servers, bases, SHARDS.names, strict=True)]
    cache_dir = tmp_path / "wds-cache"
    env = {
        **s3_server.env,
        **gcs_server.env,
        **azure_server.env,
        "WDS_CACHE": str(cache_dir),
        "WDS_CACHE_SIZE": "10M",
        "WDS_VERBOSE_CACHE": "1",
    }
    got, log = _run_child(urls, env)
    assert got["rows"] == _expected(SHARDS, urls)
    assert got["dir"] == str(cache_dir)
    assert got["size"] == 10 << 20
    for server, base, name in zip(servers, bases, SHARDS.names, strict=True):
        assert server.get_count(f"{base}/{name}") == 1, server  # the variables reached it
        assert (cache_dir / server.protocol / base / name).read_bytes() == SHARDS.data[name]
    logged = [line for line in log.splitlines() if line.startswith("cloudwds.cache")]
    for url in urls:  # WDS_VERBOSE_CACHE=1: cache activity is logged at INFO
        assert any("downloaded" in line and url in line for line in logged), log[-2000:]

    for server in servers:
        server.reset_counts()
    with s3_server.offline(), gcs_server.offline(), azure_server.offline():
        again, _ = _run_child(urls, env)
    assert again["rows"] == _expected(SHARDS, urls)
    assert again["stats"]["hits"] == len(urls) and again["stats"]["misses"] == 0
    assert sum(s.get_count() for s in servers) == 0


# --------------------------------------------------------------------------- rewrites
@pytest.fixture
def s3_shards(s3_server: Endpoint, tmp_path: Path) -> tuple[str, list[str], Path]:
    """Shards in a fresh S3 bucket and a local copy: (bucket, s3 URLs, local dir)."""
    base = Backend("s3", s3_server).upload(SHARDS, prefix="train")
    bucket = base.split("/", 1)[0]
    local = tmp_path / "copy" / "train"
    SHARDS.write_dir(local)
    return bucket, [s3_server.url(f"{base}/{n}") for n in SHARDS.names], local


@pytest.mark.parametrize("var", ["WDS_REWRITE", "GOPEN_REWRITE"])
def test_rewrite_to_a_local_copy(
    var: str,
    s3_server: Endpoint,
    s3_shards: tuple[str, list[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket, urls, local = s3_shards
    monkeypatch.setenv(var, f"s3://{bucket}/={local.parent}/")
    ds = cloudwds.WebDataset(SHARDS.pattern(f"s3://{bucket}/train"))  # no storage_options
    got = list(ds)
    assert_same(rows(got), expected_rows(SHARDS, urls))  # __url__ is still s3://
    assert [s["__local_path__"] for s in got][:1] == [str(local / SHARDS.names[0])]
    assert s3_server.get_count() == 0


def test_rewrite_to_a_pipe_command(
    s3_server: Endpoint, s3_shards: tuple[str, list[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, urls, local = s3_shards
    monkeypatch.setenv("WDS_REWRITE", rf"s3://{bucket}/(.*)=pipe:cat {local.parent}/\1")
    got = rows(cloudwds.WebDataset(SHARDS.pattern(f"s3://{bucket}/train")))
    assert_same(got, expected_rows(SHARDS, urls))
    assert s3_server.get_count() == 0


def test_set_rewrites_to_another_server_caches_under_the_original_url(
    s3_server: Endpoint,
    http_server: Endpoint,
    s3_shards: tuple[str, list[str], Path],
    tmp_path: Path,
) -> None:
    """A mirror: ``s3://bucket/`` read from an HTTP server, cached under ``s3/bucket/``."""
    bucket, urls, _ = s3_shards
    mirror = http_server.new_bucket()
    SHARDS.upload(http_server, f"{mirror}/train")
    cloudwds.set_rewrites([(f"^s3://{bucket}/", f"{http_server.endpoint}/{mirror}/")])
    ds = cloudwds.WebDataset(SHARDS.pattern(f"s3://{bucket}/train"), cache_dir=tmp_path)
    cloudwds.set_rewrites(None)  # captured when the dataset was built
    assert_same(rows(ds), expected_rows(SHARDS, urls))
    ds.storage.cache.wait()
    assert s3_server.get_count() == 0
    for name in SHARDS.names:
        assert http_server.get_count(f"{mirror}/train/{name}") == 1
        assert (tmp_path / "s3" / bucket / "train" / name).read_bytes() == SHARDS.data[name]


@dataclass(frozen=True)
class CountingRewrite(Rewrite):
    """A real rewrite rule that records every URL it is applied to."""

    calls: list[str] = field(default_factory=list, compare=False)

    def apply(self, url: str) -> str | None:
        self.calls.append(url)
        return super().apply(url)


def test_rewrites_are_applied_once_per_shard_for_two_epochs(
    s3_server: Endpoint,
    http_server: Endpoint,
    s3_shards: tuple[str, list[str], Path],
    tmp_path: Path,
) -> None:
    """Cache + prefetch + open of every shard, twice: each URL goes through the rules once."""
    bucket, urls, _ = s3_shards
    mirror = http_server.new_bucket()
    SHARDS.upload(http_server, f"{mirror}/train")
    rule = CountingRewrite(f"^s3://{bucket}/", f"{http_server.endpoint}/{mirror}/")
    storage = StorageConfig.resolve(cache_dir=tmp_path, prefetch=2)
    storage.rewrites = (rule,)
    ds = cloudwds.DataPipeline(
        cloudwds.SimpleShardList(urls, storage=storage), cloudwds.tarfile_to_samples()
    )
    for _ in range(2):
        assert_same(rows(ds), expected_rows(SHARDS, urls))
    storage.cache.wait()
    assert sorted(rule.calls) == sorted(urls)  # once per shard, not per is_remote/prefetch/open
    for name in SHARDS.names:
        assert http_server.get_count(f"{mirror}/train/{name}") == 1  # second epoch: cache hits
    storage.cache.close()
