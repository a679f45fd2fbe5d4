"""``cloudwds ls``: shards with their sizes, and sample counts when an index exists."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import ShardNotFoundError, StorageAccessError, StorageError
from ..index import ManifestError, find_index, load_index
from ..storage import StorageConfig
from ..storage.opening import remote_fetcher
from ..storage.target import resolve_target
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

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
SHARD_PATTERNS = tuple(f"*{suffix}" for suffix in SHARD_SUFFIXES)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "ls",
        parents=[common],
        help="list shards with sizes (and sample counts when an index exists)",
        description="List shards with their sizes, and their sample counts when a manifest "
        "(cloudwds-index.json in the shards' directory, or --index) lists them. A URL ending "
        "in '/' (or a local directory) lists the .tar/.tar.gz/.tgz files in it.",
    )
    p.add_argument("urls", nargs="+", metavar="URL", help="shards, brace patterns or directories")
    p.add_argument("--index", metavar="MANIFEST", help="read sample counts from this manifest")
    p.add_argument("--bytes", action="store_true", help="exact byte counts instead of 1.5M")
    p.add_argument("--workers", type=positive_int, default=default_workers(), help="parallel stats")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    storage = storage_from_args(args)
    urls: list[str] = []
    sizes: dict[str, int] = {}
    empty = 0
    for spec in args.urls:
        in_dir = _list_directory(spec, storage)
        if in_dir is None:
            urls.extend(shard_urls([spec]))
        elif not in_dir:
            print(
                f"cloudwds ls: error: no shards ({', '.join(SHARD_PATTERNS)}) in {spec}",
                file=sys.stderr,
            )
            empty += 1
        else:
            for url, nbytes in in_dir:
                urls.append(url)
                if nbytes is not None:  # a plain HTTP listing has no sizes: asked per shard
                    sizes[url] = nbytes
    manifest = None
    if args.index:
        manifest = load_index(args.index, storage)
    else:
        try:
            manifest = find_index(urls, storage)
        except ManifestError as exn:
            print(f"cloudwds ls: warning: ignoring index: {exn}", file=sys.stderr)

    def fmt(n: int | None) -> str:
        return str(n) if args.bytes and n is not None else human_size(n)

    total_bytes = total_samples = 0
    counted = 0
    failed = 0
    bar = progress(args, len(urls), "shard", "ls")
    with bar:
        results = per_shard(
            urls, lambda u: sizes[u] if u in sizes else _size(u, storage), args.workers, bar
        )
        if urls:
            write_out(f"{'samples':>10}  {'size':>10}  url")
        for url, size, error in results:
            if error is not None:
                print(f"cloudwds ls: error: {error}", file=sys.stderr)
                failed += 1
                continue
            info = manifest.get(url) if manifest is not None else None
            samples = "-" if info is None else str(info.samples)
            if info is not None:
                total_samples += info.samples
                counted += 1
            total_bytes += size or 0
            write_out(f"{samples:>10}  {fmt(size):>10}  {url}")
    ok = len(urls) - failed
    if len(urls) > 1:
        samples = str(total_samples) if counted == ok and ok else "-"
        if 0 < counted < ok:
            samples = f">={total_samples}"
        write_out(f"{samples:>10}  {fmt(total_bytes):>10}  total ({ok} shards)")
    return 1 if failed or empty else 0


def _size(url: str, storage: StorageConfig) -> int | None:
    """Size of the stored object; ``None`` for ``pipe:`` and stdin."""
    target = resolve_target(url, storage)
    if target.remote:
        reader = remote_fetcher(target, storage)()
        try:
            return int(reader.size)
        finally:
            reader.close()
    path = target.local_path
    if path is None:
        return None
    try:
        return os.path.getsize(path)
    except OSError as exn:
        raise OSError(f"{url}: {exn.strerror or exn}") from None


def _list_directory(spec: str, storage: StorageConfig) -> list[tuple[str, int | None]] | None:
    """Shards in a directory (``spec`` ends with ``/`` or is a local dir), else ``None``.

    Sizes are ``None`` where the listing does not give them (an HTTP server's index page).
    Listing errors name the URL: fsspec's own messages are often just a bare path.
    """
    if "{" in spec or "::" in spec or spec.startswith("pipe:") or spec == "-":
        return None
    target = resolve_target(spec, storage)
    path = target.local_path
    if path is not None:
        if not os.path.isdir(path):
            return None
        out: list[tuple[str, int | None]] = []
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if name.endswith(SHARD_SUFFIXES) and os.path.isfile(full):
                out.append((os.path.join(spec, name), os.path.getsize(full)))
        return out
    if not spec.endswith("/"):
        return None
    try:
        fs, fspath = target.backend.filesystem(target)  # AIStore-routed: no cloud options
        entries = fs.ls(fspath, detail=True)
    except FileNotFoundError as exn:
        raise ShardNotFoundError("cannot list: no such bucket or directory", spec) from exn
    except PermissionError as exn:
        raise StorageAccessError(f"cannot list: permission denied ({exn})", spec) from exn
    except OSError as exn:
        raise StorageError(f"cannot list: {type(exn).__name__}: {exn}", spec) from exn
    out = []
    for entry in sorted(entries, key=lambda e: e["name"]):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") != "directory" and name.endswith(SHARD_SUFFIXES):
            size = entry.get("size")
            out.append((spec + name, None if size is None else int(size)))
    return out
