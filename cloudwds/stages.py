"""Sample-stream stages: shuffle, map, select, decode, to_tuple, rename, batched, ...

Each public name (``shuffle(1000)``, ``map(f)``) returns a small :class:`Stage` object: it pickles
without closures (DataLoader with ``spawn``), prints readably, and is applied to an iterator with
``stage(src)``. Inside a :class:`~cloudwds.pipeline.DataPipeline`, stages receive the iteration's
:class:`~cloudwds.world.World` (epoch, rank, worker, seed) through :meth:`Stage.apply`, which is
how random stages get stable, per-epoch seeds without any global state.

Error policy: stages that run user code or decoders take ``handler`` (see
:mod:`cloudwds.handlers`); it decides whether a failing sample is skipped or ends the stream.
"""

from __future__ import annotations

import builtins
import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .errors import MissingKeyError
from .handlers import Handler, reraise_exception
from .world import World, current_world


class Stage:
    """Base class: ``apply(src, world)`` does the work; ``__call__(src)`` uses the caller's world."""

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:
        raise NotImplementedError

    def __call__(self, src: Iterable[Any]) -> Iterator[Any]:
        return self.apply(src, current_world())

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class PipelineStage:
    """webdataset's base class for stages written as objects: subclasses define ``run(src)``.

    Client code (open_clip's and timm's ``detshuffle2``) subclasses it and relies on
    :class:`~cloudwds.pipeline.DataPipeline` calling ``run(src)`` — or ``run()`` when the object
    is the pipeline's source. ``invoke`` is webdataset's older name for the same call.
    """

    def run(self, *args: Any, **kw: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define run(src)")

    def invoke(self, *args: Any, **kw: Any) -> Any:
        return self.run(*args, **kw)


def apply_stage(stage: Callable[..., Any], src: Iterable[Any], world: World) -> Iterator[Any]:
    """Apply a :class:`Stage` with the world, a :class:`PipelineStage` through ``run(src)``,
    or any plain ``iterator -> iterator`` callable."""
    if isinstance(stage, Stage):
        return stage.apply(src, world)
    if isinstance(stage, PipelineStage):
        return stage.run(src)
    return stage(src)


def _handle(handler: Handler, exn: BaseException) -> bool:
    """True: skip and continue; False: stop. Re-raises when the handler does."""
    return bool(handler(exn))


# ------------------------------------------------------------------------------------------
# per-sample functions
# ------------------------------------------------------------------------------------------


class map(Stage):  # noqa: A001 - webdataset's public name
    """Apply ``f`` to every sample; ``None`` results are dropped, as in webdataset.

    A dict result of a dict sample keeps the sample's ``__key__`` unless ``f`` set one.
    """

    def __init__(self, f: Callable[[Any], Any], handler: Handler = reraise_exception):
        self.f = f
        self.handler = handler

    def apply(self, src, world):
        f = self.f
        handler = self.handler
        for sample in src:
            try:
                result = f(sample)
            except Exception as exn:
                if _handle(handler, exn):
                    continue
                return
            if result is None:
                continue
            if isinstance(result, dict) and isinstance(sample, dict) and "__key__" in sample:
                result.setdefault("__key__", sample["__key__"])  # webdataset keeps the key
            yield result


class select(Stage):
    """Keep samples for which ``predicate(sample)`` is true."""

    def __init__(self, predicate: Callable[[Any], bool]):
        self.predicate = predicate

    def apply(self, src, world):
        return builtins.filter(self.predicate, src)


class decode(Stage):
    """Decode fields by extension: ``decode("rgb")``, ``decode("pil", my_handler)``, ``decode()``.

    String arguments are image specs (``rgb``, ``torchrgb``, ``l8``, ``pil``, ...); callables are
    ``handler(key, data) -> value | None``. Basic types (json, cls, txt, npy, ...) are always
    decoded. ``only`` restricts decoding to some fields. ``trusted=True`` loads pickles and
    ``.pth`` files in full (see :mod:`cloudwds.security`; default: ``WDS_TRUSTED``).
    """

    def __init__(
        self,
        *args: Any,
        handler: Handler = reraise_exception,
        only: Sequence[str] | str | None = None,
        partial: bool = False,
        trusted: bool | None = None,
    ):
        from .codecs import make_decoder

        self.args = args
        self.handler = handler
        self.only = only
        self.partial = partial
        self.trusted = trusted
        self._decoder = make_decoder(*args, only=only, partial=partial, trusted=trusted)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_decoder")
        return state

    def __setstate__(self, state):
        from .codecs import make_decoder

        self.__dict__.update(state)
        self._decoder = make_decoder(
            *self.args, only=self.only, partial=self.partial, trusted=self.trusted
        )

    def apply(self, src, world):
        decoder = self._decoder
        handler = self.handler
        for sample in src:
            try:
                yield decoder(sample)
            except Exception as exn:
                if _handle(handler, exn):
                    continue
                return


def _alternatives(spec: str | Sequence[str]) -> tuple[str, ...]:
    return tuple(spec.split(";")) if isinstance(spec, str) else tuple(spec)


def _first(sample: dict[str, Any], keys: tuple[str, ...], missing_is_error: bool) -> Any:
    for key in keys:
        if key in sample:
            return sample[key]
    if missing_is_error:
        raise MissingKeyError(
            f"sample {sample.get('__key__')!r} has none of {list(keys)}; "
            f"it has {sorted(k for k in sample if not k.startswith('__'))}",
            sample.get("__url__"),
            sample.get("__key__"),
        )
    return None


class to_tuple(Stage):
    """Turn dict samples into tuples: ``to_tuple("jpg;png", "cls")`` (first present key wins)."""

    def __init__(
        self,
        *args: str,
        handler: Handler = reraise_exception,
        missing_is_error: bool = True,
        none_is_error: bool | None = None,
    ):
        if len(args) == 1 and isinstance(args[0], str) and " " in args[0]:
            args = tuple(args[0].split())
        self.args = args
        self.handler = handler
        self.missing_is_error = missing_is_error
        self.none_is_error = missing_is_error if none_is_error is None else none_is_error

    def apply(self, src, world):
        fields = [_alternatives(a) for a in self.args]
        missing_is_error = self.missing_is_error
        none_is_error = self.none_is_error
        handler = self.handler
        for sample in src:
            try:
                result = tuple(_first(sample, keys, missing_is_error) for keys in fields)
                if none_is_error and any(x is None for x in result):
                    index = [x is None for x in result].index(True)
                    raise MissingKeyError(
                        f"field {self.args[index]!r} is None",
                        sample.get("__url__"),
                        sample.get("__key__"),
                    )
            except Exception as exn:
                if _handle(handler, exn):
                    continue
                return
            yield result


class map_tuple(Stage):
    """Apply one function per tuple position; ``None`` leaves that position unchanged."""

    def __init__(self, *fs: Callable[[Any], Any] | None, handler: Handler = reraise_exception):
        self.fs = fs
        self.handler = handler

    def apply(self, src, world):
        fs = self.fs
        handler = self.handler
        for sample in src:
            try:
                out = list(sample)
                for i, f in enumerate(fs[: len(out)]):
                    if f is not None:
                        out[i] = f(out[i])
            except Exception as exn:
                if _handle(handler, exn):
                    continue
                return
            yield tuple(out)


class map_dict(Stage):
    """Apply functions to named fields: ``map_dict(jpg=augment, cls=int)``."""

    def __init__(self, handler: Handler = reraise_exception, **fs: Callable[[Any], Any]):
        if not fs:
            raise ValueError("map_dict needs at least one field=function")
        self.fs = fs
        self.handler = handler

    def apply(self, src, world):
        fs = self.fs
        handler = self.handler
        for sample in src:
            try:
                out = dict(sample)
                for key, f in fs.items():
                    if key not in out:
                        raise MissingKeyError(
                            f"map_dict: no field {key!r}", out.get("__url__"), out.get("__key__")
                        )
                    out[key] = f(out[key])
            except Exception as exn:
                if _handle(handler, exn):
                    continue
                return
            yield out


class rename(Stage):
    """Rename fields: ``rename(image="jpg;png", label="cls")``.

    ``keep=True`` keeps the fields not renamed; ``keep=False`` keeps *only* the renamed fields,
    as webdataset does — metadata included, so add ``__key__="__key__"`` to keep the key.
    """

    def __init__(self, handler: Handler = reraise_exception, keep: bool = True, **kw: str):
        self.kw = kw
        self.keep = keep
        self.handler = handler

    def apply(self, src, world):
        targets = {new: _alternatives(old) for new, old in self.kw.items()}
        replaced = {k for keys in targets.values() for k in keys}
        handler = self.handler
        for sample in src:
            try:
                if self.keep:
                    out = {k: v for k, v in sample.items() if k not in replaced}
                else:
                    out = {}
                for new, keys in targets.items():
                    out[new] = _first(sample, keys, True)
            except Exception as exn:
                if _handle(handler, exn):
                    continue
                return
            yield out


class rename_keys(Stage):
    """Rename fields by glob patterns: ``rename_keys(("image", "*.jpg"), label="*.cls")``."""

    def __init__(
        self,
        *args: tuple[str, str],
        keep_unselected: bool = False,
        must_match: bool = True,
        duplicate_is_error: bool = True,
        **kw: str,
    ):
        self.renamings = tuple(args) + tuple(kw.items())
        self.keep_unselected = keep_unselected
        self.must_match = must_match
        self.duplicate_is_error = duplicate_is_error

    def apply(self, src, world):
        import fnmatch

        for sample in src:
            out: dict[str, Any] = {}
            matched = set()
            for key, value in sample.items():
                if key.startswith("__"):
                    out[key] = value
                    continue
                for new, pattern in self.renamings:
                    if fnmatch.fnmatch(key.lower(), pattern):
                        if new in out and self.duplicate_is_error:
                            raise ValueError(
                                f"rename_keys: two fields map to {new!r} in {sample.get('__key__')!r}"
                            )
                        out[new] = value
                        matched.add(new)
                        break
                else:
                    if self.keep_unselected:
                        out[key] = value
            if self.must_match:
                missing = {new for new, _ in self.renamings} - matched
                if missing:
                    raise MissingKeyError(
                        f"rename_keys: no field for {sorted(missing)}",
                        sample.get("__url__"),
                        sample.get("__key__"),
                    )
            yield out


class rsample(Stage):
    """Keep each sample with probability ``p`` (seeded per epoch, rank and worker)."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def apply(self, src, world):
        rng = world.rng("rsample")
        p = self.p
        return (s for s in src if rng.random() < p)


class slice(Stage):  # noqa: A001 - webdataset's public name
    """``itertools.islice`` over the stream: ``slice(10)``, ``slice(5, 100, 2)``."""

    def __init__(self, *args: int | None):
        self.args = args

    def apply(self, src, world):
        return itertools.islice(src, *self.args)


# ------------------------------------------------------------------------------------------
# buffering stages
# ------------------------------------------------------------------------------------------


class shuffle(Stage):
    """Shuffle with a buffer of ``bufsize`` samples, starting to yield once ``initial`` are held.

    The random generator is derived from ``(seed, epoch, rank, worker)`` (see
    :class:`~cloudwds.world.World`); an explicit ``seed`` here replaces the pipeline's seed for
    this stage, ``rng`` (a :class:`random.Random`) overrides both. ``bufsize <= 1`` is a no-op.
    """

    def __init__(
        self,
        bufsize: int = 1000,
        initial: int = 100,
        rng: random.Random | None = None,
        seed: int | None = None,
        handler: Handler | None = None,
    ):
        self.bufsize = bufsize
        self.initial = initial
        self.seed = seed
        self.rng = rng

    def apply(self, src, world):
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

    def apply(self, src, world):
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

    def apply(self, src, world):
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


class compose_fn(Stage):
    """Wrap a plain ``iterator -> iterator`` function (as ``.compose(f)`` takes)."""

    def __init__(self, f: Callable[[Iterator[Any]], Iterator[Any]]):
        self.f = f

    def apply(self, src, world):
        return self.f(src)
