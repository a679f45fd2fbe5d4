"""``cloudwds index``: write the manifest (per-shard sample counts, sizes, sha256) and offsets.

Offsets files (DALI ``wds2idx`` format, one ``.idx`` next to each shard) are written by default
in the same pass: they are what random access (:class:`cloudwds.IndexedWebDataset`) and DALI's
webdataset reader need. ``--no-offsets`` writes only the manifest. ``--dask`` reads the shards as per-shard tasks on a
Dask cluster, recording each finished shard so that a re-run reads only the shards left
(:func:`cloudwds.offline.index_shards`); the manifest is the same.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..index import Manifest, build_index, default_index_url
from ._common import (
    CommandError,
    default_workers,
    human_size,
    note,
    positive_int,
    quiet,
    shard_urls,
    storage_from_args,
    write_out,
)
from ._dask import add_dask_options, fix_swallowed_url, print_summary, scheduler_of


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "index",
        parents=[common],
        help="write a manifest: per-shard sample counts, sizes and sha256 checksums",
        description="Read every shard and write a manifest (JSON) with each shard's sample and "
        "member counts, stored size and sha256. The default output is cloudwds-index.json in "
        "the shards' common directory, where training code and 'cloudwds ls' find it. Shard "
        "URLs under the manifest's directory are stored relative to it. Each shard also gets "
        "an offsets file next to it (NAME.idx, DALI's wds2idx format) for random access; "
        "gzip-compressed shards are marked as having none.",
    )
    p.add_argument("urls", nargs="*", metavar="URL", help="shards or brace patterns")
    p.add_argument(
        "-o",
        "--output",
        metavar="URL",
        help="where to write the manifest (any URL; '-' for stdout; "
        "default: cloudwds-index.json next to the shards)",
    )
    p.add_argument(
        "--checksum",
        choices=("sha256", "none"),
        default="sha256",
        help="checksum to record (default sha256)",
    )
    p.add_argument(
        "--no-offsets",
        dest="offsets",
        action="store_false",
        help="do not write the per-shard offsets (.idx) files needed for random access",
    )
    p.add_argument(
        "--workers", type=positive_int, default=default_workers(), help="shards read in parallel"
    )
    add_dask_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fix_swallowed_url(args)
    storage = storage_from_args(args)
    urls = shard_urls(args.urls)
    output = args.output
    if output is None:
        try:
            output = default_index_url(urls)
        except ValueError as exn:
            raise CommandError(f"{exn}; pass -o MANIFEST") from None
    checksum = None if args.checksum == "none" else args.checksum
    show = False if quiet(args) else None
    manifest: Manifest
    if args.dask is not None:
        from ..offline import index_shards

        try:
            manifest = index_shards(
                urls,
                storage,
                checksum,
                args.offsets,
                workers=args.workers,
                job_dir=args.job_dir,
                output=None if output == "-" else output,
                progress=show,
                **scheduler_of(args),
            )
        except Exception as exn:
            print_summary(exn)
            raise
    else:
        manifest = build_index(
            urls, storage, checksum, progress=show, workers=args.workers, offsets=args.offsets
        )
    if output == "-":
        write_out(json.dumps(manifest.to_json(None), indent=1))
        return 0
    if args.dask is None:
        manifest.save(output, storage)
    note(
        args,
        f"wrote {output}: {len(manifest.shards)} shards, {manifest.total_samples} samples, "
        f"{human_size(manifest.total_bytes)}",
    )
    return 0
