"""Deterministic synthetic shard sets for the benchmarks, written once into ``bench/data/``.

Every byte depends only on the fixed seed and the spec (plus the Pillow version for JPEGs), so
two runs of the suite read identical files. Shards are plain ustar archives written with the
standard library's :mod:`tarfile` (fixed mtime/owner), so neither library under test wrote them.

Sets (default / ``--quick``):

- ``small``: ~100-byte ``.txt`` + ``.cls`` records, 20,000 samples per shard, 4 shards / 1.
- ``jpeg``: 256x256 RGB JPEG (quality 90) + ``.cls`` + ``.json``, 1,000 samples per shard,
  4 shards / 3 shards of 800.
- ``large``: 4 MiB float32 ``.npy`` arrays + ``.cls``, 25 per shard, 4 shards / 2 of 10.
- ``ttfs``: one tiny shard (16 JPEG samples) and one big shard (8,000 / 2,000 JPEG samples)
  with the same kind of first sample, for time-to-first-sample and memory-vs-shard-size.

A ``manifest.json`` next to the shards records the spec; a set is rebuilt when it changes.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

SEED = 20240917
MTIME = 1_700_000_000
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # small | jpeg | large | ttfs
    shards: int
    samples: int  # per shard (ttfs: samples of the big shard)


def specs(quick: bool = False) -> dict[str, Spec]:
    if quick:
        return {
            "small": Spec("small", "small", 1, 20_000),
            "jpeg": Spec("jpeg", "jpeg", 3, 800),
            "large": Spec("large", "large", 2, 10),
            "ttfs": Spec("ttfs", "ttfs", 2, 2_000),
        }
    return {
        "small": Spec("small", "small", 4, 20_000),
        "jpeg": Spec("jpeg", "jpeg", 4, 1_000),
        "large": Spec("large", "large", 4, 25),
        "ttfs": Spec("ttfs", "ttfs", 2, 8_000),
    }


@dataclass
class ShardSet:
    """A generated set: local paths, object names (for S3) and totals."""

    name: str
    directory: str
    files: list[str]
    samples: int  # total over all shards
    nbytes: int  # total file bytes

    def paths(self, n: int | None = None) -> list[str]:
        return self.files if n is None else self.files[:n]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = MTIME
    info.mode = 0o644
    info.uname = info.gname = "bench"
    tar.addfile(info, io.BytesIO(data))


def _text(rng: np.random.Generator, nbytes: int) -> bytes:
    words: list[str] = []
    length = 0
    while length < nbytes:
        w = _WORDS[int(rng.integers(len(_WORDS)))]
        words.append(w)
        length += len(w) + 1
    return " ".join(words)[:nbytes].encode()


def make_image(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A smooth random colour field with fine noise: compresses like a photo (~25-35 KB)."""
    from PIL import Image

    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(coarse, "RGB").resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.int16)
    noise = rng.integers(-12, 13, size=arr.shape, dtype=np.int16)
    out: np.ndarray = np.clip(arr + noise, 0, 255).astype(np.uint8)
    return out


def encode_jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(arr, "RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _jpeg_samples(seed: int, n: int, start: int = 0) -> Iterator[tuple[bytes, int, bytes]]:
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = int(rng.integers(1000))
        jpg = encode_jpeg(make_image(rng))
        meta = {"id": start + i, "label": label, "caption": _text(rng, 60).decode()}
        yield jpg, label, json.dumps(meta, sort_keys=True).encode()


def _write_shard(path: str, kind: str, shard: int, n: int) -> int:
    tmp = path + ".tmp"
    count = 0
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        if kind == "small":
            rng = np.random.default_rng([SEED, 1, shard])
            for i in range(n):
                key = f"s{shard:03d}/{i:06d}"
                _add(tar, key + ".txt", _text(rng, 100))
                _add(tar, key + ".cls", str(int(rng.integers(1000))).encode())
                count += 1
        elif kind in ("jpeg", "ttfs"):
            for i, (jpg, label, meta) in enumerate(_jpeg_samples(SEED + 1000 * shard + 7, n)):
                key = f"{kind}{shard:03d}_{i:06d}"
                _add(tar, key + ".jpg", jpg)
                _add(tar, key + ".cls", str(label).encode())
                _add(tar, key + ".json", meta)
                count += 1
        elif kind == "large":
            rng = np.random.default_rng([SEED, 3, shard])
            for i in range(n):
                key = f"big{shard:03d}_{i:04d}"
                arr = rng.standard_normal((1024, 1024), dtype=np.float32)
                buf = io.BytesIO()
                np.save(buf, arr)
                _add(tar, key + ".npy", buf.getvalue())
                _add(tar, key + ".cls", str(i % 10).encode())
                count += 1
        else:
            raise ValueError(kind)
    os.replace(tmp, path)
    return count


def build(spec: Spec, root: str = DATA_DIR, log: Callable[..., object] = print) -> ShardSet:
    """Generate ``spec`` into ``root/<name>`` unless an identical set is already there."""
    directory = os.path.join(root, spec.name)
    os.makedirs(directory, exist_ok=True)
    manifest_path = os.path.join(directory, "manifest.json")
    want = {"spec": asdict(spec), "seed": SEED, "version": 1}
    if spec.kind == "ttfs":
        plan = [("ttfs-small.tar", 0, 16), ("ttfs-big.tar", 1, spec.samples)]
    else:
        plan = [(f"{spec.name}-{i:06d}.tar", i, spec.samples) for i in range(spec.shards)]
    files = [os.path.join(directory, name) for name, _, _ in plan]
    try:
        with open(manifest_path) as f:
            have = json.load(f)
    except (OSError, ValueError):
        have = None
    if have is None or have.get("want") != want or not all(os.path.exists(p) for p in files):
        log(f"# generating {spec.name}: {len(plan)} shards in {directory}")
        for path, (_, shard, n) in zip(files, plan):
            _write_shard(path, spec.kind, shard, n)
        samples = sum(n for _, _, n in plan)
        with open(manifest_path, "w") as f:
            json.dump({"want": want, "samples": samples}, f)
        have = {"want": want, "samples": samples}
    return ShardSet(
        name=spec.name,
        directory=directory,
        files=files,
        samples=int(have["samples"]),
        nbytes=sum(os.path.getsize(p) for p in files),
    )


def build_all(
    quick: bool = False, root: str | None = None, log: Callable[..., object] = print
) -> dict[str, ShardSet]:
    base = root or os.path.join(DATA_DIR, "quick" if quick else "full")
    return {name: build(spec, base, log) for name, spec in specs(quick).items()}


if __name__ == "__main__":
    import argparse
    import time

    parser = argparse.ArgumentParser(description="generate the benchmark shard sets")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    for s in build_all(args.quick).values():
        print(f"{s.name}: {len(s.files)} shards, {s.samples} samples, {s.nbytes / 1e6:.1f} MB")
    print(f"# {time.perf_counter() - t0:.1f} s")
