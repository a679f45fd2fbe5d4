"""``cloudwds verify``: read every shard in full and report anything wrong; exit 1 on a problem.

Checked per shard: it opens; every tar header's checksum; the archive is complete (no member
cut short, end-of-archive marker present); no field repeated within a sample; no key that comes
back after other keys (readers would yield two samples with one key). With a manifest: the shard
is listed, and its stored size, sha256, sample and member counts match the entry.

A manifest given by URL is data like any other: a ``pipe:`` entry, or an entry with shell syntax
that a ``WDS_REWRITE`` to ``pipe:`` would paste into a command, is refused when the manifest is
loaded (:func:`cloudwds.security.check_data_url`), before any shard is opened.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..index import Manifest, ShardInfo, default_index_url, find_index, load_index
from ..storage import StorageConfig
from ._common import (
    CommandError,
    default_workers,
    note,
    per_shard,
    positive_int,
    progress,
    shard_urls,
    storage_from_args,
    write_out,
)
from ._scan import ShardReport, read_shard

AUTO = "auto"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "verify",
        parents=[common],
        help="read shards fully, report truncation, bad headers, checksum mismatches; "
        "exit 1 on any problem",
        description="Read every shard to the end, checking every tar header checksum, that the "
        "archive is complete, that no field repeats within a sample and that no key comes back "
        "after other keys. With --manifest, also compare each shard's size, sha256 and sample "
        "and member counts with the manifest ('--manifest' alone: cloudwds-index.json next to "
        "the shards; without URLs: every shard the manifest lists). Prints one line per "
        "problem and exits 1 if there was any.",
    )
    p.add_argument("urls", nargs="*", metavar="URL", help="shards or brace patterns")
    p.add_argument(
        "--manifest",
        nargs="?",
        const=AUTO,
        metavar="MANIFEST",
        help="compare with this manifest (no value: the default index next to the shards)",
    )
    p.add_argument(
        "--decode",
        action="store_true",
        help="also decode every member by its extension (images to pixels, json, npy...) and "
        "report the members that fail",
    )
    p.add_argument(
        "--workers", type=positive_int, default=default_workers(), help="shards read in parallel"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _fix_swallowed_url(args)
    storage = storage_from_args(args)
    if not args.urls and not args.manifest:
        raise CommandError("give shard URLs, or --manifest MANIFEST to verify the shards it lists")
    manifest = _manifest(args, storage)
    urls = shard_urls(args.urls) if args.urls else [s.url for s in manifest.shards]  # type: ignore[union-attr]
    checksum = "sha256" if manifest is not None else None

    def check(url: str) -> ShardReport:
        return read_shard(
            url, storage, checksum=checksum, verify_checksums=True, decode=args.decode
        )

    problems = 0
    bad_shards = 0
    samples = 0
    with progress(args, len(urls), "shard", "verify") as bar:
        for url, report, _ in per_shard(urls, check, args.workers, bar):
            assert report is not None
            found = _problems(report, manifest)
            samples += report.samples_readable
            if found:
                bad_shards += 1
                bar.clear()
                for text in found:
                    if text.startswith(" "):
                        write_out(text)  # an example for the problem above
                    else:
                        problems += 1
                        write_out(f"FAIL {url}: {text}")
    summary = f"verified {len(urls)} shards, {samples} samples{' read' if problems else ''}: "
    if problems:
        summary += f"{problems} problems in {bad_shards} shards"
        print(summary, file=sys.stderr)
        return 1
    note(args, summary + "ok")
    return 0


_SHARD_SUFFIXES = (".tar", ".tgz", ".tar.gz")


def _looks_like_shards(value: str) -> bool:
    """A shard URL or brace pattern, not a manifest: what ``--manifest`` must not swallow."""
    return value.endswith(_SHARD_SUFFIXES) or ("{" in value and ".." in value)


def _fix_swallowed_url(args: argparse.Namespace) -> None:
    """``--manifest 'x-{0..7}.tar'``: the optional value took the shards; give them back."""
    if args.manifest not in (None, AUTO) and _looks_like_shards(args.manifest):
        args.urls = [args.manifest, *args.urls]
        args.manifest = AUTO


def _manifest(args: argparse.Namespace, storage: StorageConfig) -> Manifest | None:
    if not args.manifest:
        return None
    if args.manifest != AUTO:
        try:
            return load_index(args.manifest, storage)
        except FileNotFoundError as exn:  # not "cannot open shard": it is the manifest
            raise CommandError(f"--manifest {args.manifest}: no such manifest") from exn
    if not args.urls:
        raise CommandError("--manifest without a value needs shard URLs to find the index by")
    found = find_index(shard_urls(args.urls), storage)
    if found is None:
        where = default_index_url(shard_urls(args.urls))
        raise CommandError(f"no manifest at {where} (run 'cloudwds index' first)")
    return found


def _problems(report: ShardReport, manifest: Manifest | None) -> list[str]:
    out = []
    if report.error is not None:
        readable = report.samples_readable
        out.append(
            f"{type(report.error).__name__}: {report.error} "
            f"({readable} sample{'' if readable == 1 else 's'} read before it; the last may be "
            "incomplete)"
        )
    if report.decode_failures:
        out.append(f"{report.decode_failures} members do not decode")
        out.extend(f"  e.g. {e}" for e in report.decode_examples)
    if report.duplicate_fields:
        out.append(f"{report.duplicate_fields} fields repeated within a sample")
    if report.split_keys:
        out.append(f"{report.split_keys} non-adjacent duplicate keys")
    if report.duplicate_fields or report.split_keys:
        out.extend(f"  e.g. {e}" for e in report.examples)
    if manifest is not None:
        entry = manifest.get(report.url)
        if entry is None:
            out.append("not listed in the manifest")
        elif report.info is not None:
            out.extend(_compare(report.info, entry))
    return out


def _compare(got: ShardInfo, expected: ShardInfo) -> list[str]:
    out = []
    if expected.sha256 and got.sha256 and got.sha256 != expected.sha256:
        out.append(f"sha256 mismatch: {got.sha256} (manifest {expected.sha256})")
    if got.bytes != expected.bytes:
        out.append(f"size mismatch: {got.bytes} bytes (manifest {expected.bytes})")
    if got.samples != expected.samples:
        out.append(f"sample count mismatch: {got.samples} (manifest {expected.samples})")
    if expected.members and got.members != expected.members:
        out.append(f"member count mismatch: {got.members} (manifest {expected.members})")
    return out
