"""Helpers for the distributed-training tests: uneven shards, worker tags, key collection."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from conftest import write_tar

# Uneven on purpose: a 1-sample shard, a big one, total 110 (not a multiple of 2, 3, 4 or 8).
SIZES = (3, 17, 5, 40, 9, 1, 23, 12)


@dataclass
class Uneven:
    paths: list[str]
    keys: list[str]  # every key of the set, shard by shard

    @property
    def total(self) -> int:
        return len(self.keys)


def uneven_shards(directory: str | os.PathLike[str], sizes: Sequence[int] = SIZES) -> Uneven:
    """Shards ``sh-NN.tar`` with ``sizes[i]`` samples each, keys ``sNN-III``, fields txt/cls."""
    paths, keys = [], []
    index = 0
    for s, n in enumerate(sizes):
        members = []
        for i in range(n):
            key = f"s{s:02d}-{i:03d}"
            keys.append(key)
            members += [(f"{key}.txt", key.encode()), (f"{key}.cls", str(index).encode())]
            index += 1
        path = os.path.join(os.fspath(directory), f"sh-{s:02d}.tar")
        write_tar(path, members)
        paths.append(path)
    return Uneven(paths, keys)


def tag_worker(sample: dict[str, Any]) -> dict[str, Any]:
    """Record which DataLoader worker produced the sample (module level: picklable)."""
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return {**sample, "worker": -1 if info is None else info.id}


def batch_keys(batch: Any) -> list[str]:
    return list(batch["__key__"])


def flat_keys(batches: Iterable[Any]) -> list[str]:
    return [k for b in batches for k in batch_keys(b)]


def batches_per_worker(batches: Iterable[Any]) -> dict[int, int]:
    """Batches per worker; a batch must come from one worker."""
    out: dict[int, int] = {}
    for b in batches:
        workers = {int(w) for w in b["worker"]}
        assert len(workers) == 1, f"a batch mixes workers {workers}"
        (w,) = workers
        out[w] = out.get(w, 0) + 1
    return out
