"""Shard URL syntax: brace expansion, ``a::b`` lists, and regex rewrites (``WDS_REWRITE``).

Everything here is a pure function of its arguments; the environment is read only by
:func:`rewrites_from_env`, which public entry points call once and pass down explicitly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import braceexpand

from .security import check_rewrite


def expand_urls(urls: str | Iterable[str]) -> list[str]:
    """Turn a URL spec into a list of shard URLs.

    A string is split on ``::`` (webdataset's list separator), ``${NAME}`` is replaced by the
    environment variable ``WDS_NAME`` (:func:`envsubst`), and each part is brace-expanded
    (``shard-{000000..000009}.tar``); a list is expanded element by element (see
    :func:`shard_list` for webdataset's literal lists). ``pipe:`` commands are not brace-expanded
    inside the command, except that the whole spec is, as in webdataset.
    """
    if isinstance(urls, os.PathLike):
        urls = os.fspath(urls)
    if isinstance(urls, str):
        parts = [envsubst(p) for p in urls.split("::") if p]
    else:
        parts = [os.fspath(u) if isinstance(u, os.PathLike) else u for u in urls]
    result: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"shard URL must be a string, got {type(part).__name__}: {part!r}")
        result.extend(braceexpand.braceexpand(part))
    return result


def shard_list(urls: str | os.PathLike[str] | Iterable[str]) -> list[str]:
    """webdataset's rule for shard lists: a string is expanded, a list is taken literally.

    ``SimpleShardList(["a-{0..1}.tar"])`` reads a shard named ``a-{0..1}.tar``, as webdataset
    does; pass a string (``"a-{0..1}.tar"``) or :func:`expand_urls` for brace expansion.
    """
    if isinstance(urls, (str, os.PathLike)):
        return expand_urls(os.fspath(urls))
    result = [os.fspath(u) if isinstance(u, os.PathLike) else u for u in urls]
    for url in result:
        if not isinstance(url, str):
            raise TypeError(f"shard URL must be a string, got {type(url).__name__}: {url!r}")
    return result


_ENV_REF = re.compile(r"\$\{(\w+)\}")


def envlookup(m: re.Match[str]) -> str:
    """The value of ``WDS_<name>`` for a ``${name}`` match; a missing variable is an error."""
    key = "WDS_" + m.group(1)
    if key not in os.environ:
        raise ValueError(f"missing environment variable {key} for ${{{m.group(1)}}} in a shard URL")
    return os.environ[key]


def envsubst(s: str) -> str:
    """Replace ``${name}`` by ``$WDS_name`` (repeatedly, up to 10 levels, as webdataset does)."""
    for _ in range(10):
        last = s
        s = _ENV_REF.sub(envlookup, s)
        if s == last:
            break
    return s


@dataclass(frozen=True)
class Rewrite:
    """One ``regex=replacement`` rule; ``replacement`` may use ``\\1`` group references."""

    pattern: str
    replacement: str

    def apply(self, url: str) -> str | None:
        """Return the rewritten URL, or None when the pattern does not match."""
        compiled = _compile(self.pattern)
        if compiled.search(url) is None:
            return None
        return compiled.sub(self.replacement, url, count=1)


_COMPILED: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    compiled = _COMPILED.get(pattern)
    if compiled is None:
        compiled = _COMPILED[pattern] = re.compile(pattern)
    return compiled


def parse_rewrites(spec: str) -> tuple[Rewrite, ...]:
    """Parse ``regex=replacement;regex=replacement`` (the ``WDS_REWRITE`` syntax).

    The first ``=`` of each rule separates pattern from replacement, so a replacement may
    contain ``=`` (e.g. ``pipe:curl -H a=b``), but a pattern may not.
    """
    rules = []
    for item in spec.split(";"):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"rewrite rule {item!r} has no '=' (expected regex=replacement)")
        pattern, replacement = item.split("=", 1)
        re.compile(pattern)  # fail early on a bad regex
        rules.append(Rewrite(pattern, replacement))
    return tuple(rules)


_DEFAULT_REWRITES: tuple[Rewrite, ...] = ()


def set_rewrites(rules: str | Sequence[tuple[str, str]] | None) -> None:
    """Set process-wide rewrites (Python counterpart of ``WDS_REWRITE``).

    Datasets capture the rules when they are constructed, so rules reach DataLoader workers
    even under ``spawn``. ``None`` clears them. Rules set here come before ``WDS_REWRITE``'s.
    """
    global _DEFAULT_REWRITES
    if rules is None:
        _DEFAULT_REWRITES = ()
    elif isinstance(rules, str):
        _DEFAULT_REWRITES = parse_rewrites(rules)
    else:
        _DEFAULT_REWRITES = tuple(Rewrite(p, r) for p, r in rules)


def rewrites_from_env(environ: Mapping[str, str] | None = None) -> tuple[Rewrite, ...]:
    """Rules from :func:`set_rewrites`, then ``WDS_REWRITE``, then the older ``GOPEN_REWRITE``."""
    env = os.environ if environ is None else environ
    rules = list(_DEFAULT_REWRITES)
    for name in ("WDS_REWRITE", "GOPEN_REWRITE"):
        if env.get(name):
            rules.extend(parse_rewrites(env[name]))
    return tuple(rules)


def apply_rewrites(url: str, rules: Sequence[Rewrite]) -> str:
    """Apply the first matching rule (first match wins); unmatched URLs pass through.

    A rule that would paste a URL containing shell syntax into a ``pipe:`` command raises
    :class:`~cloudwds.errors.UnsafeInputError` (:func:`cloudwds.security.check_rewrite`).
    """
    for rule in rules:
        rewritten = rule.apply(url)
        if rewritten is not None:
            check_rewrite(url, rewritten, template=rule.replacement)
            return rewritten
    return url


def url_scheme(url: str) -> str:
    """The scheme of a URL (``s3``, ``pipe``, ``file``...), or ``""`` for a local path or ``-``."""
    if url.startswith("pipe:"):
        return "pipe"
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", url)
    if match:
        return match.group(1).lower()
    if url.startswith("file:"):
        return "file"
    return ""
