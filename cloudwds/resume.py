"""Checkpoint states: what a worker reports, how loaders merge them, how an elastic resume works.

A *worker state* is reported by the pipeline inside each DataLoader worker (and travels to the
main process next to every item the worker hands out, see :class:`StatefulItem`)::

    {"format": 2, "epoch": 3, "rank": 0, "world_size": 2, "worker": 1, "num_workers": 2,
     "seed": 0, "cycle": 0, "yielded": 17,
     "source": {...}}  # the stateful source run's position (few integers)

A *loader state* (``WebLoader.state_dict()``) is one rank's view: the epoch and, for each of its
workers, the entry of the last item delivered to the caller::

    {"format": 2, "epoch": 3, "rank": 0, "world_size": 2, "num_workers": 2, "seed": 0,
     "workers": {"0": {"cycle": 0, "yielded": 17, "source": {...}}, "1": {...}}}

``cycle`` is the pass over the source (``repeat``/``with_epoch`` restart it) and ``yielded``
the items the worker's iteration handed out (what ``with_epoch(n)`` counts).

This module is the only code that parses checkpoints: :func:`load` normalises and validates
them (format version, seed, consistent epoch and topology), :func:`worker_position` picks a
worker's position, :func:`plan_topology` / :func:`remaining_after` re-plan an elastic resume.
Pipelines and loaders only call these through ``state_dict()`` / ``load_state_dict()``.

Resuming on the same topology gives each worker its own source state back. Resuming on another
topology (elastic) needs every rank's loader state (``gather_states``) and an exact-epoch
source: the samples already delivered are computed from the plan, and the remainder of the epoch
is planned afresh for the new ranks and workers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .world import World

log = logging.getLogger("cloudwds")

FORMAT_VERSION = 2  # 1: no "format" key, bare source positions per worker, no passes


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


def worker_state(
    epoch: int,
    world: World,
    seed: int,
    source: Mapping[str, Any] | None,
    cycle: int = 0,
    yielded: int = 0,
) -> dict[str, Any]:
    """One worker's state: epoch, coordinates, seed, pass and its stateful source's position."""
    return {
        "format": FORMAT_VERSION,
        "epoch": int(epoch),
        "rank": world.rank,
        "world_size": world.world_size,
        "worker": world.worker,
        "num_workers": world.num_workers,
        "seed": seed,
        "cycle": int(cycle),
        "yielded": int(yielded),
        "source": None if source is None else dict(source),
    }


def worker_entry(state: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a worker state a loader state keeps per worker (see the module doc)."""
    source = state.get("source")
    return {
        "cycle": int(state.get("cycle", 0)),
        "yielded": int(state.get("yielded", 0)),
        "source": None if source is None else dict(source),
    }


def loader_state(
    epoch: int, rank: int, world_size: int, num_workers: int, seed: int, workers: Mapping[int, Any]
) -> dict[str, Any]:
    """One rank's state: the epoch and each worker's entry (``WebLoader``)."""
    return {
        "format": FORMAT_VERSION,
        "epoch": epoch,
        "rank": rank,
        "world_size": world_size,
        "num_workers": num_workers,
        "seed": seed,
        "workers": {str(w): s for w, s in sorted(workers.items())},
    }


def _version(state: Mapping[str, Any]) -> Any:
    return state.get("format", 1)  # states without "format" were written before it existed


