"""``cloudwds reshard``: re-split a shard set into shards of at most N samples or S bytes.

Samples are copied byte for byte (no decoding); within a sample, members are written in sorted
field order (as :class:`~cloudwds.writer.ShardWriter` writes them) and field names come out
lowercased, as every reader sees them. Without ``--shuffle`` the sample order is kept.
``--shuffle`` permutes the input shards and passes samples through a shuffle buffer of
``--buffer`` samples, deterministically from ``--seed``: a strong local shuffle, not a global
permutation (that would need the whole dataset in memory).

``--dask`` writes the output shards as one task each. The plan is fixed before anything is
written — output ``k`` holds samples ``[k*N, (k+1)*N)`` of the inputs in order, ``N`` being
``--maxcount``, exactly where the sequential writer cuts — from the inputs' sample counts (the
manifest next to them, else a counting pass on the cluster), so a re-run maps the same inputs
to the same outputs and skips those already written (outputs are published atomically). Cuts
by ``--maxsize`` and ``--shuffle`` depend on every sample before them, so they stay sequential.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections.abc import Iterator
from typing import Any

from ..index import find_index, scan_shard
from ..samples import Sample, tar_samples
from ..stages import shuffle
from ..storage import StorageConfig, open_shard
from ..world import World
from ..writer import ShardWriter, TarWriter
from ._common import (
    CommandError,
    default_workers,
    note,
    parse_size,
    positive_int,
    progress,
    quiet,
    shard_urls,
    storage_from_args,
    write_out,
)
from ._dask import add_dask_options, fix_swallowed_url, print_summary, scheduler_of


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
    p.add_argument("urls", nargs="*", metavar="URL", help="input shards or brace patterns")
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
    p.add_argument(
        "--workers",
        type=positive_int,
        default=default_workers(),
        help="with --dask and no ADDRESS: worker processes",
    )
    add_dask_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fix_swallowed_url(args)
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
    if args.dask is not None:
        counts = None
        if total is not None:
            assert manifest is not None
            counts = [info.samples for info in map(manifest.get, urls) if info is not None]
        return _reshard_on_dask(args, urls, storage, counts)

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


Piece = tuple[str, int, int, int]  # input URL, first sample, end (exclusive), its sample count


def plan_outputs(
    urls: list[str], counts: list[int], maxcount: int, pattern: str, start: int = 0
) -> list[tuple[str, list[Piece]]]:
    """Output shard URL → the input sample ranges it holds: consecutive runs of ``maxcount``
    samples of the inputs in order (the last one shorter), numbered from ``start``."""
    plan: list[tuple[str, list[Piece]]] = []
    pieces: list[Piece] = []
    room = maxcount
    for url, count in zip(urls, counts, strict=True):
        at = 0
        while at < count:
            take = min(room, count - at)
            pieces.append((url, at, at + take, count))
            at += take
            room -= take
            if room == 0:
                plan.append((pattern % (start + len(plan)), pieces))
                pieces, room = [], maxcount
    if pieces:
        plan.append((pattern % (start + len(plan)), pieces))
    return plan


def count_samples(url: str, storage: StorageConfig) -> int:
    """Samples in one shard, as readers group them (the counting pass's task)."""
    return scan_shard(url, storage, checksum=None).samples


def write_output(output: str, pieces: list[Piece], storage: StorageConfig) -> tuple[int, bool]:
    """Write one planned output shard; ``(samples, skipped)``. An output that exists is
    complete (published atomically) and skipped; an input holding fewer samples than planned
    is an error and leaves no output."""
    from ..offline import output_exists

    planned = sum(end - first for _, first, end, _ in pieces)
    if output_exists(output, storage):
        return planned, True
    with TarWriter(output, encoder=False, storage=storage) as out:
        for url, first, end, count in pieces:
            got = 0
            for sample in _piece(url, first, end, count, storage):
                out.write(sample)
                got += 1
            if got != end - first:
                raise ValueError(
                    f"{url}: {first + got} samples, planned {end} (changed since counted?)"
                )
    return planned, False


def _piece(url: str, first: int, end: int, count: int, storage: StorageConfig) -> Iterator[Sample]:
    """Samples ``[first, end)`` of one shard. A piece that starts inside the shard is read from
    its sample's offset when the shard has a current ``.idx`` (``cloudwds index``), so
    splitting a large shard into many outputs does not read its beginning once per output."""
    from ..sources.seek import StaleOffsetsError, open_at_sample

    seeked = open_at_sample(url, storage, first, count) if first > 0 else None
    if seeked is not None:
        try:
            with seeked.opened as opened:
                n = first
                for sample in seeked.verified(tar_samples(opened.stream, url, opened.local_path)):
                    if n >= end:
                        return
                    yield sample
                    n += 1
                return
        except StaleOffsetsError:
            pass  # raised before any sample: read the shard from its start instead
    with open_shard(url, storage) as opened:
        for n, sample in enumerate(tar_samples(opened.stream, url, opened.local_path)):
            if n >= end:
                return
            if n >= first:
                yield sample


def _reshard_on_dask(
    args: argparse.Namespace, urls: list[str], storage: StorageConfig, counts: list[int] | None
) -> int:
    from ..offline import run_jobs

    if args.shuffle or args.maxsize is not None:
        raise CommandError(
            "--dask cuts by --maxcount only, in input order: --shuffle and --maxsize depend on "
            "every sample before a cut (run them without --dask)"
        )
    options: dict[str, Any] = {
        "workers": args.workers,
        "progress": False if quiet(args) else None,
        **scheduler_of(args),
    }
    if counts is None:
        counted = run_jobs(
            count_samples, [(u, storage) for u in urls], urls, desc="count", **options
        )
        try:
            counted.raise_failures("cloudwds reshard")
        except Exception as exn:
            print_summary(exn)
            raise
        counts = [int(c or 0) for c in counted.results]
    plan = plan_outputs(urls, counts, args.maxcount, args.output, args.start)
    outcome = run_jobs(
        write_output,
        [(out, pieces, storage) for out, pieces in plan],
        [out for out, _ in plan],
        desc="reshard",
        **options,
    )
    skipped = 0
    for (out, _), result in zip(plan, outcome.results, strict=True):
        if result is not None:
            write_out(f"{out}\t{result[0]}")
            skipped += result[1]
    try:
        outcome.raise_failures("cloudwds reshard")
    except Exception as exn:
        print_summary(exn)
        raise
    note(
        args,
        f"wrote {len(plan) - skipped} shards ({skipped} already there), {sum(counts)} samples "
        f"from {len(urls)} input shards",
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
