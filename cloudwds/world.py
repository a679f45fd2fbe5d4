"""Where this iterator runs: rank and world size, DataLoader worker, epoch, and stable seeds.

Rank comes from ``torch.distributed`` when it is initialised, else from ``RANK``/``WORLD_SIZE``
(set by ``torchrun``); the worker from ``torch.utils.data.get_worker_info()``. Seeds are derived
with a cryptographic hash of ``(seed, epoch, rank, worker, purpose)`` rather than Python's
``hash()`` (salted per process) or the clock, so the same seed gives the same order in every run
on the same topology.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class World:
    """Rank/worker coordinates of the current iterator plus the epoch and base seed."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1
    epoch: int = 0
    seed: int = 0
    cycle: int = 0  # repetition within one epoch (``.repeat()`` / ``.with_epoch()``)

    def derive_seed(self, *purpose: object, per_rank: bool = True, per_worker: bool = True) -> int:
        """A 63-bit seed for one random choice; shard-level choices pass ``per_rank=False``."""
        parts = (
            self.seed,
            self.epoch,
            self.cycle,
            self.rank if per_rank else -1,
            self.worker if per_worker else -1,
        ) + purpose
        digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1

    def rng(
        self, *purpose: object, per_rank: bool = True, per_worker: bool = True
    ) -> random.Random:
        return random.Random(self.derive_seed(*purpose, per_rank=per_rank, per_worker=per_worker))


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` from torch.distributed if initialised, else from the environment."""
    if "torch" not in sys.modules:  # not imported: torch.distributed cannot be initialised
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def dataloader_worker_info() -> Any:
    """torch's ``get_worker_info()`` in a DataLoader worker, None elsewhere; imports nothing.

    A DataLoader worker has ``torch.utils.data`` imported already, so a process without it
    (torch not installed, not imported, or replaced by a stand-in) is not a worker.
    """
    get_worker_info = getattr(sys.modules.get("torch.utils.data"), "get_worker_info", None)
    return get_worker_info() if callable(get_worker_info) else None


def worker_info() -> tuple[int, int]:
    """``(worker, num_workers)`` inside a DataLoader worker, ``(0, 1)`` elsewhere."""
    info = dataloader_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def current_world(epoch: int = 0, seed: int = 0) -> World:
    """The :class:`World` of the calling process and worker."""
    rank, world_size = distributed_rank()
    worker, num_workers = worker_info()
    return World(rank, world_size, worker, num_workers, epoch, seed)


def default_seed(seed: int | None) -> int:
    """An explicit seed, else ``WDS_SEED`` (an int), else 0: shard order must agree across ranks."""
    if seed is not None:
        return int(seed)
    return int(os.environ.get("WDS_SEED", "0"))
