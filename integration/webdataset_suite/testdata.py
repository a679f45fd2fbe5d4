"""Synthesise the ``testdata/`` that webdataset 1.0.2's own tests read (its sdist ships none).

Only what the tests assert on is reproduced: member names, extensions, sample counts, value
types, the first image's shape, gzip compression. The images are synthetic (seeded noise on a
gradient), so nothing of the original data set is copied. Facts the tests rely on:

- ``imagenet-000000.tgz``: gzip'd tar, 47 samples with ``.cls`` (decimal text), ``.png`` (RGB;
  the first one 600x793, i.e. an array of shape (793, 600, 3)), ``.wnid`` and ``.xml``; larger
  than 10 KiB so that its first 10 KiB are a truncated tar.
- ``compressed.tar``: a directory entry plus ``compressed/000{1,2,3}.txt.gz`` (gzip'd text, the
  first one ``hello\\n``).
- ``tendata.tar``: 100 ``.ten`` members, each a tenbin list of two float64 (28, 28) arrays.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import time

import numpy as np
from PIL import Image

N_IMAGENET = 47
FIRST_IMAGE_SIZE = (600, 793)  # PIL (width, height) → array shape (793, 600, 3)
_MTIME = 1_600_000_000  # fixed, so the archives are byte-for-byte reproducible


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = _MTIME
    info.mode = 0o644
    info.uname = info.gname = "cloudwds"
    tar.addfile(info, io.BytesIO(data))


def _png(rng: np.random.Generator, width: int, height: int) -> bytes:
    y = np.linspace(0, 200, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 50, width, dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 48, size=(height, width, 3))
    pixels = np.clip(y + x + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG")
    return out.getvalue()


def _imagenet(path: str) -> None:
    rng = np.random.default_rng(20201)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(N_IMAGENET):
            wnid = f"n{1440764 + 1000 * (i % 7):08d}"
            key = f"{wnid}_{10000 + 37 * i}"
            width, height = FIRST_IMAGE_SIZE if i == 0 else (40 + i, 30 + 2 * i)
            label = (i * 131) % 1000
            _add(tar, f"{key}.cls", str(label).encode())
            _add(tar, f"{key}.png", _png(rng, width, height))
            _add(tar, f"{key}.wnid", wnid.encode())
            xml = (
                f"<annotation><filename>{key}</filename><size><width>{width}</width>"
                f"<height>{height}</height><depth>3</depth></size></annotation>\n"
            )
            _add(tar, f"{key}.xml", xml.encode())
    with open(path, "wb") as f:
        f.write(gzip.compress(raw.getvalue(), mtime=0))


def _compressed(path: str) -> None:
    with tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("compressed")
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.mtime = _MTIME
        tar.addfile(info)
        for i, text in enumerate(["hello\n", "world\n", "gzip\n"], start=1):
            _add(tar, f"compressed/{i:04d}.txt.gz", gzip.compress(text.encode(), mtime=0))


def _tenbin_chunk(data: bytes) -> bytes:
    """One tenbin chunk: magic, little-endian int64 length, data padded to 64 bytes."""
    padding = -len(data) % 64
    return b"~TenBin~" + struct.pack("<q", len(data)) + data + b"\0" * padding


def _code8(text: str) -> bytes:
    return text.encode("ascii").ljust(8, b"\0")


def _tenbin(arrays: list[tuple[str, np.ndarray]]) -> bytes:
    """Arrays as tenbin: per array a header chunk (dtype code, info, rank, dims) and a data chunk."""
    out = []
    for info, array in arrays:
        assert array.dtype == np.float64  # the only code used here: "f8"
        header = (
            _code8("f8")
            + _code8(info)
            + struct.pack(f"<{1 + array.ndim}q", array.ndim, *array.shape)
        )
        out.append(_tenbin_chunk(header))
        out.append(_tenbin_chunk(np.ascontiguousarray(array).astype("<f8").tobytes()))
    return b"".join(out)


def _tendata(path: str) -> None:
    rng = np.random.default_rng(7)
    with tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(100):
            xs = rng.normal(size=(28, 28))
            ys = rng.normal(size=(28, 28))
            _add(tar, f"{i:06d}.ten", _tenbin([("xs", xs), ("ys", ys)]))


def generate(directory: str) -> dict[str, str]:
    """Write the test data files into ``directory``; returns {file name: path}."""
    os.makedirs(directory, exist_ok=True)
    makers = {
        "imagenet-000000.tgz": _imagenet,
        "compressed.tar": _compressed,
        "tendata.tar": _tendata,
    }
    paths = {}
    for name, make in makers.items():
        path = os.path.join(directory, name)
        tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        make(tmp)
        os.replace(tmp, path)
        paths[name] = path
    return paths
