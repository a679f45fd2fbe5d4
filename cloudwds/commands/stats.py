"""``cloudwds stats``: samples, bytes per field, missing and duplicate members, read in full."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from ._common import (
    default_workers,
    human_size,
    per_shard,
    positive_int,
    progress,
    shard_urls,
    storage_from_args,
    write_out,
)
from ._scan import read_shard


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "stats",
        parents=[common],
        help="read shards fully: samples, bytes per field, missing/duplicate members",
        description="Read every shard to the end and report the number of samples and members, "
        "the bytes and sample count of each field (extension), how many samples lack a field "
        "that other samples have, fields repeated within a sample, and keys that come back "
        "after other keys (non-adjacent duplicates). Exit status 1 if a shard cannot be read.",
    )
    p.add_argument("urls", nargs="+", metavar="URL", help="shards or brace patterns")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--workers", type=positive_int, default=default_workers(), help="shards read in parallel"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    storage = storage_from_args(args)
    urls = shard_urls(args.urls)
    field_bytes: Counter[str] = Counter()
    field_samples: Counter[str] = Counter()
    totals = Counter[str]()
    errors: list[str] = []
    examples: list[str] = []
    with progress(args, len(urls), "shard", "stats") as bar:
        for url, report, _ in per_shard(urls, lambda u: read_shard(u, storage), args.workers, bar):
            assert report is not None
            if report.error is not None:
                errors.append(f"{url}: {report.error}")
                print(f"cloudwds stats: error: {report.error}", file=sys.stderr)
                continue
            assert report.info is not None
            totals["shards"] += 1
            totals["samples"] += report.info.samples
            totals["members"] += report.info.members
            totals["bytes"] += report.info.bytes
            totals["duplicate_fields"] += report.duplicate_fields
            totals["split_keys"] += report.split_keys
            totals["unnamed_members"] += report.unnamed
            field_bytes.update(report.field_bytes)
            field_samples.update(report.field_samples)
            examples.extend(f"{url}: {e}" for e in report.examples)

    samples = totals["samples"]
    fields = {
        name: {
            "samples": field_samples[name],
            "missing": samples - field_samples[name],
            "bytes": field_bytes[name],
            "mean_bytes": field_bytes[name] / max(1, field_samples[name]),
        }
        for name in sorted(field_bytes)
    }
    result = {
        "shards": totals["shards"],
        "samples": samples,
        "members": totals["members"],
        "bytes": totals["bytes"],
        "fields": fields,
        "duplicate_fields": totals["duplicate_fields"],
        "non_adjacent_duplicate_keys": totals["split_keys"],
        "unnamed_members": totals["unnamed_members"],
        "unreadable_shards": len(errors),
        "errors": errors,
    }
    if args.json:
        write_out(json.dumps(result, indent=1))
        return 1 if errors else 0

    write_out(
        f"shards       {totals['shards']}" + (f" ({len(errors)} unreadable)" if errors else "")
    )
    write_out(f"samples      {samples}")
    write_out(f"members      {totals['members']}")
    write_out(f"bytes        {totals['bytes']} ({human_size(totals['bytes'])})")
    if fields:
        write_out("")
        write_out(f"{'field':<16} {'samples':>10} {'missing':>10} {'bytes':>14} {'mean':>10}")
        for name, f in fields.items():
            write_out(
                f"{name:<16} {f['samples']:>10} {f['missing']:>10} {f['bytes']:>14} "
                f"{human_size(round(f['mean_bytes'])):>10}"
            )
    write_out("")
    write_out(f"duplicate fields in a sample    {totals['duplicate_fields']}")
    write_out(f"non-adjacent duplicate keys     {totals['split_keys']}")
    if totals["unnamed_members"]:
        write_out(f"members without a field         {totals['unnamed_members']}")
    for example in examples[:10]:
        write_out(f"  e.g. {example}")
    return 1 if errors else 0
