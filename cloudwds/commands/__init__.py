"""The ``cloudwds`` subcommands, one module each; every module has ``register(sub, common)``.

Subcommands are thin: they parse arguments, call library code (:mod:`cloudwds.index`,
:mod:`cloudwds.storage`, :mod:`cloudwds.writer`, :mod:`cloudwds.cache`) and print results.
Results go to stdout, progress bars and summaries to stderr.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import cache, create, indexing, listing, reshard, show, stats, verify
from ._common import CommandError, add_global_options, common_parent

__all__ = ["CommandError", "add_global_options", "register_all"]

_MODULES = (listing, show, stats, indexing, verify, create, reshard, cache)


def register_all(sub: Any) -> None:
    """Add every subcommand (except ``demo``) to the subparsers action ``sub``."""
    common: argparse.ArgumentParser = common_parent()
    for module in _MODULES:
        module.register(sub, common)
