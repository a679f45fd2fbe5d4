"""Deterministic WebDataset shards built in memory, plus the expected samples for assertions.

A sample ``i`` has key ``sample%06d`` and members ``.txt`` (text), ``.cls`` (``i % 10``) and
``.bin`` (``bin_size`` seeded random bytes), so any reader's output can be compared exactly.
"""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MTIME = 1_700_000_000  # fixed, so identical inputs give byte-identical tars


@dataclass(frozen=True)
class Sample:
    key: str
    shard: str
    members: dict[str, bytes]  # extension without dot -> bytes, e.g. {"txt": b"..."}

    def as_wds(self) -> dict[str, Any]:
        """The dict a WebDataset reader yields without decoding: ``__key__`` + raw members."""
        return {"__key__": self.key, **self.members}


def sample_members(index: int, bin_size: int = 1024, seed: int = 0) -> dict[str, bytes]:
    """The members of sample ``index`` (deterministic in ``index``, ``bin_size``, ``seed``)."""
    rnd = random.Random(seed * 1_000_003 + index)
    return {
        "txt": f"sample {index} seed {seed}".encode(),
        "cls": str(index % 10).encode(),
        "bin": rnd.randbytes(bin_size),
    }


def make_tar(samples: Sequence[Sample]) -> bytes:
    """A tar with each sample's members as ``<key>.<ext>``, in order (USTAR, fixed metadata)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for s in samples:
            for ext, payload in s.members.items():
                ti = tarfile.TarInfo(f"{s.key}.{ext}")
                ti.size, ti.mtime, ti.mode = len(payload), MTIME, 0o644
                ti.uname = ti.gname = "wds"
                tf.addfile(ti, io.BytesIO(payload))
    return buf.getvalue()


@dataclass
class ShardSet:
    """Shards (name -> tar bytes) and the samples each holds, in write order."""

    names: list[str]
    data: dict[str, bytes]
    per_shard: dict[str, list[Sample]]
    paths: list[str] = field(default_factory=list)  # set by upload()

    @property
    def samples(self) -> list[Sample]:
        return [s for n in self.names for s in self.per_shard[n]]

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.samples]

    @property
    def total_bytes(self) -> int:
        return sum(len(b) for b in self.data.values())

    def pattern(self, base: str) -> str:
        """Brace pattern covering all shards, e.g. ``s3://b/p/shard-{000000..000003}.tar``."""
        first, last = self.names[0], self.names[-1]
        stem, ext = first.rsplit("-", 1)[0], first.rsplit(".", 1)[1]
        lo, hi = first.rsplit("-", 1)[1].split(".")[0], last.rsplit("-", 1)[1].split(".")[0]
        return f"{base.rstrip('/')}/{stem}-{{{lo}..{hi}}}.{ext}"

    def urls(self, base: str) -> list[str]:
        return [f"{base.rstrip('/')}/{n}" for n in self.names]

    def upload(self, dest: Any, base: str) -> list[str]:
        """Write every shard under ``base``; returns the written paths.

        ``dest`` is an fsspec filesystem (``pipe_file``) or a test endpoint (``write``).
        """
        self.paths = []
        for n in self.names:
            path = f"{base.rstrip('/')}/{n}"
            if hasattr(dest, "pipe_file"):
                dest.pipe_file(path, self.data[n])
            else:
                dest.write(path, self.data[n])
            self.paths.append(path)
        return self.paths

    def write_dir(self, directory: str | Path) -> list[Path]:
        """Write the shards as local files (for ``file://`` and cache tests)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        out = []
        for n in self.names:
            (d / n).write_bytes(self.data[n])
            out.append(d / n)
        return out


def make_shards(
    n_shards: int = 4,
    samples_per_shard: int | Sequence[int] = 10,
    bin_size: int = 1024,
    seed: int = 0,
    prefix: str = "shard",
    first_index: int = 0,
) -> ShardSet:
    """Build ``n_shards`` shards named ``{prefix}-%06d.tar``.

    ``samples_per_shard`` may be a list for uneven shards (its length must be ``n_shards``);
    sample indices run on across shards, so keys are unique within the set.
    """
    counts = (
        [samples_per_shard] * n_shards
        if isinstance(samples_per_shard, int)
        else list(samples_per_shard)
    )
    if len(counts) != n_shards:
        raise ValueError(f"{len(counts)} sample counts for {n_shards} shards")
    names, data, per_shard = [], {}, {}
    index = first_index
    for i, count in enumerate(counts):
        name = f"{prefix}-{i:06d}.tar"
        samples = []
        for _ in range(count):
            samples.append(
                Sample(f"sample{index:06d}", name, sample_members(index, bin_size, seed))
            )
            index += 1
        names.append(name)
        per_shard[name] = samples
        data[name] = make_tar(samples)
    return ShardSet(names, data, per_shard)


def read_tar(data: bytes) -> list[tuple[str, bytes]]:
    """(member name, bytes) in order, streaming mode: how the tests check a shard round trip."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tf:
        for m in tf:
            f = tf.extractfile(m)
            if f is not None:
                out.append((m.name, f.read()))
    return out
