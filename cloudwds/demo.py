"""The README's main job: write a synthetic image dataset as shards, then train on it by streaming.

It exercises the whole path a real job uses — ``ShardWriter`` → tar shards → ``WebDataset`` with
shuffle/decode/to_tuple/batched → ``WebLoader`` with worker processes → a torch model — on a
local folder, so it needs no cloud account. Point ``--data`` at an ``s3://``/``gs://`` URL prefix to
run the same job against a bucket.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

CLASSES = ("red", "green", "blue", "yellow")
_COLORS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], dtype=np.float32)


def synth_image(index: int, size: int = 32) -> tuple[np.ndarray, int]:
    """A noisy image whose dominant colour is its class; deterministic in ``index``."""
    rng = np.random.default_rng(index)
    label = index % len(CLASSES)
    noise = rng.normal(0, 40, size=(size, size, 3))
    image = np.clip(_COLORS[label] + noise, 0, 255).astype(np.uint8)
    return image, label


def write_dataset(
    pattern: str, nsamples: int, maxcount: int, storage_options: Any = None
) -> list[str]:
    """Write ``nsamples`` synthetic samples (``jpg`` + ``cls`` + ``json``) as shards."""
    from .writer import ShardWriter

    with ShardWriter(pattern, maxcount=maxcount, storage_options=storage_options) as sink:
        for i in range(nsamples):
            image, label = synth_image(i)
            sink.write(
                {
                    "__key__": f"sample{i:06d}",
                    "jpg": image,
                    "cls": label,
                    "json": {"index": i, "color": CLASSES[label]},
                }
            )
    return sink.shards


def _model() -> Any:
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, len(CLASSES)),
    )


def run_demo(
    data: str = "demo-data",
    nsamples: int = 4000,
    maxcount: int = 500,
    batch_size: int = 64,
    workers: int = 2,
    epochs: int = 1,
    quiet: bool = False,
) -> dict[str, float]:
    """Write the dataset (if absent), train for ``epochs``, return throughput and accuracy."""
    import torch
    from tqdm import tqdm

    from .loader import WebLoader
    from .pipeline import WebDataset

    is_local = "://" not in data
    nshards = (nsamples + maxcount - 1) // maxcount
    pattern = (
        os.path.join(data, "train-%06d.tar") if is_local else data.rstrip("/") + "/train-%06d.tar"
    )
    urls = pattern.replace("%06d", f"{{{0:06d}..{nshards - 1:06d}}}")
    first = pattern % 0
    if not (is_local and os.path.exists(pattern % (nshards - 1))):
        if is_local:
            os.makedirs(data, exist_ok=True)
        t0 = time.perf_counter()
        write_dataset(pattern, nsamples, maxcount)
        if not quiet:
            print(
                f"wrote {nsamples} samples in {nshards} shards to {data} ({time.perf_counter() - t0:.1f}s)"
            )
    elif not quiet:
        print(f"using existing shards {first} ...")

    dataset = (
        WebDataset(urls, shardshuffle=True)
        .shuffle(500)
        .decode("torchrgb")
        .to_tuple("jpg", "cls")
        .batched(batch_size, partial=True)
    )
    loader = WebLoader(dataset, num_workers=workers, batch_size=None)
    torch.manual_seed(0)
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    seen = correct = 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        progress = tqdm(total=nsamples, unit="sample", disable=quiet, desc=f"epoch {epoch}")
        for images, labels in loader:
            labels = torch.as_tensor(labels)
            logits = model(images)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            progress.update(len(labels))
            progress.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct / seen:.2f}")
        progress.close()
    elapsed = time.perf_counter() - t0
    result = {
        "samples": float(seen),
        "seconds": elapsed,
        "samples_per_s": seen / elapsed,
        "accuracy": correct / max(seen, 1),
    }
    stats = loader.stats()
    result["wait_total_s"] = stats["wait_total_s"]
    if not quiet:
        from .stats import format_stats

        # Two rates that measure different things, so each says what it is: the loader's is
        # how fast its workers read and decoded (from each worker's first shard, the slowest
        # worker's clock); training's is end to end (worker start-up and the model included).
        print(f"data path (read + decode in the loader's workers): {format_stats(stats)}")
        print(
            f"training (end to end, wall clock): {epochs} epoch(s), {seen} samples in "
            f"{elapsed:.1f}s = {result['samples_per_s']:.0f} samples/s; "
            f"running accuracy {result['accuracy']:.2%}"
        )
    return result
