"""One rank of a map-style "training" run, launched by ``torchrun`` from test_indexed.py.

Every rank builds ``IndexedWebDataset(shards)`` with a :class:`GlobalShuffleSampler` behind a
``DataLoader(num_workers=2, batch_size=4)`` and runs the passes of the JSON config::

    {"shards": [...], "seed": 3, "out": "/tmp/...", "run": "b",
     "passes": [{"epoch": 0},                                  # a whole epoch
                {"resume": "/tmp/state.json", "epoch": 1},     # load the state, then the epoch
                {"epoch": 1, "stop": 5, "save": "/tmp/state.json"}]}  # stop after 5 batches

A stopped pass saves ``sampler.state_dict(consumed=batches * 4)`` from rank 0 (every rank holds
the same state). Writes ``<out>/<run>-rank<R>.json``: per pass, the keys of every batch.
"""

from __future__ import annotations

import json
import os
import sys

import torch.distributed as dist
from torch.utils.data import DataLoader

import cloudwds as wds
from cloudwds.indexed import GlobalShuffleSampler

BATCH = 4


def keys(batch: list[dict]) -> list[str]:
    return [s["__key__"] for s in batch]


def main(config_path: str) -> None:
    with open(config_path) as f:
        config = json.load(f)
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    dataset = wds.IndexedWebDataset(config["shards"])
    sampler = GlobalShuffleSampler(dataset, seed=config["seed"])  # rank/size from dist
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=2, collate_fn=keys)
    passes = []
    for spec in config["passes"]:
        if spec.get("resume"):
            with open(spec["resume"]) as f:
                sampler.load_state_dict(json.load(f))
        sampler.set_epoch(spec["epoch"])
        batches: list[list[str]] = []
        stop = spec.get("stop")
        for batch in loader:
            batches.append(batch)
            if stop is not None and len(batches) == stop:
                if rank == 0:
                    path = spec["save"]
                    with open(f"{path}.part", "w") as f:
                        json.dump(sampler.state_dict(consumed=stop * BATCH), f)
                    os.replace(f"{path}.part", path)
                break
        dist.barrier()
        passes.append({"epoch": spec["epoch"], "batches": batches})
    out = os.path.join(config["out"], f"{config['run']}-rank{rank}.json")
    with open(out, "w") as f:
        json.dump({"rank": rank, "world_size": world_size, "passes": passes}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
