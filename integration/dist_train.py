"""One rank of a distributed "training" run, launched by ``torchrun`` from test_distributed.py.

Every rank builds ``WebDataset(shards, exact_epoch=True, seed=...).shuffle(16)`` behind a
``WebLoader(num_workers=2, batch_size=4)`` and runs the passes of the JSON config in order::

    {"shards": [...], "seed": 3, "out": "/tmp/...", "run": "b",
     "passes": [{"epoch": 0},                         # set_epoch(0), then a whole pass
                {},                                   # no set_epoch: the next epoch
                {"resume": "/tmp/state.json"},        # load_state_dict(all ranks' states)
                {"epoch": 1, "stop": 7, "save": "/tmp/state.json"}]}  # stop after 7 batches,
                                                      # gathered_state_dict() -> rank 0 writes

and writes ``<out>/<run>-rank<R>.json``: per pass, the epoch the loader reports and the keys of
every batch this rank received, in order.
"""

from __future__ import annotations

import json
import os
import sys

import torch.distributed as dist

import cloudwds as wds


def write_json(path: str, doc: object) -> None:
    tmp = f"{path}.{os.getpid()}.part"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def main(config_path: str) -> None:
    with open(config_path) as f:
        config = json.load(f)
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    dataset = wds.WebDataset(config["shards"], exact_epoch=True, seed=config["seed"]).shuffle(16)
    loader = wds.WebLoader(dataset, num_workers=2, batch_size=4)
    passes = []
    for spec in config["passes"]:
        if spec.get("resume"):
            with open(spec["resume"]) as f:
                loader.load_state_dict(json.load(f))
        if spec.get("epoch") is not None:
            loader.set_epoch(spec["epoch"])
        batches: list[list[str]] = []
        stop = spec.get("stop")
        for batch in loader:
            batches.append(list(batch["__key__"]))
            if stop is not None and len(batches) == stop:
                states = loader.gathered_state_dict()  # a collective: every rank stops here
                if rank == 0:
                    write_json(spec["save"], states)
                break
        passes.append({"epoch": loader.state_dict()["epoch"], "batches": batches})
    write_json(
        os.path.join(config["out"], f"{config['run']}-rank{rank}.json"),
        {"rank": rank, "world_size": world_size, "passes": passes},
    )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
