"""Small synthetic datasets laid out the way open_clip and timm expect their WebDataset shards.

open_clip reads image (``jpg;png;jpeg;webp``) + caption (``txt``) samples and drops samples that
lack either; timm's ReaderWds reads ``jpg;png;webp`` + ``cls`` and takes its splits (shard names and
per-shard sample counts) from ``_info.json`` in the dataset root. Images are small, seeded and
distinct, with varying sizes so the clients' resize/crop transforms have real work to do.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..shards import Sample, make_tar


def _image(seed: int, fmt: str) -> bytes:
    """A seeded gradient-plus-noise RGB image (size varies with ``seed``), encoded as ``fmt``."""
    rnd = random.Random(seed)
    w, h = rnd.choice((40, 48, 56)), rnd.choice((32, 40, 48))
    base = [rnd.randrange(256) for _ in range(3)]
    pixels = bytes(
        (base[c] + 3 * x + 2 * y + rnd.randrange(24)) % 256
        for y in range(h)
        for x in range(w)
        for c in range(3)
    )
    out = io.BytesIO()
    Image.frombytes("RGB", (w, h), pixels).save(out, format=fmt, quality=90)
    return out.getvalue()


@dataclass(frozen=True)
class ClipShards:
    """open_clip shards on disk: ``pattern`` is a brace URL over them."""

    pattern: str
    paths: list[str]
    captions: list[str]  # every caption open_clip keeps (samples with an image and a caption)


def write_clip_shards(directory: Path, sizes: Sequence[int], caption_less: int = -1) -> ClipShards:
    """Shards of image+caption samples; every 5th image is a PNG, the rest JPEG.

    ``caption_less``: index of a shard that also gets one image without a caption, which open_clip's
    ``filter_no_caption_or_no_image`` must drop (-1: none).
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths, captions, n = [], [], 0
    for s, size in enumerate(sizes):
        name = f"clip-{s:04d}.tar"
        samples = []
        for _ in range(size):
            caption = f"a photo of item {n} from shard {s}"
            ext = "png" if n % 5 == 4 else "jpg"
            img = _image(n, "PNG" if ext == "png" else "JPEG")
            samples.append(Sample(f"s{s}-{n:05d}", name, {ext: img, "txt": caption.encode()}))
            captions.append(caption)
            n += 1
        if s == caption_less:
            samples.insert(1, Sample(f"s{s}-nocap", name, {"jpg": _image(10_000 + s, "JPEG")}))
        (directory / name).write_bytes(make_tar(samples))
        paths.append(str(directory / name))
    pattern = str(directory / f"clip-{{0000..{len(sizes) - 1:04d}}}.tar")
    return ClipShards(pattern=pattern, paths=paths, captions=captions)


@dataclass(frozen=True)
class TimmDataset:
    """A timm WebDataset root: shards plus ``_info.json`` describing ``split``."""

    root: str
    split: str
    labels: list[int]  # the label of every sample, in shard order


def write_timm_dataset(
    directory: Path, sizes: Sequence[int], split: str = "validation", classes: int = 7
) -> TimmDataset:
    """Shards of ``jpg`` (or ``png``) + ``cls`` samples and the ``_info.json`` ReaderWds reads."""
    directory.mkdir(parents=True, exist_ok=True)
    filenames, labels, n = [], [], 0
    for s, size in enumerate(sizes):
        name = f"tiny-{split}-{s:04d}.tar"
        samples = []
        for _ in range(size):
            label = (3 * n + s) % classes
            ext = "png" if n % 6 == 5 else "jpg"
            img = _image(50_000 + n, "PNG" if ext == "png" else "JPEG")
            samples.append(Sample(f"img{n:05d}", name, {ext: img, "cls": str(label).encode()}))
            labels.append(label)
            n += 1
        (directory / name).write_bytes(make_tar(samples))
        filenames.append(name)
    info = {
        "name": "tiny",
        "splits": {
            split: {
                "name": split,
                "num_samples": sum(sizes),
                "filenames": filenames,
                "shard_lengths": list(sizes),
            }
        },
    }
    (directory / "_info.json").write_text(json.dumps(info))
    return TimmDataset(root=str(directory), split=split, labels=labels)
