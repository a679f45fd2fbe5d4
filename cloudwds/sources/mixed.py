"""The sample mix of a dataset spec: :class:`MixedSource`, a resumable pipeline source.

The spec's format and meaning are in :mod:`cloudwds.spec` (which parses and validates it and
re-exports :class:`MixedSource`). Each collection is read through the same shard chain
:class:`~cloudwds.dataset.WebDataset` builds (:func:`~cloudwds.sources.chain.shard_stages`)
and the same tar reader, with the collection's own seed derived from the pipeline's.

Mixing: each output sample comes from collection ``i`` with probability proportional to its
effective weight ``weight * scale``, drawn (together with ``scaleprob``) from one RNG derived from
``(seed, epoch, rank, worker)``. When a collection runs out it leaves the mix and the others
continue with their weights renormalised, so an epoch uses every (kept) sample of every
collection; with all collections resampled the mix never ends (use ``.with_epoch(n)``). Each
collection's shards are split by rank and by worker, as in ``WebDataset``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..handlers import Handler, reraise_exception
from ..index import find_index
from ..samples import Sample
from ..shards import split_by_node, split_by_worker
from ..spec import CollectionSpec, DatasetSpec, load_spec
from ..stagebase import StageRun, StatefulStage
from ..storage import StorageConfig
from ..world import World
from .chain import apply_stages, shard_stages
from .tar import tarfile_to_samples

__all__ = ["STATE_VERSION", "MixedSource"]

STATE_VERSION = 1


class MixedSource(StatefulStage):
    """A pipeline source that mixes the samples of a spec's collections (see the module doc).

    Sub-stream per collection: its shards → (``shardshuffle``: permuted by ``(seed, epoch)``)
    → ``nodesplitter`` → ``workersplitter`` → ``tarfile_to_samples`` (resampled collections:
    ``ResampledShards`` instead of the list and the splitters). ``resampled=True``/``False``
    overrides every entry's ``resampled``.

    Determinism: for a given ``(seed, epoch, rank, worker)`` the output is always the same.

    Resuming: :meth:`state_dict` returns (JSON-serialisable)::

        {"version": 1, "epoch": 0, "cycle": 0, "rank": 0, "worker": 0, "yielded": 1234,
         "rng": [3, [...625 ints...], null],
         "collections": {"ia1": {"consumed": 800, "yielded": 240, "exhausted": false}, ...}}

    i.e. the mixing RNG's state after the last sample handed out, and per collection the
    samples taken from its sub-stream (``consumed``, including those dropped by ``scaleprob``
    or ``extensions``). :meth:`load_state_dict` stages it for the next iteration, which must
    run with the same seed, epoch, rank and worker: each sub-stream is rebuilt and fast-forwarded
    by ``consumed`` samples — whole shards are skipped without reading them when a manifest
    (``cloudwds-index.json``) gives their sample counts — and the RNG is restored, so the mix
    continues exactly where it stopped. The state is per process (rank and DataLoader worker).
    """

    def __init__(
        self,
        spec: DatasetSpec | str | os.PathLike[str],
        *,
        handler: Handler = reraise_exception,
        storage: StorageConfig | None = None,
        resampled: bool | None = None,
        shardshuffle: bool = False,
        nodesplitter: Callable[..., Any] | None = split_by_node,
        workersplitter: Callable[..., Any] | None = split_by_worker,
        allow_pipe: bool = False,
        use_index: bool = True,
    ):
        self.storage = storage or StorageConfig.resolve()
        if not isinstance(spec, DatasetSpec):
            spec = load_spec(spec, allow_pipe=allow_pipe, storage=self.storage)
        self.spec = spec
        self.handler = handler
        self.resampled = resampled
        self.shardshuffle = shardshuffle
        self.nodesplitter = nodesplitter
        self.workersplitter = workersplitter
        self.use_index = use_index

    def __repr__(self) -> str:
        names = ", ".join(c.name for c in self.spec.collections)
        return f"MixedSource({self.spec.source!r}: {names})"

    def collection_stages(self, c: CollectionSpec) -> list[Any]:
        """Collection ``c``'s shard chain: :func:`~.chain.shard_stages`, as ``WebDataset`` builds it."""
        return shard_stages(
            list(c.shards),
            storage=self.storage,
            resampled=c.resampled if self.resampled is None else self.resampled,
            shardshuffle=self.shardshuffle,
            nodesplitter=self.nodesplitter,
            workersplitter=self.workersplitter,
        )

    def effective_weights(self, world: World) -> dict[str, float]:
        """``weight * scale * scaleprob`` per collection for this world's epoch (output shares)."""
        return {
            c.name: w * c.scaleprob
            for c, w in zip(self.spec.collections, _epoch_weights(self.spec, world))
        }

    def start(
        self,
        src: Iterable[Any],  # noqa: ARG002 - the StatefulStage.start signature; a source reads no input
        world: World,
        state: Mapping[str, Any] | None = None,
    ) -> StageRun:
        """One iteration: a :class:`_MixRun` owning the RNG and the per-collection counters."""
        return _MixRun(self, world, self.check_state(state or {}))

    def check_state(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """Validate a saved state; ``{}`` means start from the beginning."""
        if not state:
            return None
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"MixedSource state version {state.get('version')!r} is not {STATE_VERSION}"
            )
        names = {c.name for c in self.spec.collections}
        if set(state.get("collections", {})) != names:
            raise ValueError(
                f"state is for collections {sorted(state.get('collections', {}))}, "
                f"but {self.spec.source} has {sorted(names)}"
            )
        copied: dict[str, Any] = json.loads(json.dumps(state))  # a private copy
        return copied


