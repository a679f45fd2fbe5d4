"""The trust policy, in one place: what data read from somewhere may make cloudwds do.

Training data often comes from other people's buckets, so nothing read from a shard, spec,
manifest or index may run code unless the user says the data is trusted:

- **Pickles** (``.pyd``/``.pickle``/``.pkl``) go through :func:`load_pickle`, an unpickler that
  only rebuilds an allow-list of plain data types (built-in scalars and containers, a few
  standard-library value types, numpy arrays/dtypes/scalars, torch tensors). Anything else —
  ``os.system``, ``subprocess.Popen``, ``builtins.eval``/``getattr``, a class of the user's own —
  raises :class:`~cloudwds.errors.UnsafeInputError` naming the shard, the member and how to opt
  in (the unpickler and its allow-list are :mod:`cloudwds.safepickle`). Full pickle needs
  ``trusted=True`` (an argument) or ``WDS_TRUSTED=1`` (process-wide).
- **torch files** (``.pth``) go through :func:`load_torch`: ``torch.load(weights_only=True)``
  unless trusted. webdataset's ``WDS_PYTORCH_WEIGHTS_ONLY`` is not consulted: the default is
  weights-only regardless (a deliberate difference).
- **pipe: commands** are accepted only from the user's own code, arguments and environment
  (``WDS_REWRITE``...). URLs read from data are checked by their loader with
  :func:`check_data_url` (no ``pipe:``), and every rewrite is checked by :func:`check_rewrite`
  (wired into :func:`cloudwds.urls.apply_rewrites`): a URL containing shell syntax is never
  substituted into a ``pipe:`` command, whoever supplied it, because once it is there nobody can
  tell any more whether the ``;`` came from the user or from a spec.
- ``WDS_SECURE=1`` (or :func:`set_secure`) additionally refuses full pickle and full torch loads
  even when trusted, and every ``pipe:`` URL, also from the user's own code (as webdataset's
  ``enforce_security``); the allow-listed unpickler and weights-only torch loads still work.

Flags are read from the environment on each call unless set with :func:`set_secure` /
:func:`set_trusted` (``None`` goes back to the environment). Settings made with the functions
are per process: DataLoader workers started with ``spawn`` see the environment only.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections.abc import Iterable
from typing import Any

from .errors import UnsafeInputError
from .safepickle import OPT_IN as OPT_IN
from .safepickle import _AllowListUnpickler, _first_line, _Refused
from .safepickle import allowed_global as allowed_global

__all__ = [
    "USER",
    "check_data_url",
    "check_pipe_allowed",
    "check_rewrite",
    "has_shell_syntax",
    "is_secure",
    "is_trusted",
    "load_pickle",
    "load_torch",
    "set_secure",
    "set_trusted",
    "torch_loads",
    "unpickle_loads",
]

USER = "user"
"""``origin`` of URLs the user wrote (code, arguments, environment): ``pipe:`` allowed."""

# webdataset's wording, matched by its test-suite and by users' except-clauses.
SECURE_PICKLE = "Unpickling is not allowed for security reasons when enforce_security is set"
SECURE_TORCH = "torch.loads is not allowed for security reasons when enforce_security is set"
SECURE_PIPE = "cannot open pipe URLs when WDS_SECURE=1 (enforce_security is set)"

_TRUE = frozenset(["1", "true", "yes", "on"])
_secure: bool | None = None
_trusted: bool | None = None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def is_secure() -> bool:
    """Whether security is enforced: :func:`set_secure`'s value, else ``WDS_SECURE=1``."""
    return _env_flag("WDS_SECURE") if _secure is None else _secure


def set_secure(flag: bool | None) -> None:
    """Enforce security in this process (``None``: follow ``WDS_SECURE`` again)."""
    global _secure
    _secure = None if flag is None else bool(flag)


def is_trusted() -> bool:
    """Whether all data is trusted: :func:`set_trusted`'s value, else ``WDS_TRUSTED=1``."""
    return _env_flag("WDS_TRUSTED") if _trusted is None else _trusted


def set_trusted(flag: bool | None) -> None:
    """Trust every pickle and torch file in this process (``None``: follow ``WDS_TRUSTED``)."""
    global _trusted
    _trusted = None if flag is None else bool(flag)


# ---------------------------------------------------------------------------------------------
# pickles
# ---------------------------------------------------------------------------------------------


def load_pickle(
    data: bytes,
    *,
    trusted: bool | None = None,
    url: str | None = None,
    member: str | None = None,
) -> Any:
    """Unpickle ``data``: allow-listed types only, unless trusted (argument, else WDS_TRUSTED).

    Trusted data is loaded with plain ``pickle.loads``, except under :func:`is_secure`, which
    refuses it. Refusals raise :class:`UnsafeInputError` naming ``url`` and ``member``.
    """
    if trusted is None:
        trusted = is_trusted()
    if trusted:
        if is_secure():
            raise UnsafeInputError(
                f"{SECURE_PICKLE} (WDS_SECURE=1): full unpickling refused even for trusted data "
                "(unset WDS_SECURE to allow it)",
                url=url,
                member=member,
            )
        return pickle.loads(data)
    try:
        return _AllowListUnpickler(bytes(data), url, member).load()
    except _Refused as exn:
        raise UnsafeInputError(
            f"refused to unpickle: {exn}; {OPT_IN}", url=url, member=member
        ) from None


