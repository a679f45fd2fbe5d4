"""webdataset's ``pytorch`` module: the torch data classes pipelines build on, or stand-ins.

With torch installed these are ``torch.utils.data``'s own ``DataLoader``, ``IterableDataset``
and ``Dataset``; without it, minimal bases so pipelines still import and iterate.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DataLoader", "Dataset", "IterableDataset", "TorchTensor"]

try:
    from torch import Tensor as TorchTensor
    from torch.utils.data import DataLoader, Dataset, IterableDataset
except ImportError:  # pragma: no cover - exercised only without torch

    class IterableDataset:  # type: ignore[no-redef]
        """Stand-in base class when torch is not installed."""

    class Dataset:  # type: ignore[no-redef]
        """Stand-in base class when torch is not installed."""

    class DataLoader:  # type: ignore[no-redef]
        """Refuses to run: the DataLoader needs torch."""

        def __init__(self, *args: Any, **kw: Any):  # noqa: ARG002 - DataLoader's signature
            raise ImportError("DataLoader needs torch: pip install torch")

    class TorchTensor:  # type: ignore[no-redef]
        """Stand-in type when torch is not installed (nothing is an instance of it)."""
