"""Run open_clip's own ``get_wds_dataset`` over local shards and save every batch it yields.

Run as a script by integration/test_clients.py, in the client venv (see env.py), either with
webdataset 0.2.86 first on ``PYTHONPATH`` (the reference) or under ``python -m cloudwds.run``
(the opt-in): the same file either way, and open_clip's code is imported unchanged from the
installed ``open_clip_torch`` wheel. Usage: ``run_open_clip.py CONFIG.json``; the config says
which shards, the mode (eval / train / train resampled), and where to write the batches (``.npz``)
and a small JSON report (counts, and which ``webdataset`` module actually ran).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(config_path: str) -> None:
    cfg = json.loads(Path(config_path).read_text())
    if cfg.get("install_as_webdataset"):  # the in-code opt-in, before anything imports webdataset
        import cloudwds

        cloudwds.install_as_webdataset()
    import numpy as np
    import open_clip
    import torch
    import webdataset
    from open_clip_train.data import get_wds_dataset

    torch.manual_seed(cfg["seed"])  # fixes the DataLoader worker seeds (ResampledShards2 uses them)
    preprocess = open_clip.image_transform(cfg["image_size"], is_train=False)  # deterministic
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # SimpleTokenizer: bundled vocab, no download
    args = argparse.Namespace(
        train_data=cfg["shards"],
        val_data=cfg["shards"],
        dataset_resampled=cfg["resampled"],
        train_num_samples=cfg.get("num_samples"),
        val_num_samples=cfg.get("num_samples"),
        train_data_upsampling_factors=None,
        batch_size=cfg["batch_size"],
        workers=cfg["workers"],
        world_size=1,
        rank=0,
        seed=cfg["seed"],
    )
    data = get_wds_dataset(args, preprocess, is_train=cfg["is_train"], epoch=0, tokenizer=tokenizer)
    arrays: dict[str, np.ndarray] = {}
    n = 0
    for images, texts in data.dataloader:
        arrays[f"image{n}"] = images.numpy()
        arrays[f"text{n}"] = texts.numpy()
        n += 1
    np.savez(cfg["out"], **arrays)
    report = {
        "batches": n,
        "num_batches": data.dataloader.num_batches,
        "num_samples": data.dataloader.num_samples,
        "webdataset": getattr(webdataset, "__file__", None),
        "webdataset_name": webdataset.__name__,
        "webdataset_version": getattr(webdataset, "__version__", None),
    }
    Path(cfg["out"]).with_suffix(".json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
