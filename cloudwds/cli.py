"""The ``cloudwds`` command line.

Subcommands are thin: each parses arguments and calls library code (one module per subcommand
in :mod:`cloudwds.commands`). Errors print one line and exit non-zero instead of a traceback
(``--traceback`` shows it); usage errors exit 2, a closed stdout pipe exits 141.

Start-up is kept short: nothing here imports torch (``cloudwds/__init__`` imports names on
first use), and only the module of the subcommand being run is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .commands import add_global_options, command_of, register_all
from .commands._common import error_message


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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``argv``, only the subcommand it names is registered in full."""
    parser = argparse.ArgumentParser(
        prog="cloudwds", description="Stream WebDataset shards from anywhere."
    )
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_all(sub, command_of(sys.argv[1:] if argv is None else argv))

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
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    name = " ".join(filter(None, (args.command, getattr(args, "action", None))))
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (``cloudwds cat ... | head``): stop quietly, and keep Python's
        # exit-time flush of stdout from raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130
    except Exception as exn:
        if getattr(args, "traceback", False):
            raise
        print(f"cloudwds {name}: error: {error_message(exn)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
