"""``cloudwds verify``: read every shard in full and report anything wrong; exit 1 on a problem.

Checked per shard: it opens; every tar header's checksum; the archive is complete (no member
cut short, end-of-archive marker present); no field repeated within a sample; no key that comes
back after other keys (readers would yield two samples with one key). With a manifest: the shard
is listed, and its stored size, sha256, sample and member counts match the entry.

A manifest given by URL is data like any other: a ``pipe:`` entry, or an entry with shell syntax
that a ``WDS_REWRITE`` to ``pipe:`` would paste into a command, is refused when the manifest is
loaded (:func:`cloudwds.security.check_data_url`), before any shard is opened.

``--dask`` runs :func:`verify_one` per shard on a Dask cluster. Each shard's verdict is recorded
in a job directory as it arrives (:class:`cloudwds.offline.PartStore`), so a run that was
stopped, or that found problems, can be re-run and re-verifies only the shards without a clean
verdict (missing, with problems, or changed since — e.g. repaired); the report is the same as
without ``--dask``. The records are removed when every shard is clean, so the next run after
that is a full check again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ..index import Manifest, ShardInfo, default_index_url, find_index, load_index
from ..storage import StorageConfig
from ._common import (
    CommandError,
    default_workers,
    error_message,
    note,
    per_shard,
    positive_int,
    progress,
    quiet,
    shard_urls,
    storage_from_args,
    write_out,
)
from ._dask import add_dask_options, scheduler_of
from ._dask import fix_swallowed_url as _fix_swallowed_dask
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
    add_dask_options(p)
    p.set_defaults(func=run)


@dataclass
class Verdict:
    """One shard's verdict: the samples read and the report lines (none when it is sound)."""

    url: str
    samples: int
    lines: list[str] = field(default_factory=list)


def verify_one(
    url: str,
    storage: StorageConfig,
    checksum: str | None,
    decode: bool,
    entry: ShardInfo | None,
    with_manifest: bool,
) -> Verdict:
    """Read one shard fully and judge it (against its manifest ``entry`` when given); the
    per-shard task of both the threaded and the Dask path."""
    report = read_shard(url, storage, checksum=checksum, verify_checksums=True, decode=decode)
    return Verdict(url, report.samples_readable, _problems(report, entry, with_manifest))


def run(args: argparse.Namespace) -> int:
    _fix_swallowed_url(args)
    _fix_swallowed_dask(args)
    storage = storage_from_args(args)
    if not args.urls and not args.manifest:
        raise CommandError("give shard URLs, or --manifest MANIFEST to verify the shards it lists")
    manifest = _manifest(args, storage)
    urls = shard_urls(args.urls) if args.urls else [s.url for s in manifest.shards]  # type: ignore[union-attr]
    checksum = "sha256" if manifest is not None else None

    def check(url: str) -> Verdict:
        entry = manifest.get(url) if manifest is not None else None
        return verify_one(url, storage, checksum, args.decode, entry, manifest is not None)

    problems = 0
    bad_shards = 0
    samples = 0
    verdicts: Iterator[Verdict]
    bar_args = args if args.dask is None else argparse.Namespace(quiet=True)  # Dask shows its own
    with progress(bar_args, len(urls), "shard", "verify") as bar:
        if args.dask is not None:
            verdicts = iter(_verify_on_dask(args, urls, storage, manifest))
        else:
            verdicts = (
                v or Verdict(u, 0, [error_message(e or RuntimeError("no verdict"))])
                for u, v, e in per_shard(urls, check, args.workers, bar)
            )
        for verdict in verdicts:
            samples += verdict.samples
            if verdict.lines:
                bad_shards += 1
                bar.clear()
                for text in verdict.lines:
                    if text.startswith(" "):
                        write_out(text)  # an example for the problem above
                    else:
                        problems += 1
                        write_out(f"FAIL {verdict.url}: {text}")
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


def _verify_on_dask(
    args: argparse.Namespace, urls: list[str], storage: StorageConfig, manifest: Manifest | None
) -> list[Verdict]:
    """Every shard's verdict, in input order, from per-shard Dask tasks; clean verdicts of an
    earlier, interrupted run of the same command are reused while their shard is unchanged."""
    from ..offline import PartStore, default_job_dir, identity_matches, part_key, run_jobs
    from ..storage import object_identities

    checksum = "sha256" if manifest is not None else None
    where = manifest.url if manifest is not None else None
    parts = PartStore(args.job_dir or default_job_dir("verify", urls, where, args.decode), storage)
    keys = [part_key(u) for u in urls]
    found = parts.load(keys)
    identities = object_identities(urls, storage)
    entries = [manifest.get(u) if manifest is not None else None for u in urls]
    # what the verdict was judged against: a verdict against another manifest entry or
    # without --decode does not stand for this run
    against = [
        {
            "entry": asdict(e) if e is not None else None,
            "manifest": manifest is not None,
            "decode": args.decode,
        }
        for e in entries
    ]
    verdicts: list[Verdict | None] = [None] * len(urls)
    for i, url in enumerate(urls):
        part = found.get(keys[i])
        if part is None or part.get("url") != url or part.get("lines"):
            continue  # never verified, or with problems: verify again
        if part.get("against") != against[i]:
            continue
        if identity_matches(part.get("identity"), identities[i]):
            verdicts[i] = Verdict(url, int(part["samples"]))
    todo = [i for i, v in enumerate(verdicts) if v is None]

    calls = [
        (urls[i], storage, checksum, args.decode, entries[i], manifest is not None) for i in todo
    ]
    with parts.publisher() as put:

        def publish(k: int, verdict: Verdict) -> None:
            i = todo[k]
            verdicts[i] = verdict
            doc = {"url": verdict.url, "identity": identities[i], "against": against[i]}
            put(keys[i], {**doc, "samples": verdict.samples, "lines": verdict.lines})

        outcome = run_jobs(
            verify_one,
            calls,
            [urls[i] for i in todo],
            workers=args.workers,
            progress=False if quiet(args) else None,
            desc="verify",
            on_result=publish,
            **scheduler_of(args),
        )
    for k, exn in outcome.failures.items():  # the task itself died (e.g. its worker)
        verdicts[todo[k]] = Verdict(urls[todo[k]], 0, [error_message(exn)])
    done = [v for v in verdicts if v is not None]
    if not any(v.lines for v in done):
        parts.remove()  # all clean: the next verify checks everything again
    return done


def _problems(report: ShardReport, entry: ShardInfo | None, with_manifest: bool) -> list[str]:
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
    if with_manifest:
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
