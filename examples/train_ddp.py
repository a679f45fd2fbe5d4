"""Multi-node training with cloudwds: exact epochs, equal batch counts per rank, resumable.

Run on one machine with two processes (CPU, gloo) after ``cloudwds demo`` wrote ./demo-data:

    torchrun --nproc_per_node=2 examples/train_ddp.py --data 'demo-data/train-{000000..000007}.tar'

On a cluster, run the same command on every node with ``--nnodes``/``--rdzv-endpoint``, and point
``--data`` at the bucket (``s3://bucket/train-{000000..000099}.tar``). Stop it at any time with
``--stop-after N``; the next run with ``--resume`` continues the epoch where it stopped, even on a
different number of processes.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist
import torch.nn as nn

import cloudwds as wds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="demo-data/train-{000000..000007}.tar")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--checkpoint", default="loader-state.json")
    parser.add_argument(
        "--stop-after", type=int, default=None, help="stop after N steps (to try --resume)"
    )
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank = dist.get_rank()

    # Exact epochs: every sample once per epoch over all ranks and workers, and every rank gets
    # the same number of batches, so DDP never waits for a rank that ran out.
    dataset = (
        wds.WebDataset(args.data, exact_epoch=True, seed=1234)
        .shuffle(1000)
        .decode("torchrgb")
        .to_tuple("jpg", "cls")
        .batched(args.batch_size)
    )
    loader = wds.WebLoader(dataset, num_workers=args.workers, batch_size=None)
    if args.resume and os.path.exists(args.checkpoint):
        with open(args.checkpoint) as f:
            loader.load_state_dict(json.load(f))  # all ranks' states: works on a new world size

    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = 0
    waited_before = 0.0  # the loader's data-wait total is cumulative: per epoch = difference
    first_epoch = loader.dataset.epoch if hasattr(loader.dataset, "epoch") else 0
    for epoch in range(first_epoch, args.epochs):
        batches = samples = 0
        for images, labels in loader:
            loss = nn.functional.cross_entropy(model(images), torch.as_tensor(labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batches += 1
            samples += len(labels)
            step += 1
            if args.stop_after is not None and step >= args.stop_after:
                states = loader.gathered_state_dict()  # collective: every rank calls it
                if rank == 0:
                    with open(args.checkpoint, "w") as f:
                        json.dump(states, f)
                    print(f"stopped at step {step}; state saved to {args.checkpoint}")
                dist.destroy_process_group()
                return
        # this epoch's figures, then the run's step count, each labelled as such
        waited = loader.stats()["wait_total_s"] - waited_before
        waited_before += waited
        print(
            f"rank {rank}: epoch {epoch} done: {batches} batches, {samples} samples this epoch "
            f"(waited {waited:.2f}s for data); {step} steps since this process started"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