def _epoch_weights(spec: DatasetSpec, world: World) -> list[float]:
    """``weight * scale`` per collection, ``scale`` drawn from ``(seed, epoch, cycle)``."""
    out = []
    for c in spec.collections:
        lo, hi = c.scale
        if lo == hi:
            factor = lo
        else:
            rng = world.rng("spec-scale", c.name, per_rank=False, per_worker=False)
            factor = rng.uniform(lo, hi)
        out.append(c.weight * factor)
    return out


class _MixRun(StageRun):
    """One iteration of a :class:`MixedSource`: the RNG, the sub-streams and their counters."""

    def __init__(self, source: MixedSource, world: World, state: dict[str, Any] | None):
        super().__init__()
        self.source = source
        self.world = world
        self.collections = source.spec.collections
        self.weights = _epoch_weights(source.spec, world)
        self.rng = world.rng("spec-mix")
        n = len(self.collections)
        self.consumed = [0] * n
        self.yielded = [0] * n
        self.exhausted = [False] * n
        self.total = 0
        if state:
            self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        w = self.world
        here = {"epoch": w.epoch, "cycle": w.cycle, "rank": w.rank, "worker": w.worker}
        there = {k: state.get(k) for k in here}
        if here != there:
            raise ValueError(
                f"MixedSource state was saved at {there} but this iteration is {here}; "
                "set the same epoch (set_epoch) and run on the same rank and worker"
            )
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        for i, c in enumerate(self.collections):
            entry = state["collections"][c.name]
            self.consumed[i] = int(entry["consumed"])
            self.yielded[i] = int(entry["yielded"])
            self.exhausted[i] = bool(entry["exhausted"])
        self.total = int(state.get("yielded", sum(self.yielded)))

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        w = self.world
        return {
            "version": STATE_VERSION,
            "epoch": w.epoch,
            "cycle": w.cycle,
            "rank": w.rank,
            "worker": w.worker,
            "yielded": self.total,
            "rng": [version, list(internal), gauss],
            "collections": {
                c.name: {
                    "consumed": self.consumed[i],
                    "yielded": self.yielded[i],
                    "exhausted": self.exhausted[i],
                }
                for i, c in enumerate(self.collections)
            },
        }

    def _items(self) -> Iterator[Sample]:
        n = len(self.collections)
        streams: list[Iterator[Sample] | None] = [None] * n
        for i in range(n):
            if not self.exhausted[i] and self.weights[i] > 0:
                streams[i] = self._open(i, self.consumed[i])
        rng = self.rng
        try:
            while True:
                active = [i for i in range(n) if streams[i] is not None]
                if not active:
                    return
                i = _choose(rng, active, self.weights)
                stream = streams[i]
                assert stream is not None
                sample = next(stream, None)
                if sample is None:
                    streams[i] = None
                    self.exhausted[i] = True
                    _close(stream)
                    continue
                self.consumed[i] += 1
                c = self.collections[i]
                if c.scaleprob < 1.0 and rng.random() >= c.scaleprob:
                    continue
                if c.extensions is not None:
                    sample = _select_fields(sample, c.extensions)
                    if sample is None:
                        continue
                sample["__source__"] = c.name
                self.yielded[i] += 1
                self.total += 1
                yield sample
        finally:
            for stream in streams:
                if stream is not None:
                    _close(stream)

    def _open(self, i: int, skip: int) -> Iterator[Sample]:
        """Collection ``i``'s sample stream for this world, with ``skip`` samples passed over."""
        src = self.source
        c = self.collections[i]
        w = World(
            **{
                **vars(self.world),
                "seed": self.world.derive_seed(
                    "spec-collection", c.name, per_rank=False, per_worker=False
                ),
            }
        )
        items = apply_stages(src.collection_stages(c), (), w)
        if skip and src.use_index:
            items, skip = self._skip_shards(c, items, skip)
        samples = tarfile_to_samples(handler=src.handler, storage=src.storage).apply(items, w)
        if skip:
            return _skip_samples(samples, skip)
        return samples

    def _skip_shards(
        self, c: CollectionSpec, items: Iterator[Any], skip: int
    ) -> tuple[Iterator[Any], int]:
        """Pass over whole shards whose sample count (from a manifest) fits in ``skip``."""
        try:
            manifest = find_index(list(c.shards), self.source.storage)
        except Exception:  # noqa: BLE001 - a broken index only costs speed here: read instead
            manifest = None
        if manifest is None:
            return items, skip
        for item in items:
            url = item["url"] if isinstance(item, dict) else item
            info = manifest.get(url)
            if info is None or info.samples > skip:
                return _prepend(item, items), skip
            skip -= info.samples
        return iter(()), skip


def _choose(rng: Any, active: list[int], weights: list[float]) -> int:
    """Index ``i`` of ``active`` drawn with probability proportional to ``weights[i]``."""
    total = sum(weights[i] for i in active)
    x = rng.random() * total
    for i in active:
        x -= weights[i]
        if x < 0:
            return i
    return active[-1]


def _select_fields(sample: Sample, extensions: tuple[tuple[str, ...], ...]) -> Sample | None:
    out = {k: v for k, v in sample.items() if k.startswith("__")}
    for alternatives in extensions:
        for name in alternatives:
            if name in sample:
                out[name] = sample[name]
                break
        else:
            return None
    return out


def _skip_samples(samples: Iterator[Sample], n: int) -> Iterator[Sample]:
    it = iter(samples)
    try:
        for _ in range(n):
            if next(it, None) is None:
                return
        yield from it
    finally:
        _close(it)


def _prepend(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _close(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()
