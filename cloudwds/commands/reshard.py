"""``cloudwds reshard``: re-split a shard set into shards of at most N samples or S bytes.

Samples are copied byte for byte (no decoding); within a sample, members are written in sorted
field order (as :class:`~cloudwds.writer.ShardWriter` writes them) and field names come out
lowercased, as every reader sees them. Without ``--shuffle`` the sample order is kept.
``--shuffle`` permutes the input shards and passes samples through a shuffle buffer of
``--buffer`` samples, deterministically from ``--seed``: a strong local shuffle, not a global
permutation (that would need the whole dataset in memory).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections.abc import Iterator
from typing import Any

from ..index import find_index
from ..samples import Sample, tar_samples
from ..stages import shuffle
from ..storage import StorageConfig, open_shard
from ..world import World
from ..writer import ShardWriter
from ._common import (
    CommandError,
    note,
    parse_size,
    positive_int,
    progress,
    shard_urls,
    storage_from_args,
    write_out,
)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "reshard",
        parents=[common],
        help="re-split shards into shards of --maxcount samples / --maxsize bytes, to any URL",
        description="Copy every sample of the input shards into new shards named by PATTERN "
        "(a %d field numbers them: out-%06d.tar, s3://bucket/small-%06d.tar), starting a new "
        "shard when the current one holds --maxcount samples or --maxsize bytes. Prints each "
        "new shard and its sample count.",
    )
    p.add_argument("urls", nargs="+", metavar="URL", help="input shards or brace patterns")
    p.add_argument("-o", "--output", required=True, metavar="PATTERN", help="e.g. out-%%06d.tar")
    p.add_argument("--maxcount", type=positive_int, help="samples per output shard")
    p.add_argument("--maxsize", type=parse_size, help="bytes per output shard (e.g. 100M, 1G)")
    p.add_argument("--shuffle", action="store_true", help="shuffle shards and samples")
    p.add_argument(
        "--buffer",
        type=positive_int,
        default=10000,
        help="with --shuffle: samples held in the shuffle buffer (default 10000)",
    )
    p.add_argument("--seed", type=int, default=0, help="with --shuffle: random seed (default 0)")
    p.add_argument(
        "--start", type=int, default=0, help="number of the first output shard (default 0)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.maxcount is None and args.maxsize is None:
        raise CommandError("give --maxcount and/or --maxsize")
    try:
        args.output % 0
    except TypeError:
        raise CommandError(
            f"output pattern {args.output!r} needs one %d-style field (e.g. out-%06d.tar)"
        ) from None
    storage = storage_from_args(args)
    urls = shard_urls(args.urls)
    _refuse_overwrite(args.output, urls)

    total = None
    manifest = find_index(urls, storage)
    if manifest is not None and manifest.covers(urls):
        total = sum(info.samples for info in map(manifest.get, urls) if info is not None)

    samples: Iterator[Sample]
    if args.shuffle:
        urls = list(urls)
        random.Random(args.seed).shuffle(urls)
        stage = shuffle(args.buffer, initial=args.buffer, seed=args.seed)
        samples = stage.apply(_read(urls, storage), World(seed=args.seed))
    else:
        samples = _read(urls, storage)

    written: list[tuple[str, int]] = []
    done = [0]

    def post(url: str) -> None:
        count = writer.total - done[0]
        done[0] = writer.total
        written.append((url, count))
        bar.clear()
        write_out(f"{url}\t{count}")

    writer = ShardWriter(
        args.output,
        maxcount=args.maxcount or sys.maxsize,
        maxsize=args.maxsize or float("inf"),
        post=post,
        start_shard=args.start,
        storage=storage,
        encoder=False,
    )
    with progress(args, total, "sample", "reshard") as bar, writer:
        for sample in samples:
            writer.write(sample)
            bar.update(1)
    note(
        args,
        f"wrote {len(written)} shards, {writer.total} samples from {len(urls)} input shards",
    )
    return 0


def _read(urls: list[str], storage: StorageConfig) -> Iterator[Sample]:
    for url in urls:
        with open_shard(url, storage) as opened:
            yield from tar_samples(opened.stream, url, opened.local_path)


def _refuse_overwrite(pattern: str, inputs: list[str]) -> None:
    """Refuse an output pattern that could name one of the input shards."""
    pieces = re.split(r"%[-+ #0]*\d*d", pattern)
    regex = r"\d+".join(re.escape(p.replace("%%", "%")) for p in pieces)
    for url in inputs:
        if re.fullmatch(regex, url):
            raise CommandError(
                f"output pattern {pattern!r} could overwrite input shard {url!r}; "
                "write to another name or directory"
            )
