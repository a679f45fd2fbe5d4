"""The trust policy, in one place: what data read from somewhere may make cloudwds do.

Training data often comes from other people's buckets, so nothing read from a shard, spec,
manifest or index may run code unless the user says the data is trusted:

- **Pickles** (``.pyd``/``.pickle``/``.pkl``) go through :func:`load_pickle`, an unpickler that
  only rebuilds an allow-list of plain data types (built-in scalars and containers, a few
  standard-library value types, numpy arrays/dtypes/scalars, torch tensors). Anything else —
  ``os.system``, ``subprocess.Popen``, ``builtins.eval``/``getattr``, a class of the user's own —
  raises :class:`~cloudwds.errors.UnsafeInputError` naming the shard, the member and how to opt
  in. Full pickle needs ``trusted=True`` (an argument) or ``WDS_TRUSTED=1`` (process-wide).
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

import _compat_pickle
import importlib
import io
import os
import pickle
import re
from collections.abc import Callable, Iterable
from typing import Any

from .errors import UnsafeInputError

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

OPT_IN = "pass trusted=True (e.g. .decode(trusted=True)) or set WDS_TRUSTED=1 if you trust it"

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

_ALLOWED_NAMES: dict[str, tuple[str, ...]] = {
    "builtins": (
        *("int", "float", "complex", "bool", "str", "bytes", "bytearray"),
        *("list", "tuple", "dict", "set", "frozenset", "slice", "range"),
        "object",  # copyreg._reconstructor(cls, object, None) in protocol 0-1 pickles
    ),
    "_codecs": ("encode",),  # protocol 0-2 bytes; only latin1 (see _codecs_encode)
    "copyreg": ("_reconstructor",),  # protocol 0-1 objects: calls allow-listed classes only
    "collections": ("OrderedDict", "defaultdict", "deque", "Counter"),
    "datetime": ("date", "time", "datetime", "timedelta", "timezone"),
    "decimal": ("Decimal",),
    "uuid": ("UUID", "SafeUUID"),
    "fractions": ("Fraction",),
    # numpy: exactly what ndarray/dtype/scalar pickles reference (1.x and 2.x module names).
    "numpy": ("ndarray", "dtype"),
    "numpy._core.multiarray": ("_reconstruct", "scalar"),
    "numpy.core.multiarray": ("_reconstruct", "scalar"),
    "numpy._core.numeric": ("_frombuffer",),
    "numpy.core.numeric": ("_frombuffer",),
    # torch: what pickle.dumps(tensor / Parameter) references; dtypes are added below.
    "torch": ("Size",),
    "torch._utils": ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter"),
    "torch.storage": ("_load_from_bytes",),
}
_ALLOWED = frozenset((m, n) for m, names in _ALLOWED_NAMES.items() for n in names)


class _Refused(pickle.UnpicklingError):
    """Raised by the stand-ins below; :func:`load_pickle` turns it into UnsafeInputError."""


def _safe_bytes_factory(kind: type) -> Callable[..., Any]:
    # bytes(n) / bytearray(n) with a huge n would allocate it: only rebuild from data.
    def make(*args: Any) -> Any:
        if args and not isinstance(args[0], (bytes, bytearray, str, list, tuple)):
            raise _Refused(f"{kind.__name__}() of a {type(args[0]).__name__} (allocation)")
        return kind(*args)

    make.__name__ = kind.__name__
    return make


def _codecs_encode(obj: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(text, "latin1"); no other codec.
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode is only allowed for latin1 text")
    return obj.encode("latin1")


def _load_storage_bytes(data: bytes) -> Any:
    """Safe stand-in for ``torch.storage._load_from_bytes`` (which does a *full* torch.load).

    The payload of a pickled tensor is a ``torch.save``d storage; the weights-only loader reads
    it without running code.
    """
    import torch

    if not isinstance(data, bytes):
        raise _Refused("torch.storage._load_from_bytes of something that is not bytes")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True)
    except pickle.UnpicklingError as exn:
        raise _Refused(
            "the torch storage inside it needs a full torch.load: " + _first_line(exn)
        ) from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise _Refused(f"torch.storage._load_from_bytes gave a {type(storage).__name__}")
    return storage


def _first_line(exn: BaseException) -> str:
    # torch's weights-only errors are paragraphs; the line naming the refused global matters.
    lines = [line.strip() for line in str(exn).splitlines() if line.strip()]
    for line in lines:
        if "unsupported" in line.lower():  # "Trying to load unsupported GLOBAL posix.system"
            return line
    return lines[0] if lines else type(exn).__name__


_SUBSTITUTES: dict[tuple[str, str], Callable[..., Any]] = {
    ("builtins", "bytes"): _safe_bytes_factory(bytes),
    ("builtins", "bytearray"): _safe_bytes_factory(bytearray),
    ("_codecs", "encode"): _codecs_encode,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
}


def _numpy_module(module: str) -> str:
    # numpy 2 moved numpy.core to numpy._core (the old name warns); 1.x has only numpy.core.
    import numpy

    if module.startswith("numpy.core.") and hasattr(numpy, "_core"):
        return "numpy._core." + module[len("numpy.core.") :]
    if module.startswith("numpy._core.") and not hasattr(numpy, "_core"):
        return "numpy.core." + module[len("numpy._core.") :]
    return module


def _is_numpy_scalar_type(name: str) -> bool:
    import numpy

    value = getattr(numpy, name, None)
    return isinstance(value, type) and issubclass(value, numpy.generic)


def _is_torch_dtype(name: str) -> bool:
    import torch

    return isinstance(getattr(torch, name, None), torch.dtype)


def _python3_name(module: str, name: str) -> tuple[str, str]:
    # Protocol 0-2 pickles use Python 2 names (__builtin__.xrange, copy_reg); map them as the
    # standard unpickler does with fix_imports=True.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def allowed_global(module: str, name: str) -> bool:
    """Whether the allow-listing unpickler rebuilds ``module.name`` (exact names, no dots)."""
    module, name = _python3_name(module, name)
    if (module, name) in _ALLOWED:
        return True
    if "." in name:
        return False
    if module == "numpy":
        return _is_numpy_scalar_type(name)
    if module == "torch":
        return _is_torch_dtype(name)
    return False


class _AllowListUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns allow-listed globals.

    Nested objects (the items of an object array, the values of a dict) go through the same
    ``find_class``, so one disallowed global anywhere refuses the whole pickle.
    """

    def __init__(self, data: bytes, url: str | None, member: str | None):
        super().__init__(io.BytesIO(data))
        self.url = url
        self.member = member

    def find_class(self, module: str, name: str) -> Any:
        if not allowed_global(module, name):
            raise UnsafeInputError(
                f"refused to unpickle: the pickle refers to {module}.{name}, which is not on "
                f"the allow-list of plain data types (unpickling it could run code); {OPT_IN}",
                url=self.url,
                member=self.member,
            )
        module, name = _python3_name(module, name)
        substitute = _SUBSTITUTES.get((module, name))
        if substitute is not None:
            return substitute
        return getattr(importlib.import_module(_numpy_module(module)), name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeInputError(
            f"refused to unpickle: persistent id {pid!r} is not supported; {OPT_IN}",
            url=self.url,
            member=self.member,
        )


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
