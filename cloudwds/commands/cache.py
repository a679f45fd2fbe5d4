"""``cloudwds cache ls|stats|clear|prefetch``: inspect and manage a shard cache directory.

The directory is ``--cache-dir`` (or ``$WDS_CACHE``); ``--cache-size`` (or ``$WDS_CACHE_SIZE``)
sets the budget that ``prefetch`` respects. ``prefetch`` downloads synchronously, through the
same path a pipeline takes (:func:`~cloudwds.storage.open_shard` with the cache), so errors are
reported and the command returns once every shard is published.

The cache deletes only what it downloaded: ``clear`` leaves pre-populated shards and any other
file in the directory alone unless given ``--all``; ``ls`` marks the cache's own files with
the others (they neither count against the budget nor are evicted), and ``stats`` counts them
apart.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

from ..storage import StorageConfig, is_remote, open_shard
from ._common import (
    CommandError,
    default_workers,
    human_size,
    note,
    per_shard,
    positive_int,
    progress,
    shard_urls,
    storage_options,
    write_out,
)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "cache",
        parents=[common],
        help="inspect and manage a shard cache directory (ls, stats, clear, prefetch)",
        description="Inspect and manage the shard cache in --cache-dir (default $WDS_CACHE, else "
        "the per-user default cache that datasets use: $XDG_CACHE_HOME/cloudwds/shards or "
        "~/.cache/cloudwds/shards).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    size_help = (
        "cache budget such as 50G (default $WDS_CACHE_SIZE, else unbounded for --cache-dir and "
        "min(10 GiB, 10%% of free space) for the default cache)"
    )

    ls = actions.add_parser(
        "ls",
        parents=[common],
        help="list the files: size, last use, URL, path; files the cache did not download are "
        "marked (they are never evicted)",
    )
    ls.add_argument("--bytes", action="store_true", help="exact byte counts")
    ls.set_defaults(func=run_ls)

    stats = actions.add_parser(
        "stats", parents=[common], help="number of shards and bytes in the cache"
    )
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.add_argument("--cache-size", help=size_help)
    stats.set_defaults(func=run_stats)

    clear = actions.add_parser(
        "clear",
        parents=[common],
        help="delete the shards the cache downloaded (not in use right now)",
        description="Delete the shards the cache downloaded, except those in use right now. "
        "Pre-populated shards and other files in the directory are kept unless --all is given.",
    )
    clear.add_argument(
        "--all",
        action="store_true",
        help="also delete every other file under the cache directory (pre-populated shards, "
        "files of your own); the .cloudwds bookkeeping stays",
    )
    clear.set_defaults(func=run_clear)

    prefetch = actions.add_parser(
        "prefetch",
        parents=[common],
        help="download shards into the cache now",
        description="Download remote shards into the cache (local files are never cached).",
    )
    prefetch.add_argument("urls", nargs="+", metavar="URL", help="shards or brace patterns")
    prefetch.add_argument("--cache-size", help=size_help)
    prefetch.add_argument(
        "--workers", type=positive_int, default=default_workers(), help="parallel downloads"
    )
    prefetch.set_defaults(func=run_prefetch)


def _storage(args: argparse.Namespace) -> StorageConfig:
    cache_dir = getattr(args, "cache_dir", None)
    storage = StorageConfig.resolve(
        storage_options=storage_options(args),
        cache_dir=cache_dir,
        cache_size=getattr(args, "cache_size", None),
        prefetch=0,
    )
    if storage.cache is None:
        raise CommandError("no cache: WDS_CACHE is off; pass --cache-dir DIR")
    return storage


def run_ls(args: argparse.Namespace) -> int:
    cache = _storage(args).cache
    fmt = str if args.bytes else human_size
    for entry in cache.entries():
        when = datetime.datetime.fromtimestamp(entry.last_used).strftime("%Y-%m-%d %H:%M:%S")
        line = f"{fmt(entry.size):>10}  {when}  {entry.url or '?'}  {entry.path}"
        write_out(line if entry.owned else f"{line}  (not downloaded by the cache: kept)")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    cache = _storage(args).cache
    entries = cache.entries()
    total = sum(e.size for e in entries)
    owned = [e for e in entries if e.owned]
    owned_bytes = sum(e.size for e in owned)
    result = {
        "cache_dir": cache.cache_dir,
        "shards": len(entries),
        "bytes": total,
        "downloaded_shards": len(owned),
        "downloaded_bytes": owned_bytes,
        "other_files": len(entries) - len(owned),
        "other_bytes": total - owned_bytes,
        "budget": cache.cache_size,
        "unknown_url": sum(1 for e in entries if e.url is None),
        "oldest_use": min((e.last_used for e in entries), default=None),
        "newest_use": max((e.last_used for e in entries), default=None),
    }
    if args.json:
        write_out(json.dumps(result, indent=1))
        return 0
    budget = "unbounded" if cache.cache_size is None else human_size(cache.cache_size)
    write_out(f"cache dir    {cache.cache_dir}")
    write_out(f"shards       {len(entries)}")
    write_out(f"bytes        {total} ({human_size(total)})")
    write_out(
        f"downloaded   {len(owned)} shards, {owned_bytes} bytes "
        f"({human_size(owned_bytes)}; budget {budget})"
    )
    write_out(
        f"other files  {len(entries) - len(owned)}, {total - owned_bytes} bytes "
        "(pre-populated or yours: never evicted, not counted)"
    )
    for label, key in (("oldest use", "oldest_use"), ("newest use", "newest_use")):
        value = result[key]
        if value is not None:
            stamp = datetime.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
            write_out(f"{label:<12} {stamp}")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    cache = _storage(args).cache
    before = cache.entries()
    cache.clear(everything=args.all)
    after = cache.entries()
    freed = sum(e.size for e in before) - sum(e.size for e in after)
    note(args, f"removed {len(before) - len(after)} shards ({human_size(freed)})")
    in_use = sum(1 for e in after if e.owned or args.all)
    if in_use:
        note(args, f"{in_use} shards in use were kept")
    others = len(after) - in_use
    if others:
        note(args, f"{others} files the cache did not download were kept (--all removes them)")
    return 0


def run_prefetch(args: argparse.Namespace) -> int:
    storage = _storage(args)
    cache = storage.cache
    urls = shard_urls(args.urls)
    remote = [u for u in urls if is_remote(u, storage)]
    if len(remote) < len(urls):
        note(args, f"skipping {len(urls) - len(remote)} local shards (never cached)")

    def fetch(url: str) -> int:
        with open_shard(url, storage) as opened:
            n = 0
            while True:
                chunk = opened.stream.read(1 << 20)
                if not chunk:
                    return n
                n += len(chunk)

    failed = 0
    nbytes = 0
    with progress(args, len(remote), "shard", "prefetch") as bar:
        for _, size, error in per_shard(remote, fetch, args.workers, bar):
            if error is not None:
                failed += 1
                print(f"cloudwds cache prefetch: error: {error}", file=sys.stderr)
            else:
                nbytes += size or 0
    cache.wait()
    counters = cache.stats()
    note(
        args,
        f"prefetched {len(remote) - failed} shards ({human_size(nbytes)}): "
        f"{counters.get('downloads', 0)} downloaded, {counters.get('hits', 0)} already cached",
    )
    return 1 if failed else 0
