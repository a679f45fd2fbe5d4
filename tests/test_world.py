"""cloudwds.world: coordinates of the running iterator and stable derived seeds."""

from __future__ import annotations

import subprocess
import sys

from cloudwds.world import World, current_world, default_seed, distributed_rank, worker_info

SEED_IN_CHILD = "from cloudwds.world import World; print(World(seed=7, epoch=3).derive_seed('x'))"


def test_derived_seeds_are_stable_across_processes():
    here = World(seed=7, epoch=3).derive_seed("x")
    out = subprocess.run(
        [sys.executable, "-c", SEED_IN_CHILD], capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == here  # not Python's salted hash()
    assert 0 <= here < 2**63


def test_derived_seeds_depend_on_every_coordinate():
    base = World(rank=1, world_size=2, worker=1, num_workers=2, epoch=1, seed=1)
    seeds = {
        base.derive_seed("p"),
        World(**{**vars(base), "rank": 0}).derive_seed("p"),
        World(**{**vars(base), "worker": 0}).derive_seed("p"),
        World(**{**vars(base), "epoch": 2}).derive_seed("p"),
        World(**{**vars(base), "seed": 2}).derive_seed("p"),
        World(**{**vars(base), "cycle": 1}).derive_seed("p"),
        base.derive_seed("q"),
    }
    assert len(seeds) == 7
    # shard-level choices ignore rank and worker
    shared = base.derive_seed("p", per_rank=False, per_worker=False)
    other = World(rank=0, world_size=2, worker=0, num_workers=2, epoch=1, seed=1)
    assert other.derive_seed("p", per_rank=False, per_worker=False) == shared
    assert base.rng("p").random() == base.rng("p").random()
    assert World(**{**vars(base), "epoch": 5}).epoch == 5 and base.epoch == 1


def test_rank_and_worker_from_the_environment(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed_rank() == (0, 1)
    assert worker_info() == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert distributed_rank() == (3, 8)
    world = current_world(epoch=2, seed=9)
    assert (world.rank, world.world_size, world.worker, world.num_workers) == (3, 8, 0, 1)
    assert (world.epoch, world.seed) == (2, 9)


def test_default_seed(monkeypatch):
    monkeypatch.delenv("WDS_SEED", raising=False)
    assert default_seed(None) == 0
    assert default_seed(5) == 5
    monkeypatch.setenv("WDS_SEED", "17")
    assert default_seed(None) == 17 and isinstance(default_seed(None), int)
    assert default_seed(4) == 4  # explicit arguments win
