"""Opt-in: make unmodified ``import webdataset`` code run on cloudwds.

Training code such as open_clip, timm or diffusers says ``import webdataset as wds`` and reaches
into submodules (``webdataset.tariterators``, ``webdataset.filters``, ...). Editing third-party code
is not an option for most users, so :func:`install_as_webdataset` makes the name ``webdataset``
(and every ``webdataset.X``) resolve to cloudwds (and ``cloudwds.X``) for the rest of the process.

Why the mechanics are what they are:

- A finder at the front of ``sys.meta_path`` hands out the *same module objects* as cloudwds's, so
  ``isinstance`` checks, ``pickle`` and module-level settings agree whichever name was used. The
  finder answers before the installed webdataset's files could be found, so the two never mix.
- DataLoader workers started with ``spawn`` or ``forkserver`` are fresh interpreters that import
  the user's main module again, which says ``import webdataset``. They receive the parent's
  ``sys.path``, so a tiny shim package (``cloudwds/_webdataset_shim/webdataset``) put first on
  ``sys.path`` re-installs the alias in the child the moment it imports ``webdataset``.
- It is never done by default: calling this function (or ``python -m cloudwds.run``) is the
  user's explicit consent, logged once per process. If a real webdataset module is already
  imported, the process would hold two incompatible libraries, so that is an error instead.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Sequence
from types import ModuleType

__all__ = ["install_as_webdataset", "is_installed", "shim_path", "uninstall_as_webdataset"]

_log = logging.getLogger(__name__)

_ALIAS = "webdataset"
_TARGET = "cloudwds"
#: Attribute set on the shim package module so the conflict check can tell it from a real webdataset.
SHIM_MARKER = "__cloudwds_webdataset_shim__"

_lock = threading.Lock()
_logged = False


def shim_path() -> str:
    """The directory holding the ``webdataset`` shim package (put on ``sys.path``/``PYTHONPATH``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_webdataset_shim")


def _target_name(fullname: str) -> str | None:
    """``webdataset[.X]`` → ``cloudwds[.X]``; ``None`` for every other name."""
    if fullname == _ALIAS:
        return _TARGET
    if fullname.startswith(_ALIAS + "."):
        return _TARGET + fullname[len(_ALIAS) :]
    return None


class _AliasLoader(importlib.abc.Loader):
    """Loads ``webdataset.X`` by importing ``cloudwds.X`` and putting that very module in its place.

    The import system creates a throw-away placeholder module, calls :meth:`exec_module`, then
    returns whatever ``sys.modules[name]`` holds afterwards; so cloudwds's module object itself is
    what the caller gets (its ``__name__`` and ``__spec__`` stay cloudwds's).
    """

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(
        self,
        spec: importlib.machinery.ModuleSpec,  # noqa: ARG002 - importlib's Loader signature
    ) -> ModuleType | None:
        return None  # the default placeholder; replaced in exec_module

    def exec_module(self, module: ModuleType) -> None:
        sys.modules[module.__name__] = importlib.import_module(self.target)


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Answers for ``webdataset`` and ``webdataset.*`` only, with cloudwds's modules."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,  # noqa: ARG002 - importlib's MetaPathFinder signature
        target: ModuleType | None = None,  # noqa: ARG002 - importlib's MetaPathFinder signature
    ) -> importlib.machinery.ModuleSpec | None:
        real = _target_name(fullname)
        if real is None:
            return None
        # A webdataset submodule cloudwds does not have stays a ModuleNotFoundError naming the
        # webdataset module, exactly as a missing module would be.
        found = importlib.util.find_spec(real)  # imports the parent package, not the module
        if found is None:
            return None
        is_package = found.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real), is_package=is_package)


def _is_ours(module: object) -> bool:
    """True for cloudwds's own modules and for the shim package while it is being imported."""
    name = getattr(module, "__name__", "")
    if getattr(module, SHIM_MARKER, False):
        return True
    return name == _TARGET or name.startswith(_TARGET + ".")


def _foreign_webdataset_modules() -> list[str]:
    """Names of real-webdataset modules already imported in this process."""
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if _target_name(name) is not None and module is not None and not _is_ours(module)
    )


def is_installed() -> bool:
    """Whether ``webdataset`` currently resolves to cloudwds in this process."""
    return any(isinstance(f, _AliasFinder) for f in sys.meta_path)


def install_as_webdataset(*, subprocesses: bool = False) -> None:
    """Make ``import webdataset`` and ``webdataset.X`` resolve to cloudwds in this process.

    Call it once, before the code that imports webdataset runs (or launch the script with
    ``python -m cloudwds.run script.py``). Afterwards ``webdataset`` *is* the ``cloudwds`` module
    and ``webdataset.tariterators`` *is* ``cloudwds.tariterators`` (same objects, so pickles and
    ``isinstance`` agree). DataLoader workers started with ``spawn``/``forkserver`` get the alias
    too, through a shim package placed first on ``sys.path``. With ``subprocesses=True`` the shim
    directory is also put on ``PYTHONPATH``, so unrelated Python processes this one starts (e.g.
    ``torchrun`` children) see the alias as soon as they import webdataset.

    Calling it again is harmless. Raises ``ImportError`` if a real webdataset module is already
    imported: mixing two libraries under one name would fail in confusing ways later.
    """
    global _logged
    with _lock:
        foreign = _foreign_webdataset_modules()
        if foreign:
            first = sys.modules[foreign[0]]
            where = getattr(first, "__file__", None) or repr(first)
            raise ImportError(
                f"cloudwds.install_as_webdataset(): the real webdataset is already imported "
                f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''} from {where}); "
                "call install_as_webdataset() (or use `python -m cloudwds.run`) before anything "
                "imports webdataset, so the process does not mix the two libraries"
            )
        target = importlib.import_module(_TARGET)
        if not is_installed():
            sys.meta_path.insert(0, _AliasFinder())
        sys.modules[_ALIAS] = target
        shim = shim_path()
        if shim not in sys.path:
            sys.path.insert(0, shim)
        if subprocesses:
            parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            if shim not in parts:
                os.environ["PYTHONPATH"] = os.pathsep.join([shim, *parts])
        if not _logged:
            _logged = True
            _log.info(
                "cloudwds.install_as_webdataset(): `import webdataset` now resolves to cloudwds "
                "%s in this process (and in its spawned workers)",
                getattr(target, "__version__", ""),
            )


def uninstall_as_webdataset() -> None:
    """Undo :func:`install_as_webdataset`: ``webdataset`` is looked up normally again.

    Modules already bound by user code (``import webdataset as wds``) keep pointing at cloudwds;
    this only stops new imports from resolving to it. Meant for tests and interactive sessions.
    """
    with _lock:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AliasFinder)]
        for name in [n for n in sys.modules if _target_name(n) is not None]:
            if _is_ours(sys.modules[name]):
                del sys.modules[name]
        shim = shim_path()
        while shim in sys.path:
            sys.path.remove(shim)
        parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if shim in parts:
            rest = [p for p in parts if p != shim]
            if rest:
                os.environ["PYTHONPATH"] = os.pathsep.join(rest)
            else:
                del os.environ["PYTHONPATH"]
