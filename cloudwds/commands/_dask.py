"""``--dask [ADDRESS]`` and ``--job-dir`` for the commands whose per-shard work can run on Dask
(``index``, ``verify``, ``reshard``; see :mod:`cloudwds.offline`)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

LOCAL = "local"

_ADDRESS = re.compile(r"[\w.\-\[\]:]+:\d+")


def add_dask_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dask",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="run the per-shard work on Dask: the scheduler at ADDRESS (tcp://host:8786), or, "
        "without one, a LocalCluster of --workers processes started for the job. Finished "
        "shards are recorded under --job-dir, so a re-run only does the shards left",
    )
    p.add_argument(
        "--job-dir",
        metavar="URL",
        help="with --dask: where finished shards are recorded (any URL; default: a directory "
        "under ~/.cache/cloudwds/jobs named by the command's inputs; removed when done)",
    )


def is_address(value: str) -> bool:
    """A scheduler address (``tcp://host:8786``, ``host:8786``) rather than a shard URL."""
    if value == LOCAL:
        return True
    if "://" in value:
        return value.split("://", 1)[0] in ("tcp", "tls", "ucx", "inproc", "ws", "wss")
    return bool(_ADDRESS.fullmatch(value))


def fix_swallowed_url(args: argparse.Namespace) -> None:
    """``--dask 'x-{0..7}.tar'``: the optional value took a shard; give it back."""
    if args.dask is not None and not is_address(args.dask):
        args.urls = [args.dask, *args.urls]
        args.dask = LOCAL


def scheduler_of(args: argparse.Namespace) -> dict[str, Any]:
    """``scheduler=`` for :func:`cloudwds.offline.run_jobs` (``None``: a LocalCluster)."""
    return {"scheduler": None if args.dask == LOCAL else args.dask}


def print_summary(exn: BaseException) -> None:
    """Print the runner's note on a failed job (how many shards failed, which) to stderr: the
    command's one-line error shows only the first failure."""
    for text in getattr(exn, "__notes__", ()):
        if text.startswith("cloudwds "):
            print(text, file=sys.stderr)
