"""The allow-listing unpickler: which globals a pickle from data may name, and how to rebuild them.

:func:`cloudwds.security.load_pickle` uses it for every pickle that is not trusted. Plain data
(built-in scalars and containers, a few standard-library value types, numpy arrays, dtypes and
scalars, torch tensors) unpickles as usual; any other global -- ``os.system``,
``subprocess.Popen``, ``builtins.eval``, a class of the user's own -- is refused with
:class:`~cloudwds.errors.UnsafeInputError` before it is looked up, so nothing in the pickle
runs. The few allowed callables that could still do harm are replaced by checked stand-ins
(``bytes(n)`` would allocate ``n`` bytes; ``torch.storage._load_from_bytes`` would do a *full*
``torch.load``).

The policy around it (trusted, ``WDS_SECURE``, torch files, ``pipe:``) stays in
:mod:`cloudwds.security`.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle
from collections.abc import Callable
from typing import Any

from .errors import UnsafeInputError

OPT_IN = "pass trusted=True (e.g. .decode(trusted=True)) or set WDS_TRUSTED=1 if you trust it"

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
