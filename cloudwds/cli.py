"""The ``cloudwds`` command line.

Subcommands are thin: each parses arguments and calls library code. Errors print one line
and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import CloudWdsError


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        data=args.data,
        nsamples=args.samples,
        maxcount=args.maxcount,
        batch_size=args.batch_size,
        workers=args.workers,
        epochs=args.epochs,
        quiet=args.quiet,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudwds", description="Stream WebDataset shards from anywhere."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="write a synthetic image dataset as shards and train a tiny model on it",
        description="Write a synthetic image dataset with ShardWriter (local folder by default), "
        "then train a small torch model for an epoch by streaming it through WebDataset and WebLoader.",
    )
    demo.add_argument(
        "--data",
        default="demo-data",
        help="folder or URL prefix for the shards (default: ./demo-data)",
    )
    demo.add_argument("--samples", type=int, default=4000, help="number of samples to write")
    demo.add_argument("--maxcount", type=int, default=500, help="samples per shard")
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    demo.add_argument("--epochs", type=int, default=1)
    demo.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (CloudWdsError, OSError, ValueError) as exn:
        print(f"cloudwds {args.command}: error: {exn}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
