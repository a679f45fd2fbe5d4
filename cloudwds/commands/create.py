"""``cloudwds create``: build a shard from a recipe, like ``tarp create``.

A recipe has one member per line: ``archive-name source``, separated by whitespace. The source
is a file path (relative to ``-C DIR``, default the current directory) or any URL the storage
layer reads, ``text:...`` (the rest of the line, verbatim, as the member's bytes) or
``pipe:CMD`` (the stdout of a shell command run in ``-C DIR``; a non-zero exit is an error).
Blank lines and lines starting with ``#`` are skipped. Members are written in recipe order.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
from typing import Any

from ..security import check_pipe_allowed
from ..storage import StorageConfig, open_output, open_shard
from ..storage.local import local_path_of
from ..tario import TarStreamWriter
from ._common import CommandError, human_size, note, storage_from_args


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "create",
        parents=[common],
        help="build a shard from a recipe of 'archive-name source' lines (like tarp create)",
        description="Build a tar shard from a recipe with one line per member: "
        "'archive-name source', where source is a file (or any URL), 'text:...' (literal "
        "bytes) or 'pipe:CMD' (a shell command's stdout). '#' starts a comment line. The "
        "output may be any URL ('-' for stdout); a .tar.gz/.tgz name is gzipped.",
    )
    p.add_argument("recipe", metavar="RECIPE", help="recipe file or URL ('-' for stdin)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="shard to write")
    p.add_argument(
        "-C",
        "--directory",
        metavar="DIR",
        default=".",
        help="resolve relative file sources and run pipe: commands here (default: .)",
    )
    p.add_argument(
        "--mtime",
        type=float,
        default=None,
        help="modification time stored in every header (default: now)",
    )
    p.set_defaults(func=run)


def parse_recipe(text: str, recipe: str) -> list[tuple[int, str, str]]:
    """``(line number, archive name, source)`` for each member line of a recipe."""
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise CommandError(f"{recipe}:{lineno}: expected 'archive-name source', got {raw!r}")
        name, source = parts
        if source.startswith("text:"):  # keep the text verbatim, inner spaces included
            source = raw.lstrip().split(None, 1)[1].rstrip("\r\n")
        out.append((lineno, name, source))
    return out


def run(args: argparse.Namespace) -> int:
    storage = storage_from_args(args)
    text = _read_recipe(args.recipe, storage)
    lines = parse_recipe(text, args.recipe)
    if not lines:
        raise CommandError(f"{args.recipe}: recipe has no members")
    sink: Any = open_output(args.output, storage)
    gz: gzip.GzipFile | None = None
    if args.output.endswith((".gz", ".tgz")):
        gz = gzip.GzipFile(fileobj=sink, mode="wb", mtime=0)
    tar = TarStreamWriter(gz if gz is not None else sink, mtime=args.mtime)
    try:
        for lineno, name, source in lines:
            data = _source_bytes(source, args.directory, storage, f"{args.recipe}:{lineno}")
            tar.add(name, data)
        tar.finish()
        if gz is not None:
            gz.close()
    except BaseException:
        sink.abort()
        raise
    sink.commit()
    if args.output != "-":
        size = human_size(tar.bytes_written) + (" uncompressed" if gz is not None else "")
        note(args, f"wrote {args.output}: {len(lines)} members, {size}")
    return 0


def _read_recipe(recipe: str, storage: StorageConfig) -> str:
    if recipe == "-":
        return sys.stdin.read()
    with open_shard(recipe, storage) as opened:
        data: bytes = opened.stream.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exn:
        raise CommandError(f"{recipe}: recipe is not UTF-8 text: {exn}") from None


def _source_bytes(source: str, directory: str, storage: StorageConfig, where: str) -> bytes:
    if source.startswith("text:"):
        return source[len("text:") :].encode("utf-8")
    if source.startswith("pipe:"):
        check_pipe_allowed(source)  # a recipe is the user's own; only WDS_SECURE=1 refuses it
        cmd = source[len("pipe:") :]
        proc = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, cwd=directory)
        if proc.returncode != 0:
            raise CommandError(f"{where}: command exited with status {proc.returncode}: {cmd!r}")
        return proc.stdout
    path = local_path_of(source)
    if path is not None:
        path = os.path.join(directory, os.path.expanduser(path))
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exn:
            raise CommandError(f"{where}: cannot read {source!r}: {exn.strerror or exn}") from None
    with open_shard(source, storage) as opened:
        content: bytes = opened.stream.read()
    return content
