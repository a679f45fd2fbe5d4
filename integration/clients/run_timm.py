"""Run timm's ``create_dataset("wds/...")`` (ReaderWds) and ``create_loader`` and save every batch.

Run as a script by integration/test_clients.py, in the client venv (see env.py), either with
webdataset 0.2.86 first on ``PYTHONPATH`` (the reference) or under ``python -m cloudwds.run``
(the opt-in). timm's code is imported unchanged from the installed wheel. Usage:
``run_timm.py CONFIG.json``; the config names the dataset root (with its ``_info.json``), split,
training or not, the DataLoader start method, and where to write the batches (``.npz``) and a JSON report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    import numpy as np
    import torch
    import webdataset
    from timm.data import create_dataset, create_loader
    from timm.data.readers.reader_wds import ReaderWds

    if cfg.get("start_method"):  # "spawn": workers re-import this script and timm from scratch
        torch.multiprocessing.set_start_method(cfg["start_method"], force=True)
    torch.manual_seed(cfg["seed"])  # fixes the worker seeds that ReaderWds shuffles with
    dataset = create_dataset(
        f"wds/{cfg['name']}",
        root=cfg["root"],
        split=cfg["split"],
        is_training=cfg["is_train"],
        batch_size=cfg["batch_size"],
        seed=cfg["seed"],
    )
    if not isinstance(dataset.reader, ReaderWds):
        raise TypeError(f"create_dataset gave {type(dataset.reader).__name__}, not ReaderWds")
    loader = create_loader(
        dataset,
        input_size=(3, cfg["image_size"], cfg["image_size"]),
        batch_size=cfg["batch_size"],
        is_training=cfg["is_train"],
        no_aug=True,  # training order/sampling stays timm's; only the random augmentations go
        use_prefetcher=False,  # the prefetcher moves batches to CUDA
        num_workers=cfg["workers"],
        crop_pct=1.0,
    )
    arrays: dict[str, np.ndarray] = {}
    n = 0
    for images, targets in loader:
        arrays[f"image{n}"] = images.numpy()
        arrays[f"target{n}"] = targets.numpy()
        n += 1
    np.savez(cfg["out"], **arrays)
    report = {
        "batches": n,
        "len": len(loader),
        "webdataset": getattr(webdataset, "__file__", None),
        "webdataset_name": webdataset.__name__,
        "webdataset_version": getattr(webdataset, "__version__", None),
    }
    Path(cfg["out"]).with_suffix(".json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