def normalize(state: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Accept a worker state, a loader state, or a list of loader states (one per rank).

    Returns current-format loader states; format 1 (source positions directly under
    ``"workers"``, no passes) is upgraded.
    """
    if isinstance(state, Mapping):
        states = [dict(state)]
    else:
        states = [dict(s) for s in state]
    if not states:
        raise ValueError("an empty list is not a checkpoint state")
    out = []
    for s in states:
        if "workers" not in s:  # a single worker's state (StatefulDataLoader, dataset.state_dict())
            s = loader_state(
                s.get("epoch", 0),
                s.get("rank", 0),
                s.get("world_size", 1),
                s.get("num_workers", 1),
                s.get("seed"),  # type: ignore[arg-type]
                {s.get("worker", 0): worker_entry(s)},
            )
        elif _version(s) == 1:
            workers = {
                w: None if e is None else {"cycle": 0, "yielded": 0, "source": e}
                for w, e in s["workers"].items()
            }
            s = {**s, "format": FORMAT_VERSION, "workers": workers}
        out.append(s)
    return out


def load(state: Any, seed: int) -> list[dict[str, Any]]:
    """Normalise and validate a checkpoint for a pipeline seeded with ``seed``.

    Refuses (``ValueError``) unknown format versions, states of different epochs or
    topologies mixed in one list, and states saved with another seed: the seed decides every
    shuffle and plan, so positions saved under one seed mean other samples under another.
    """
    if not isinstance(state, (Mapping, Sequence)) or isinstance(state, (str, bytes)):
        raise TypeError(f"a checkpoint state is a dict or a list of dicts, got {type(state)}")
    raw = [state] if isinstance(state, Mapping) else list(state)
    for s in raw:
        version = _version(s)
        if version not in (1, FORMAT_VERSION):
            raise ValueError(
                f"checkpoint format {version!r} is not supported (this cloudwds reads "
                f"formats 1 and {FORMAT_VERSION})"
            )
    states = normalize(state)
    for s in states:
        saved = s.get("seed")
        if saved is not None and int(saved) != int(seed):
            raise ValueError(
                f"the checkpoint was saved with seed {saved}, but this pipeline's seed is "
                f"{seed}: positions would name other samples. Build the dataset with "
                f"seed={saved} (or WDS_SEED={saved}) to resume it."
            )
    first = states[0]
    for s in states[1:]:
        for key in ("epoch", "world_size", "num_workers"):
            if int(s[key]) != int(first[key]):
                raise ValueError(
                    f"the states disagree on {key}: {first[key]} and {s[key]} (they must be "
                    "taken at the same step on every rank)"
                )
    return states


def _topology_error(first: Mapping[str, Any], world_size: int, num_workers: int) -> ValueError:
    return ValueError(
        "resuming on a different number of ranks or workers needs exact_epoch=True "
        f"(was {first['world_size']} ranks x {first['num_workers']} workers, "
        f"now {world_size} x {num_workers})"
    )


def plan_topology(
    states: list[dict[str, Any]], source: Any, world: World, num_workers: int
) -> list[dict[str, Any]]:
    """Turn states from another topology into this rank's same-topology states.

    Planned in the calling (main) process so that errors surface at once and each worker
    later receives its share explicitly. Same topology: ``states`` unchanged.
    """
    first = states[0]
    if int(first["world_size"]) == world.world_size and int(first["num_workers"]) == num_workers:
        return states
    if not hasattr(source, "plan_for"):
        raise _topology_error(first, world.world_size, num_workers)
    universe = [list(p) for p in remaining_after(source, states, world)]
    fresh = {"cycle": 0, "yielded": 0, "source": {"delivered": 0, "universe": universe}}
    return [
        {
            **first,
            "rank": world.rank,
            "world_size": world.world_size,
            "num_workers": num_workers,
            "workers": {str(w): dict(fresh) for w in range(num_workers)},
        }
    ]


def worker_position(
    states: list[dict[str, Any]], source: Any, world: World
) -> dict[str, Any] | None:
    """The entry (pass, items yielded, source position) this worker resumes (``None``: start).

    A state of another epoch than the iteration's is ignored with a warning; one of another
    topology is re-planned (exact-epoch sources only).
    """
    if source is None:
        raise ValueError("this pipeline has no stateful source to resume")
    first = states[0]
    if int(first["epoch"]) != world.epoch:
        log.warning(
            "ignoring a loaded state of epoch %s: this iteration is epoch %d",
            first["epoch"],
            world.epoch,
        )
        return None
    same = (
        int(first["world_size"]) == world.world_size
        and int(first["num_workers"]) == world.num_workers
        and len(states) in (1, world.world_size)
    )
    if not same:
        if not hasattr(source, "plan_for"):
            raise _topology_error(first, world.world_size, world.num_workers)
        universe = [list(p) for p in remaining_after(source, states, world)]
        return {"cycle": 0, "yielded": 0, "source": {"universe": universe}}
    workers = rank_positions(states, world.rank)
    entry = workers.get(world.worker)
    if entry is None:
        # Nothing delivered by this worker yet: start of its share, in the same universe the
        # other workers of the state were planned in.
        planned: list[Any] | None = next(
            (
                e["source"].get("universe")
                for e in workers.values()
                if isinstance(e, dict) and e.get("source") and e["source"].get("universe")
            ),
            None,
        )
        if planned is None:
            return None
        return {"cycle": 0, "yielded": 0, "source": {"delivered": 0, "universe": planned}}
    return worker_entry(entry)


def rank_positions(states: list[dict[str, Any]], rank: int) -> dict[int, Any]:
    """Worker → entry (pass, items yielded, source position) of ``rank`` in loader ``states``."""
    by_rank = {int(s["rank"]): s for s in states}
    mine = by_rank.get(rank, states[0] if len(states) == 1 else None)
    workers = mine.get("workers", {}) if mine is not None else {}
    return {int(w): p for w, p in workers.items()}


def remaining_after(source: Any, states: Sequence[Mapping[str, Any]], world: World) -> list[Any]:
    """The samples of the epoch not yet delivered, given every rank's loader state.

    Recomputes the exact-epoch plan the states were taken under (``source.plan_for``), asks
    each old worker's spans which samples its ``delivered`` count covers, and returns the
    rest as pieces — the universe of the resumed epoch on the new topology.
    """
    from .partition import _merge, delivered_and_remaining, positions

    first = states[0]
    world_size, num_workers = int(first["world_size"]), int(first["num_workers"])
    epoch = int(first["epoch"])
    ranks = {int(s["rank"]) for s in states}
    if ranks != set(range(world_size)):
        raise ValueError(
            f"an elastic resume needs the states of all {world_size} ranks, got ranks "
            f"{sorted(ranks)} (gather them with WebLoader.gathered_state_dict())"
        )
    delivered_by: dict[tuple[int, int], int] = {}
    universe = None
    for state in states:
        for worker, entry in state["workers"].items():
            position = None if entry is None else entry.get("source")
            if position is None:
                continue
            delivered_by[(int(state["rank"]), int(worker))] = int(position.get("delivered", 0))
            if position.get("universe") is not None:
                universe = [tuple(p) for p in position["universe"]]
    plan = source.plan_for(source.pieces(universe), world_size, num_workers, world.seed, epoch)
    seen: set[tuple[int, int]] = set()
    rest: list[tuple[int, int]] = []
    for rank in range(world_size):
        for worker in range(num_workers):
            done, remaining = delivered_and_remaining(
                plan.worker_spans(rank, worker),
                delivered_by.get((rank, worker), 0),
                source.window,
                world.seed,
                epoch,
                rank,
                worker,
            )
            seen.update(done)
            rest.extend(positions(remaining))
    left = sorted({p for p in rest if p not in seen})
    return _merge(left)


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
