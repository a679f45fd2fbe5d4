"""Checkpoint states: what a worker reports, how loaders merge them, how an elastic resume works.

A *worker state* is reported by the pipeline inside each DataLoader worker (and travels to the
main process next to every item the worker hands out, see :class:`StatefulItem`)::

    {"epoch": 3, "rank": 0, "world_size": 2, "worker": 1, "num_workers": 2,
     "source": {...}}            # the stateful source's position (few integers)

A *loader state* (``WebLoader.state_dict()``) is one rank's view: the epoch and, for each of its
workers, the source state of the last item delivered to the caller::

    {"epoch": 3, "rank": 0, "world_size": 2, "num_workers": 2, "seed": 0,
     "workers": {"0": {...}, "1": {...}}}

Resuming on the same topology gives each worker its own source state back. Resuming on another
topology (elastic) needs every rank's loader state (``gather_states``) and an exact-epoch
source: the samples already delivered are computed from the plan, and the remainder of the epoch
is planned afresh for the new ranks and workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class StatefulItem:
    """An item from a worker with the worker's state right after producing it (internal)."""

    item: Any
    state: dict[str, Any]
    stats: dict[str, Any] | None = None


class StateCollate:
    """Collate function wrapper: strips :class:`StatefulItem` wrappers, keeps the last state."""

    def __init__(self, collate_fn: Any, batched: bool):
        self.collate_fn = collate_fn
        self.batched = batched

    def __call__(self, data: Any) -> Any:
        if self.batched:
            items = list(data)
            if items and isinstance(items[-1], StatefulItem):
                last = items[-1]
                return StatefulItem(
                    self.collate_fn([i.item for i in items]), last.state, last.stats
                )
            return self.collate_fn(items)
        if isinstance(data, StatefulItem):
            return StatefulItem(self.collate_fn(data.item), data.state, data.stats)
        return self.collate_fn(data)


def loader_state(
    epoch: int, rank: int, world_size: int, num_workers: int, seed: int, workers: Mapping[int, Any]
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "rank": rank,
        "world_size": world_size,
        "num_workers": num_workers,
        "seed": seed,
        "workers": {str(w): s for w, s in sorted(workers.items())},
    }


def normalize(state: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Accept a worker state, a loader state, or a list of loader states (one per rank)."""
    if isinstance(state, Mapping):
        states = [dict(state)]
    else:
        states = [dict(s) for s in state]
    out = []
    for s in states:
        if "workers" not in s:  # a single worker's state (StatefulDataLoader, dataset.state_dict())
            s = loader_state(
                s.get("epoch", 0),
                s.get("rank", 0),
                s.get("world_size", 1),
                s.get("num_workers", 1),
                s.get("seed", 0),
                {s.get("worker", 0): s.get("source")},
            )
        out.append(s)
    return out


def gather_states(state: dict[str, Any]) -> list[dict[str, Any]]:
    """All ranks' loader states (``torch.distributed`` all-gather), for an elastic checkpoint."""
    try:
        import torch.distributed as dist
    except ImportError:
        return [state]
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, state)
    return list(out)
