"""Pipelines are torch ``IterableDataset``\\ s without making every user pay for ``import torch``.

Importing torch takes about 1.8 s here, more than a cold epoch over a few hundred megabytes from
S3 -- and JAX, TensorFlow and plain-numpy users of WebDataset shards never need it. So:

- if ``torch.utils.data`` is already imported when cloudwds defines its pipeline classes (the
  usual training script: ``import torch`` comes first), the base class is torch's own
  ``IterableDataset`` -- a real subclass, exactly as in webdataset;
- otherwise the base is a plain class, and a one-shot import hook registers it as a *virtual*
  subclass of ``torch.utils.data.IterableDataset`` (an ABC) the moment torch's data module is
  imported, so ``DataLoader(dataset)`` still takes the iterable-dataset path and
  ``isinstance(dataset, IterableDataset)`` is true.

``WDS_EAGER_TORCH=1`` restores the old behaviour (torch imported with cloudwds when installed),
for code that checks ``isinstance(x, torch.utils.data.Dataset)`` on a pipeline built before
torch was imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from torch.utils.data import IterableDataset

    # ``from .torchbase import IterableBase`` gives the base class: :func:`iterable_base` at run
    # time (see ``__getattr__`` below). Type checkers see torch's class, which is what the base is
    # or (the stand-in, once torch is imported) what ``isinstance`` says it is.
    IterableBase: TypeAlias = IterableDataset[Any]

_TORCH_DATASET_MODULE = "torch.utils.data.dataset"
_virtual: list[type] = []  # stand-in bases waiting for torch (registered once it is imported)


def torch_is_imported() -> bool:
    """True once ``torch`` is in this process: only then can a DataLoader or torch.distributed run."""
    return "torch" in sys.modules


def _register(torch_iterable: type) -> None:
    for cls in _virtual:
        torch_iterable.register(cls)  # type: ignore[attr-defined]  # an ABCMeta class


class _RegisterWhenTorchImports(importlib.abc.MetaPathFinder):
    """Wraps the loader of ``torch.utils.data.dataset`` to register our bases right after it runs."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TORCH_DATASET_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        loader = None if spec is None else spec.loader
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return None  # let the normal machinery fail or load it as it would
        _remove_hook()
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            _register(module.IterableDataset)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_hook = _RegisterWhenTorchImports()


def _remove_hook() -> None:
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


_base: type | None = None


def iterable_base() -> type:
    """The base class for cloudwds's iterable pipelines (see the module docstring); one per process."""
    global _base
    if _base is None:
        _base = _choose_base()
    return _base


def __getattr__(name: str) -> Any:
    # ``IterableBase`` is chosen on first use, not when this module is imported: a module
    # that imports torch after cloudwds.torchbase but before defining its classes gets torch's.
    if name == "IterableBase":
        return iterable_base()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _choose_base() -> type:
    eager = os.environ.get("WDS_EAGER_TORCH", "").lower() in ("1", "true", "yes", "on")
    if _TORCH_DATASET_MODULE in sys.modules or eager:
        try:
            from torch.utils.data import IterableDataset
        except ImportError:
            pass
        else:
            return IterableDataset

    class IterableDatasetBase:
        """Stand-in for torch's ``IterableDataset``: virtually a subclass once torch is imported."""

        def __add__(self, other: Any) -> Any:
            from torch.utils.data import ChainDataset

            return ChainDataset([self, other])  # type: ignore[list-item]

    _virtual.append(IterableDatasetBase)
    if _hook not in sys.meta_path:
        sys.meta_path.insert(0, _hook)
    return IterableDatasetBase
