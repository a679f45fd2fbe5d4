"""``cloudwds cat`` / ``cloudwds head``: list samples (keys and member sizes) or dump one member."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from ..samples import Sample, tar_samples
from ..storage import StorageConfig, open_shard, write_output
from ._common import CommandError, positive_int, shard_urls, storage_from_args, write_out


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    for name, default_n, what in (
        ("cat", None, "every sample"),
        ("head", 10, "the first N samples (default 10)"),
    ):
        p = sub.add_parser(
            name,
            parents=[common],
            help=f"print {what}: key and member sizes, or dump one member's bytes",
            description=f"Print {what} of the shards, one line per sample: the key, then "
            "field:size for each member (with several shards, a '# URL' line starts each shard). "
            "With --field, write the raw bytes of that member of "
            "the sample --key (default: the first sample) to stdout or -o, e.g. "
            f"'cloudwds {name} shard.tar --key img001 --field jpg > img001.jpg'.",
        )
        p.add_argument("urls", nargs="+", metavar="URL", help="shards or brace patterns")
        p.add_argument(
            "-n", type=positive_int, default=default_n, metavar="N", help="stop after N samples"
        )
        p.add_argument("--key", help="only the sample with this key")
        p.add_argument("--field", help="dump this member's bytes (e.g. jpg, seg.png, json)")
        p.add_argument(
            "-o", "--output", metavar="URL", help="with --field: write the bytes here (any URL)"
        )
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    storage = storage_from_args(args)
    urls = shard_urls(args.urls)
    if args.output and not args.field:
        raise CommandError("-o/--output needs --field")
    if args.field:
        return _dump(args, urls, storage)
    shown = 0
    last_url = None
    for url, sample in _samples(urls, storage):
        if args.key is not None and sample["__key__"] != args.key:
            continue
        if len(urls) > 1 and url != last_url:
            write_out(f"# {url}")
            last_url = url
        fields = " ".join(f"{k}:{len(v)}" for k, v in sample.items() if not k.startswith("__"))
        write_out(f"{sample['__key__']}\t{fields}")
        shown += 1
        if args.n is not None and shown >= args.n:
            break
    if args.key is not None and shown == 0:
        raise CommandError(f"no sample with key {args.key!r} in {_where(urls)}")
    return 0


def _dump(args: argparse.Namespace, urls: list[str], storage: StorageConfig) -> int:
    field = args.field.lower().lstrip(".")
    for url, sample in _samples(urls, storage):
        if args.key is not None and sample["__key__"] != args.key:
            continue
        if field not in sample:
            have = ", ".join(k for k in sample if not k.startswith("__"))
            raise CommandError(
                f"sample {sample['__key__']!r} in {url} has no field {field!r} (fields: {have})"
            )
        data = sample[field]
        if args.output:
            write_output(args.output, data, storage)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        return 0
    if args.key is not None:
        raise CommandError(f"no sample with key {args.key!r} in {_where(urls)}")
    raise CommandError(f"no samples in {_where(urls)}")


def _samples(urls: list[str], storage: StorageConfig) -> Iterator[tuple[str, Sample]]:
    """Samples of each shard in turn; a shard is closed as soon as the caller stops."""
    for url in urls:
        with open_shard(url, storage) as opened:
            for sample in tar_samples(opened.stream, url, opened.local_path):
                yield url, sample


def _where(urls: list[str]) -> str:
    return urls[0] if len(urls) == 1 else f"{len(urls)} shards"
