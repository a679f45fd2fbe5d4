"""Misspelt keyword arguments: say which public function refused them, and what was meant.

Public entry points such as :class:`~cloudwds.WebDataset` forward ``**kwargs`` to internal
functions (``StorageConfig.resolve``). Python's own ``TypeError`` would then name the internal
function, and a newcomer who typed ``shardshufle=True`` learns nothing useful. The check runs
where the user's call lands, names that public function and suggests the closest accepted name
(:mod:`difflib`).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["check_keywords", "unexpected_keyword"]

_NOT_KEYWORDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _keywords(function: Callable[..., Any]) -> list[str]:
    """The names ``function`` accepts as keywords (not ``self``/``cls``, not ``*``/``**``)."""
    return [
        name
        for name, p in inspect.signature(function).parameters.items()
        if p.kind not in _NOT_KEYWORDS
        and p.kind != inspect.Parameter.POSITIONAL_ONLY
        and name not in ("self", "cls")
    ]


def unexpected_keyword(owner: str, name: str, candidates: Iterable[str]) -> TypeError:
    """``TypeError: owner() got an unexpected keyword argument 'x'; did you mean 'y'?``"""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return TypeError(f"{owner}() got an unexpected keyword argument {name!r}{hint}")


def check_keywords(
    owner: str,
    forwarded: Iterable[str],
    target: Callable[..., Any],
    public: Callable[..., Any] | None = None,
    exclude: Iterable[str] = (),
) -> None:
    """Raise :func:`unexpected_keyword` for the first of ``forwarded`` that ``target`` refuses.

    ``forwarded`` are the keywords ``owner`` (the public name, e.g. ``"WebDataset"``) passes on
    to ``target``; ``public`` is the function the user called, whose own parameters are also
    offered as suggestions (``shardshufle`` → ``shardshuffle``). ``exclude`` lists names of
    ``target`` that ``owner`` sets itself and the user must not pass through ``**kwargs``.
    """
    excluded = set(exclude)
    accepted = set(_keywords(target)) - excluded
    for name in forwarded:
        if name not in accepted:
            candidates = accepted | (set(_keywords(public)) if public is not None else set())
            raise unexpected_keyword(owner, name, candidates)
