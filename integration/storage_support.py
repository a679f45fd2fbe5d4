"""Shared helpers for the storage-layer integration tests (``test_storage_*.py``).

A :class:`Backend` is one way of reaching objects stored on a test endpoint: directly (``s3``,
``gs``, ``az``, ``http``) or routed through the AIS gateway (``ais-gs``, ``ais-s3``: the URL is
still ``gs://``/``s3://``, the reader is told ``ais_endpoint=`` + ``use_ais_for=``). Its
``get_count`` counts data GETs where the reader's requests land (the gateway for AIS routes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .ais_gateway import AISGateway
from .servers import Endpoint
from .shards import ShardSet

DIRECT = ["s3", "gs", "az", "http"]
ROUTED = ["ais-gs", "ais-s3"]
ALL = DIRECT + ROUTED

_SERVERS = {"s3": "s3_server", "gs": "gcs_server", "az": "azure_server", "http": "http_server"}

# Variables that would silently change how a reader opens URLs if the developer has them set.
WDS_VARS = (
    "WDS_CACHE",
    "WDS_CACHE_SIZE",
    "WDS_VERBOSE_CACHE",
    "WDS_REWRITE",
    "GOPEN_REWRITE",
    "WDS_PREFETCH",
    "WDS_RETRIES",
    "WDS_TIMEOUT",
    "WDS_STREAMING",
    "AIS_ENDPOINT",
    "USE_AIS_FOR",
    "RANK",
    "WORLD_SIZE",
)


@pytest.fixture
def clean_wds_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ``WDS_*``/AIS/rank variables and no process-wide rewrites during the test."""
    import cloudwds

    for var in WDS_VARS:
        monkeypatch.delenv(var, raising=False)
    cloudwds.set_rewrites(None)
    yield
    cloudwds.set_rewrites(None)


# How a remote object is read: ranged blocks with read-ahead (RangeReader), or one streamed
# GET resumed by range (StreamReader, WDS_STREAMING=1; S3 and HTTP/AIStore, others fall back).
MODES = ["ranged", "streamed"]


def use_mode(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Pin the read mode for readers built after this call (explicit, whatever the default)."""
    assert mode in MODES
    monkeypatch.setenv("WDS_STREAMING", "1" if mode == "streamed" else "0")


def streams(backend_name: str, mode: str) -> bool:
    """Whether this backend really reads with one streamed GET in ``mode``."""
    return mode == "streamed" and backend_name in ("s3", "http", "ais-gs", "ais-s3")


@dataclass
class Backend:
    name: str
    server: Endpoint
    gateway: AISGateway | None = None

    def url(self, path: str) -> str:
        return self.server.url(path)

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``WebDataset``/``SimpleShardList``/``StorageConfig.resolve``."""
        if self.gateway is not None:
            return {"ais_endpoint": self.gateway.endpoint, "use_ais_for": self.server.protocol}
        return {"storage_options": self.server.storage_options}

    @property
    def data_match(self) -> str | None:
        """``path_contains`` for proxy faults that should hit object-data GETs only."""
        return "alt=media" if self.server.protocol == "gs" else None  # not GCS metadata GETs

    def get_count(self, path: str) -> int:
        """Object-data GETs of ``path`` (``bucket/key``) as the reader issued them."""
        if self.gateway is not None:
            return self.gateway.get_count(self.server.url(self.server.path_of(path)))
        return self.server.get_count(path)

    def reset_counts(self) -> None:
        self.server.reset_counts()
        if self.gateway is not None:
            self.gateway.reset_counts()

    def upload(self, shards: ShardSet, prefix: str = "data") -> str:
        """Upload into a fresh bucket; returns the base path ``bucket/prefix``."""
        base = f"{self.server.new_bucket()}/{prefix}"
        shards.upload(self.server, base)
        self.reset_counts()
        return base

    def pattern(self, shards: ShardSet, base: str) -> str:
        return shards.pattern(self.url(base))

    def urls(self, shards: ShardSet, base: str) -> list[str]:
        return [self.url(f"{base}/{n}") for n in shards.names]


def make_backend(request: pytest.FixtureRequest, name: str) -> Backend:
    if name.startswith("ais-"):
        inner = name.removeprefix("ais-")
        server = request.getfixturevalue(_SERVERS[inner])
        return Backend(name, server, request.getfixturevalue("ais_gateway"))
    return Backend(name, request.getfixturevalue(_SERVERS[name]))


Row = tuple[str, str, bytes, bytes, bytes]


def expected_rows(
    shards: ShardSet, urls: Iterable[str], names: Iterable[str] | None = None
) -> list[Row]:
    """What a reader must yield for shards ``names`` (default: all) read from ``urls``."""
    out = []
    for name, url in zip(shards.names if names is None else names, urls, strict=True):
        for s in shards.per_shard[name]:
            out.append((s.key, url, s.members["txt"], s.members["cls"], s.members["bin"]))
    return out


def rows(samples: Iterable[dict[str, Any]]) -> list[Row]:
    """Samples → comparable rows; every sample must hold exactly the fields that were written."""
    out = []
    for s in samples:
        fields = set(s) - {"__key__", "__url__", "__local_path__"}
        assert fields == {"txt", "cls", "bin"}, f"unexpected fields {sorted(s)}"
        out.append((s["__key__"], s["__url__"], s["txt"], s["cls"], s["bin"]))
    return out


def assert_same(got: list[Row], want: list[Row]) -> None:
    """Exact comparison with a readable failure (not a multi-MiB bytes diff)."""
    got_ids = [(r[0], r[1]) for r in got]
    want_ids = [(r[0], r[1]) for r in want]
    assert len(got) == len(want), f"{len(got)} samples, expected {len(want)}"
    assert got_ids == want_ids
    bad = [g[0] for g, w in zip(got, want, strict=True) if g != w]
    assert not bad, f"{len(bad)} samples with wrong bytes, first {bad[:3]}"


def dir_bytes(root: str | os.PathLike[str], skip_dot: bool = True) -> int:
    """Total size of the regular files under ``root`` (dot-dirs and dot-files skipped)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_dot:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if skip_dot and name.startswith("."):
                continue
            total += os.path.getsize(os.path.join(dirpath, name))
    return total


def read_in_process(
    pattern: str,
    kwargs: dict[str, Any],
    cache_dir: str,
    workers: int,
    barrier: Any,
    queue: Any,
) -> None:
    """Child-process body (spawn): read ``pattern`` through the shared cache, send back rows.

    ``workers > 0`` reads through a torch DataLoader with that many workers. An exception is
    sent back as a string, so the parent reports it instead of hanging on the queue.
    """
    try:
        if not workers:  # no DataLoader: spare four processes the torch import (~2 s each)
            import sys

            sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
        import cloudwds

        ds = cloudwds.WebDataset(pattern, cache_dir=cache_dir, **kwargs)
        barrier.wait(60)
        if workers:
            from torch.utils.data import DataLoader

            samples: Iterable[dict[str, Any]] = DataLoader(ds, batch_size=None, num_workers=workers)
        else:
            samples = ds
        got = rows(samples)
        if ds.storage.cache is not None:
            ds.storage.cache.close()
        queue.put(got)
    except BaseException as exn:  # noqa: BLE001 - reported to the parent
        import traceback

        queue.put(f"{type(exn).__name__}: {exn}\n{traceback.format_exc()}")
