"""Shared builders for the core tests: real tar shards, real images, nothing mocked."""

from __future__ import annotations

import io
import itertools
import json
import os
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

FIELDS = ("txt", "cls")


def image_array(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB uint8 image with structure (so JPEG has something to compress)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(yy * 3 + seed) % 256, (xx * 5) % 256, ((yy + xx) * 7) % 256], axis=-1)
    noise = rng.integers(0, 8, size=(h, w, 3))
    return ((base + noise) % 256).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def field_value(key: str, index: int, fieldname: str) -> bytes:
    """The bytes stored for ``fieldname`` of sample ``index``; images are small real images."""
    ext = fieldname.rsplit(".", 1)[-1]
    if ext == "txt":
        return f"text of {key}".encode()
    if ext == "cls":
        return str(index).encode()
    if ext == "json":
        return json.dumps({"key": key, "index": index}).encode()
    if ext == "png":
        return png_bytes(image_array(8, 10, seed=index))
    if ext in ("jpg", "jpeg"):
        return jpeg_bytes(image_array(8, 10, seed=index))
    if ext == "bin":
        return bytes([index % 256]) * (index % 7)
    raise ValueError(f"no test value for field {fieldname!r}")


def write_tar(
    path: str | os.PathLike[str],
    members: Iterable[tuple[str, bytes]],
    format: int = tarfile.USTAR_FORMAT,
    mode: str = "w",
) -> str:
    """Write ``(name, data)`` regular-file members with :mod:`tarfile`; returns the path."""
    with tarfile.open(os.fspath(path), mode, format=format) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return os.fspath(path)


def tar_bytes(members: Iterable[tuple[str, bytes]], format: int = tarfile.USTAR_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass
class Shards:
    """Shards written by :func:`make_shards`: paths, a brace spec, and what each holds."""

    paths: list[str]
    spec: str
    keys: list[list[str]]  # keys per shard, in archive order
    values: dict[str, dict[str, bytes]] = field(default_factory=dict)  # key -> field -> bytes

    @property
    def all_keys(self) -> list[str]:
        return [k for ks in self.keys for k in ks]


def make_shards(
    tmp_path: str | os.PathLike[str],
    nshards: int,
    nsamples: int,
    fields: Sequence[str] = FIELDS,
    prefix: str = "shard",
) -> Shards:
    """Write ``nshards`` tar shards of ``nsamples`` samples each, keys ``s{shard}-{i:04d}``.

    Each sample has one member per entry of ``fields`` (``txt``, ``cls``, ``json``, ``png``,
    ``jpg``, ``bin`` or dotted names like ``seg.png``).
    """
    directory = os.fspath(tmp_path)
    paths, keys = [], []
    values: dict[str, dict[str, bytes]] = {}
    for s in range(nshards):
        path = os.path.join(directory, f"{prefix}-{s:06d}.tar")
        members = []
        shard_keys = []
        for i in range(nsamples):
            index = s * nsamples + i
            key = f"s{s}-{i:04d}"
            shard_keys.append(key)
            values[key] = {}
            for f in fields:
                data = field_value(key, index, f)
                values[key][f] = data
                members.append((f"{key}.{f}", data))
        write_tar(path, members)
        paths.append(path)
        keys.append(shard_keys)
    spec = os.path.join(directory, f"{prefix}-{{{0:06d}..{nshards - 1:06d}}}.tar")
    return Shards(paths, spec, keys, values)


@pytest.fixture
def shards(tmp_path) -> Shards:
    """Four shards of ten samples with ``txt`` and ``cls`` fields."""
    return make_shards(tmp_path, 4, 10)


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
