"""webdataset's ``utils`` module over cloudwds: worker info and seeds, ``PipelineStage``, repeats.

Client code reaches for these by module path (``wds.utils.pytorch_worker_seed`` in open_clip and
timm), so they live under webdataset's names. ``enforce_security`` is a live view of
:func:`cloudwds.security.is_secure`: ``wds.utils.enforce_security = True`` switches secure mode
for the whole process, as setting webdataset's module global does.
"""

from __future__ import annotations

import functools
import glob
import importlib
import itertools
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from fnmatch import fnmatch
from typing import Any

import braceexpand
import numpy as np

from .stages import PipelineStage
from .world import distributed_rank, worker_info

__all__ = [
    "ObsoleteException",
    "PipelineStage",
    "compute_sample_weights",
    "deprecated",
    "enforce_security",
    "fnmatch_with_braces",
    "glob_with_braces",
    "guess_batchsize",
    "identity",
    "is_iterable",
    "lookup_sym",
    "make_seed",
    "obsolete",
    "pytorch_worker_info",
    "pytorch_worker_seed",
    "repeatedly",
    "repeatedly0",
]

enforce_security: bool  # a property of this module (see _UtilsModule below)


def glob_with_braces(pattern: str) -> list[str]:
    """``glob`` after brace expansion: ``glob_with_braces("/d/*.{tar,tgz}")``."""
    return [f for pat in braceexpand.braceexpand(pattern) for f in glob.glob(pat)]


def fnmatch_with_braces(filename: str, pattern: str) -> bool:
    """``fnmatch`` against every brace expansion of ``pattern``."""
    return any(fnmatch(filename, pat) for pat in braceexpand.braceexpand(pattern))


def make_seed(*args: Any) -> int:
    """A 31-bit seed mixed from ``args``.

    Unlike webdataset (which uses ``hash()``, salted per process for strings), the mix uses a
    stable digest, so equal arguments give equal seeds in every process and run.
    """
    import hashlib

    digest = hashlib.blake2b(repr(args).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def is_iterable(obj: Any) -> bool:
    """True for iterables other than ``str`` and ``bytes`` (webdataset's test for URL lists)."""
    if isinstance(obj, (str, bytes)):
        return False
    return isinstance(obj, Iterable)


def identity(x: Any) -> Any:
    """Return ``x``."""
    return x


def lookup_sym(sym: str, modules: list[str]) -> Any:
    """The first attribute ``sym`` found in the cloudwds submodules named in ``modules``."""
    for mname in modules:
        module = importlib.import_module(mname, package="cloudwds")
        result = getattr(module, sym, None)
        if result is not None:
            return result
    return None


def repeatedly0(
    loader: Iterable[Any], nepochs: int = sys.maxsize, nbatches: int = sys.maxsize
) -> Iterator[Any]:
    """Iterate ``loader`` ``nepochs`` times, at most ``nbatches`` items each time."""
    for _ in range(nepochs):
        yield from itertools.islice(loader, nbatches)


def guess_batchsize(batch: Any) -> int:
    """The batch size of a collated batch: the length of its first column."""
    return len(batch[0])


def repeatedly(
    source: Iterable[Any],
    nepochs: int | None = None,
    nbatches: int | None = None,
    nsamples: int | None = None,
    batchsize: Callable[..., int] = guess_batchsize,
) -> Iterator[Any]:
    """Iterate ``source`` again and again until ``nepochs``, ``nbatches`` or ``nsamples``.

    ``nsamples`` counts samples inside batches with ``batchsize(batch)``. An empty pass ends
    the repetition instead of spinning forever.
    """
    epoch = batches = total = 0
    while True:
        empty = True
        for batch in source:
            empty = False
            yield batch
            batches += 1
            if nbatches is not None and batches >= nbatches:
                return
            if nsamples is not None:
                total += batchsize(batch)
                if total >= nsamples:
                    return
        epoch += 1
        if empty or (nepochs is not None and epoch >= nepochs):
            return


def pytorch_worker_info(
    group: Any = None,  # noqa: ARG001 - webdataset's (a process group); the default group is used
) -> tuple[int, int, int, int]:
    """``(rank, world_size, worker, num_workers)`` of the calling process.

    ``RANK``/``WORLD_SIZE`` and ``WORKER``/``NUM_WORKERS`` in the environment win, as in
    webdataset; otherwise torch.distributed and the DataLoader worker info are asked.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    else:
        rank, world_size = distributed_rank()
    if "WORKER" in os.environ and "NUM_WORKERS" in os.environ:
        worker, num_workers = int(os.environ["WORKER"]), int(os.environ["NUM_WORKERS"])
    else:
        worker, num_workers = worker_info()
    return rank, world_size, worker, num_workers


def pytorch_worker_seed(group: Any = None) -> int:
    """``rank * 1000 + worker``: webdataset's per-worker seed, which clients add epochs to."""
    rank, _, worker, _ = pytorch_worker_info(group=group)
    return rank * 1000 + worker


def deprecated(arg: Any = None) -> Any:
    """Decorator (with or without a reason string) that warns with ``DeprecationWarning``."""
    reason = None if callable(arg) else arg

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            msg = f"Call to deprecated function {func.__name__}."
            if reason is not None:
                msg += " Reason: " + reason
            warnings.warn(msg, DeprecationWarning, stacklevel=2)
            return func(*args, **kwargs)

        return wrapper

    return decorator(arg) if callable(arg) else decorator


class ObsoleteException(Exception):
    """Raised by functions marked :func:`obsolete` unless ``ALLOW_OBSOLETE=1``."""


def obsolete(func: Callable[..., Any] | None = None, *, reason: str | None = None) -> Any:
    """Decorator refusing a call unless the environment has ``ALLOW_OBSOLETE=1``."""
    if func is None:
        return functools.partial(obsolete, reason=reason)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not int(os.environ.get("ALLOW_OBSOLETE", "0")):
            msg = f"Call to obsolete function {func.__name__}. Set env ALLOW_OBSOLETE=1 to permit."
            if reason is not None:
                msg += " Reason: " + reason
            raise ObsoleteException(msg)
        return func(*args, **kwargs)

    return wrapper


def compute_sample_weights(n_w_pairs: list[tuple[float, float]]) -> np.ndarray:
    """Relative sampling probabilities of ``(count, weight)`` pairs, the largest being 1."""
    weighted = np.array([n for n, _ in n_w_pairs]) * np.array([w for _, w in n_w_pairs])
    probs: np.ndarray = weighted / np.amax(weighted)  # numpy types amax() as Any
    return probs


_fallback_secure = bool(int(os.environ.get("WDS_SECURE", "0") or 0))


def _get_secure() -> bool:
    try:
        from . import security
    except ImportError:  # pragma: no cover - until cloudwds.security lands
        return _fallback_secure
    return bool(security.is_secure())


def _set_secure(flag: bool) -> None:
    global _fallback_secure
    try:
        from . import security
    except ImportError:  # pragma: no cover - until cloudwds.security lands
        _fallback_secure = bool(flag)
        return
    security.set_secure(bool(flag))


class _UtilsModule(types.ModuleType):
    """This module's class: makes ``enforce_security`` read and set cloudwds's secure mode."""

    @property
    def enforce_security(self) -> bool:
        return _get_secure()

    @enforce_security.setter
    def enforce_security(self, flag: bool) -> None:
        _set_secure(flag)


sys.modules[__name__].__class__ = _UtilsModule
