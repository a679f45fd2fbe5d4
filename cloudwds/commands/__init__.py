"""The ``cloudwds`` subcommands, one module each; every module has ``register(sub, common)``.

Subcommands are thin: they parse arguments, call library code (:mod:`cloudwds.index`,
:mod:`cloudwds.storage`, :mod:`cloudwds.writer`, :mod:`cloudwds.cache`) and print results.
Results go to stdout, progress bars and summaries to stderr.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import Any

from ._common import CommandError, add_global_options, common_parent

__all__ = ["COMMANDS", "CommandError", "add_global_options", "command_of", "register_all"]

COMMANDS: dict[str, str] = {
    "ls": "listing",
    "cat": "show",
    "head": "show",
    "stats": "stats",
    "index": "indexing",
    "verify": "verify",
    "create": "create",
    "reshard": "reshard",
    "cache": "cache",
}
"""Subcommand name → the module in this package that registers it (in ``--help`` order)."""

_VALUED_GLOBALS = frozenset({"--storage-options", "--cache-dir"})  # options followed by a value


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (skipping global options and their values), if any."""
    words = iter(argv)
    for word in words:
        if word in _VALUED_GLOBALS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def register_all(sub: Any, only: str | None = None) -> None:
    """Add the subcommands (except ``demo``) to the subparsers action ``sub``.

    ``only`` names the subcommand being run: then only its module is imported, so a command
    pays for the libraries it uses and no others (``cloudwds ls`` never imports what ``reshard``
    needs). Without it (``--help``, a misspelt command) every module is imported, which is still
    cheap: none of them imports torch.
    """
    common: argparse.ArgumentParser = common_parent()
    modules = dict.fromkeys(COMMANDS.values())
    if only in COMMANDS:
        modules = {COMMANDS[only]: None}
    for name in modules:
        importlib.import_module(f".{name}", __name__).register(sub, common)
