"""Stages that hold samples back: buffer shuffles, batching with collation, unbatching.

Shuffles are seeded from the iteration's world (``seed, epoch, rank, worker``); a caller's own
``rng`` switches to webdataset's buffer algorithm draw for draw, so code that seeds its own
shuffles (timm, open_clip) gets webdataset's order.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .handlers import Handler
from .stagebase import Stage
from .world import World


class shuffle(Stage):
    """Shuffle with a buffer of ``bufsize`` samples, starting to yield once ``initial`` are held.

    The random generator is derived from ``(seed, epoch, rank, worker)`` (see
    :class:`~cloudwds.world.World`); an explicit ``seed`` here replaces the pipeline's seed for
    this stage, ``rng`` (a :class:`random.Random`) overrides both. ``bufsize <= 1`` is a no-op.
    ``handler`` is part of webdataset's signature (``filters.shuffle``) and is accepted for it;
    a buffer calls no user code that could fail, so it is never consulted.
    """

    def __init__(
        self,
        bufsize: int = 1000,
        initial: int = 100,
        rng: random.Random | None = None,
        seed: int | None = None,
        handler: Handler | None = None,  # noqa: ARG002 - webdataset's signature (see above)
    ):
        self.bufsize = bufsize
        self.initial = initial
        self.seed = seed
        self.rng = rng

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:
        if self.rng is not None:
            # A caller-seeded generator (webdataset's parameter; timm and open_clip seed their
            # own): follow webdataset's buffer algorithm draw for draw, so the same generator
            # gives the same order as on webdataset.
            return _shuffled_webdataset(
                iter(src), self.bufsize, min(self.initial, self.bufsize), self.rng
            )
        if self.bufsize <= 1:
            return iter(src)
        else:
            w = world if self.seed is None else World(**{**vars(world), "seed": self.seed})
            rng = w.rng("shuffle", self.bufsize)
        return _shuffled(iter(src), self.bufsize, min(self.initial, self.bufsize), rng)


_END = object()


def _shuffled(src: Iterator[Any], bufsize: int, initial: int, rng: random.Random) -> Iterator[Any]:
    """Buffer shuffle: hold ``initial`` samples before the first yield, then grow to ``bufsize``.

    While the buffer is not full, each step pulls two samples and yields one, so the buffer
    grows by one per yield (as webdataset's); once full, each sample in replaces one out.
    """
    buf: list[Any] = []
    randrange = rng.randrange
    initial = max(initial, 1)
    for sample in src:
        if len(buf) < bufsize:
            extra = next(src, _END)
            if extra is not _END:
                buf.append(extra)
        if len(buf) < initial:
            buf.append(sample)
            continue
        i = randrange(len(buf))
        buf[i], sample = sample, buf[i]
        yield sample
    rng.shuffle(buf)
    yield from buf


def _shuffled_webdataset(
    src: Iterator[Any], bufsize: int, initial: int, rng: random.Random
) -> Iterator[Any]:
    """webdataset's buffer shuffle: append (two per step while filling), then pick-and-pop.

    A pick takes ``buf[k]`` for ``k = rng.randint(0, len(buf) - 1)`` and moves the last item
    into its slot; the buffer is drained the same way at the end.
    """
    buf: list[Any] = []

    def pick() -> Any:
        k = rng.randint(0, len(buf) - 1)
        sample = buf[k]
        buf[k] = buf[-1]
        buf.pop()
        return sample

    for sample in src:
        buf.append(sample)
        if len(buf) < bufsize:
            extra = next(src, _END)
            if extra is not _END:
                buf.append(extra)
        if len(buf) >= initial:
            yield pick()
    while buf:
        yield pick()


def default_collation_fn(
    samples: Sequence[Any], combine_tensors: bool = True, combine_scalars: bool = True
) -> Any:
    """Collate tuples (or dicts) column-wise: numbers → ndarray, arrays → stacked, tensors → stacked.

    Tuples and lists give a tuple of columns, dicts a dict of columns; any other sample (a
    number, an array) is a single column.
    """
    first = samples[0]
    if isinstance(first, dict):
        keys = list(first.keys())
        return {
            k: _combine([s[k] for s in samples], combine_tensors, combine_scalars) for k in keys
        }
    if isinstance(first, (tuple, list)):
        columns = list(zip(*samples, strict=True))
        return tuple(_combine(list(c), combine_tensors, combine_scalars) for c in columns)
    # bare samples (numbers, arrays, tensors): the batch is one column
    return _combine(list(samples), combine_tensors, combine_scalars)


def _combine(column: list[Any], combine_tensors: bool, combine_scalars: bool) -> Any:
    # numpy is imported here, not at module level: a pipeline without batching (a raw epoch)
    # would otherwise pay its ~0.13 s import in every fresh process (issue 12, cold start)
    import numpy as np

    first = column[0]
    if isinstance(first, (int, float)):
        return np.array(column) if combine_scalars else column
    if isinstance(first, np.ndarray):
        if combine_tensors:
            _check_shapes(column)
            return np.stack(column)
        return column
    if type(first).__module__.startswith("torch") and hasattr(first, "shape"):
        if combine_tensors:
            import torch

            _check_shapes(column)
            return torch.stack(column)
        return column
    if isinstance(first, np.generic):
        return np.array(column) if combine_scalars else column
    return column


def _check_shapes(column: list[Any]) -> None:
    shapes = {tuple(x.shape) for x in column}
    if len(shapes) != 1:
        raise ValueError(f"cannot collate arrays of different shapes: {sorted(shapes)}")


class batched(Stage):
    """Group samples into batches of ``batchsize`` collated by ``collation_fn``.

    ``partial=False`` drops a last, smaller batch. ``collation_fn=None`` yields plain lists.
    """

    def __init__(
        self,
        batchsize: int = 20,
        collation_fn: Callable[[list[Any]], Any] | None = default_collation_fn,
        partial: bool = True,
    ):
        if batchsize < 1:
            raise ValueError(f"batchsize must be >= 1, got {batchsize}")
        self.batchsize = batchsize
        self.collation_fn = collation_fn
        self.partial = partial

    def apply(
        self,
        src: Iterable[Any],
        world: World,  # noqa: ARG002 - Stage.apply's signature; batching draws no random numbers
    ) -> Iterator[Any]:
        n = self.batchsize
        collate = self.collation_fn
        it = iter(src)
        while True:
            batch = list(itertools.islice(it, n))
            if not batch or (len(batch) < n and not self.partial):
                return
            yield collate(batch) if collate is not None else batch
            if len(batch) < n:
                return


class unbatched(Stage):
    """Split batches back into samples: tuples/lists of columns → tuples, dicts of columns → dicts.

    Lists count as columns because the DataLoader's ``default_convert`` turns tuples into lists.
    A bare array or tensor (a batch of bare samples) is split into its rows.
    """

    def apply(
        self,
        src: Iterable[Any],
        world: World,  # noqa: ARG002 - Stage.apply's signature; unbatching draws no random numbers
    ) -> Iterator[Any]:
        for batch in src:
            if isinstance(batch, (tuple, list)):
                yield from zip(*batch, strict=True)
            elif isinstance(batch, dict):
                keys = list(batch.keys())
                lengths = {len(batch[k]) for k in keys}
                if len(lengths) != 1:
                    raise ValueError(f"unbatched: columns have different lengths {sorted(lengths)}")
                for i in range(lengths.pop()):
                    yield {k: batch[k][i] for k in keys}
            elif hasattr(batch, "shape") and len(batch.shape) > 0:
                yield from batch  # a stacked array or tensor: rows
            else:
                raise TypeError(f"unbatched: cannot split a {type(batch).__name__}")