def load_torch(
    data: bytes,
    *,
    trusted: bool | None = None,
    url: str | None = None,
    member: str | None = None,
) -> Any:
    """``torch.load`` onto the CPU: ``weights_only=True`` unless trusted; full load refused
    under :func:`is_secure`. A file the weights-only loader refuses raises
    :class:`UnsafeInputError` naming ``url`` and ``member`` and how to opt in.
    """
    import torch

    if trusted is None:
        trusted = is_trusted()
    if trusted:
        if is_secure():
            raise UnsafeInputError(
                f"{SECURE_TORCH} (WDS_SECURE=1): full torch.load refused even for trusted data "
                "(unset WDS_SECURE to allow it)",
                url=url,
                member=member,
            )
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exn:
        if "weights only" not in str(exn).lower():
            raise
        raise UnsafeInputError(
            "refused to load: torch.load(weights_only=True) rejects this file, which needs a "
            f"full unpickle that could run code ({_first_line(exn)}); {OPT_IN}",
            url=url,
            member=member,
        ) from None


def unpickle_loads(data: bytes) -> Any:
    """webdataset's ``unpickle_loads``: refused under :func:`is_secure`, else :func:`load_pickle`."""
    if is_secure():
        raise UnsafeInputError(SECURE_PICKLE)
    return load_pickle(data)


def torch_loads(data: bytes) -> Any:
    """webdataset's ``torch_loads``: refused under :func:`is_secure`, else :func:`load_torch`."""
    if is_secure():
        raise UnsafeInputError(SECURE_TORCH)
    return load_torch(data)


# ---------------------------------------------------------------------------------------------
# pipe: and shell syntax
# ---------------------------------------------------------------------------------------------

# Characters that mean nothing to a POSIX shell inside a word. Everything else (; | & $ ` < >
# ( ) { } [ ] * ? ! # quotes, backslash, whitespace, control characters, non-ASCII) is refused.
_SHELL_INERT = re.compile(r"[A-Za-z0-9_./:@%+=,~-]*\Z")


def has_shell_syntax(url: str) -> bool:
    """Whether ``url`` would mean more than one plain word if pasted into a shell command.

    A leading ``-`` counts too: it would be taken as an option of the command (``curl -o``).
    """
    return _SHELL_INERT.match(url) is None or url.startswith("-")


def check_pipe_allowed(url: str, *, origin: str = USER, hint: str = "") -> None:
    """Raise :class:`UnsafeInputError` unless ``url`` may be run as a ``pipe:`` command.

    ``origin`` says where the URL came from: :data:`USER` for the user's own code, arguments and
    environment; anything else describes data (``"spec s3://b/train.yaml dataset[0]"``) and a
    ``pipe:`` URL from there is refused. Under :func:`is_secure` every ``pipe:`` is refused.
    Non-``pipe:`` URLs always pass. ``hint`` is appended to the message (how to opt in).
    """
    if not url.startswith("pipe:"):
        return
    if is_secure():
        raise UnsafeInputError(SECURE_PIPE, url=url)
    if origin != USER:
        raise UnsafeInputError(
            f"refused a pipe: URL read from {origin}: pipe: runs a shell command, and commands "
            "are only accepted from your own code, arguments and environment, never from data"
            + (f" ({hint})" if hint else ""),
            url=url,
        )


def check_rewrite(
    url: str, rewritten: str, *, template: str | None = None, origin: str | None = None
) -> None:
    """Refuse a rewrite that pastes a URL with shell syntax into a ``pipe:`` command.

    ``WDS_REWRITE='http://H/=pipe:curl -s http://H/'`` turns ``http://H/a.tar;touch M;#`` into
    a command running ``touch M``. Called for every rewrite (:func:`cloudwds.urls.apply_rewrites`),
    whatever the URL's origin: after substitution no one can tell any more where a ``;`` came
    from. ``pipe:`` URLs written as such are not affected (they are commands already).

    With the rule's replacement as ``template``, a word of the command that starts with ``-``
    and is not a word of the template is refused too: a rule ending in a space
    (``^/d/=pipe:curl -s ``) would otherwise let ``/d/-K/tmp/x`` pass curl an option.
    """
    if not rewritten.startswith("pipe:") or url.startswith("pipe:"):
        return
    where = f" read from {origin}" if origin else ""
    if has_shell_syntax(url):
        raise UnsafeInputError(
            f"refused to rewrite the URL{where} into the pipe: command {rewritten!r}: the URL "
            "contains shell syntax (characters outside A-Z a-z 0-9 _ . / : @ % + = , ~ -, or a "
            "leading -) that the shell would run; rename the shard, or write the pipe: "
            "command yourself",
            url=url,
        )
    if template is not None:
        own = set(template.split())
        options = [w for w in rewritten[len("pipe:") :].split() if w[0] == "-" and w not in own]
        if options:
            raise UnsafeInputError(
                f"refused to rewrite the URL{where} into the pipe: command {rewritten!r}: part "
                f"of the URL would become the option {options[0]!r} of the command; rename the "
                "shard, or write the pipe: command yourself",
                url=url,
            )


def check_data_url(url: str, *, origin: str, rewrites: Iterable[Any] = (), hint: str = "") -> None:
    """The check every loader of URLs from data (spec, manifest, index) runs on each URL.

    Refuses ``pipe:`` URLs (:func:`check_pipe_allowed` with ``origin``) and URLs that a rule
    of ``rewrites`` (:class:`cloudwds.urls.Rewrite` objects, first match wins) would turn into
    a ``pipe:`` command while they contain shell syntax (:func:`check_rewrite`), so the problem
    shows when the spec or manifest is loaded, before anything is opened.
    """
    check_pipe_allowed(url, origin=origin, hint=hint)
    for rule in rewrites:
        rewritten = rule.apply(url)
        if rewritten is not None:
            check_rewrite(url, rewritten, template=rule.replacement, origin=origin)
            return
