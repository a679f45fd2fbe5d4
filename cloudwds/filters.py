"""webdataset's ``filters`` module: every stage under its name, curried and uncurried.

webdataset defines each stage as a generator ``_name(data, *args)`` and a curried ``name(*args)``
(``pipelinefilter``). Client code uses both: ``wds.shuffle(1000)`` in a pipeline and
``_shuffle(src, bufsize, initial, rng)`` inside its own ``PipelineStage.run`` (open_clip, timm).
Here the curried names are cloudwds's stage objects (picklable, seeded by the pipeline's epoch)
and each ``_name(data, ...)`` applies that stage to ``data`` at once. Nothing here holds logic of
its own beyond the currying helpers.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .extrastages import (
    Cached,
    LMDBCached,
    decode_bin,
    decode_pickle,
    decode_text,
    default_decoders,
    detshuffle,
    find_decoder,
    getfirst,
    parse_field_spec,
    transform_with,
)
from .extrastages import associate as _associate
from .extrastages import extract_keys as _extract_keys
from .extrastages import info as _info
from .extrastages import log_keys as _log_keys
from .extrastages import unlisted as _unlisted
from .extrastages import xdecode as _xdecode
from .handlers import Handler, reraise_exception
from .stages import (
    PipelineStage,
    Stage,
    batched,
    decode,
    default_collation_fn,
    map,
    map_dict,
    map_tuple,
    rename,
    rename_keys,
    rsample,
    select,
    shuffle,
    slice,
    to_tuple,
    unbatched,
)
from .world import World

__all__ = [
    "Cached",
    "FilterFunction",
    "LMDBCached",
    "PipelineStage",
    "RestCurried",
    "associate",
    "batched",
    "compose",
    "combine_values",
    "compose2",
    "decode",
    "decode_bin",
    "decode_pickle",
    "decode_text",
    "default_collation_fn",
    "default_decoders",
    "detshuffle",
    "dict2tuple",
    "extract_keys",
    "find_decoder",
    "getfirst",
    "identity",
    "info",
    "log_keys",
    "map",
    "map_dict",
    "map_tuple",
    "parse_field_spec",
    "pick",
    "pipeline",
    "pipelinefilter",
    "rename",
    "rename_keys",
    "reraise_exception",
    "rsample",
    "select",
    "shuffle",
    "slice",
    "to_tuple",
    "transform_with",
    "tuple2dict",
    "unbatched",
    "unlisted",
    "xdecode",
]


class FilterFunction(Stage):
    """``f`` with every argument but the stream bound: ``FilterFunction(f, 10)(src) == f(src, 10)``.

    Picklable when ``f`` is a module-level function, so curried stages reach spawned workers.
    """

    def __init__(self, f: Callable[..., Any], *args: Any, **kw: Any):
        self.f = f
        self.args = args
        self.kw = kw

    def apply(
        self,
        src: Iterable[Any],
        world: World,  # noqa: ARG002 - Stage.apply's signature; f gets the caller's world
    ) -> Iterator[Any]:
        out: Iterator[Any] = self.f(src, *self.args, **self.kw)
        return out

    def __repr__(self) -> str:
        return f"<{getattr(self.f, '__name__', self.f)} {self.args} {self.kw}>"

    __str__ = __repr__


class RestCurried:
    """Calling it with the arguments after the stream gives a :class:`FilterFunction`."""

    def __init__(self, f: Callable[..., Any]):
        self.f = f

    def __call__(self, *args: Any, **kw: Any) -> FilterFunction:
        return FilterFunction(self.f, *args, **kw)


def pipelinefilter(f: Callable[..., Any]) -> RestCurried:
    """Decorator: ``@pipelinefilter def g(data, n): ...`` makes ``g(n)`` a pipeline stage."""
    result = RestCurried(f)
    functools.update_wrapper(result, f)
    return result


def identity(x: Any) -> Any:
    """Return ``x``."""
    return x


def compose2(f: Callable[[Any], Any], g: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``x -> g(f(x))``."""
    return lambda x: g(f(x))


def compose(*args: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Chain iterator functions left to right."""
    return functools.reduce(compose2, args)


def pipeline(source: Iterable[Any], *args: Callable[[Any], Any]) -> Any:
    """Apply the stages ``args`` to ``source`` in turn."""
    return compose(*args)(source) if args else source


def pick(buf: list[Any], rng: Any) -> Any:
    """Remove and return a random item of ``buf`` (the last item takes its place)."""
    k = rng.randint(0, len(buf) - 1)
    sample = buf[k]
    buf[k] = buf[-1]
    buf.pop()
    return sample


def combine_values(b: list[Any], combine_tensors: bool = True, combine_scalars: bool = True) -> Any:
    """One column of a batch: numbers → array, arrays/tensors → stacked, anything else → list."""
    from .buffers import _combine

    return _combine(list(b), combine_tensors, combine_scalars)


def tuple2dict(row: Any) -> dict[Any, Any]:
    """A tuple as ``{index: value}`` (dicts pass through)."""
    return row if isinstance(row, dict) else dict(enumerate(row))


def dict2tuple(d: dict[int, Any]) -> tuple[Any, ...]:
    """The inverse of :func:`tuple2dict`."""
    return tuple(d[i] for i in range(1 + max(d.keys())))


# -- uncurried forms: _name(data, ...) ---------------------------------------------------------


def _shuffle(
    data: Iterable[Any],
    bufsize: int = 1000,
    initial: int = 100,
    rng: Any = None,
    seed: int | None = None,
    handler: Handler | None = None,  # noqa: ARG001 - webdataset's signature; shuffling raises nothing
) -> Iterator[Any]:
    """Buffer-shuffle ``data`` now (without ``rng`` or ``seed``: seeded by the current world)."""
    return shuffle(bufsize, initial, seed=seed, rng=rng)(data)


def _select(data: Iterable[Any], predicate: Callable[[Any], bool]) -> Iterator[Any]:
    return select(predicate)(data)


def _decode(
    data: Iterable[Any], *args: Any, handler: Handler = reraise_exception, **kw: Any
) -> Iterator[Any]:
    return decode(*args, handler=handler, **kw)(data)


def _map(
    data: Iterable[Any], f: Callable[[Any], Any], handler: Handler = reraise_exception
) -> Iterator[Any]:
    return map(f, handler=handler)(data)


def _rename(
    data: Iterable[Any], handler: Handler = reraise_exception, keep: bool = True, **kw: Any
) -> Iterator[Any]:
    return rename(handler=handler, keep=keep, **kw)(data)


def _map_dict(
    data: Iterable[Any], handler: Handler = reraise_exception, **kw: Any
) -> Iterator[Any]:
    return map_dict(handler=handler, **kw)(data)


def _to_tuple(
    data: Iterable[Any],
    *args: str,
    handler: Handler = reraise_exception,
    missing_is_error: bool = True,
    none_is_error: bool | None = None,
) -> Iterator[Any]:
    return to_tuple(
        *args, handler=handler, missing_is_error=missing_is_error, none_is_error=none_is_error
    )(data)


def _map_tuple(
    data: Iterable[Any], *args: Any, handler: Handler = reraise_exception
) -> Iterator[Any]:
    return map_tuple(*args, handler=handler)(data)


def _batched(
    data: Iterable[Any],
    batchsize: int = 20,
    collation_fn: Callable[[list[Any]], Any] | None = default_collation_fn,
    partial: bool = True,
) -> Iterator[Any]:
    return batched(batchsize, collation_fn=collation_fn, partial=partial)(data)


def _unbatched(data: Iterable[Any]) -> Iterator[Any]:
    return unbatched()(data)


def _rsample(data: Iterable[Any], p: float = 0.5) -> Iterator[Any]:
    return rsample(p)(data)


def _rename_keys(data: Iterable[Any], *args: Any, **kw: Any) -> Iterator[Any]:
    return rename_keys(*args, **kw)(data)


def _slice(data: Iterable[Any], *args: int | None) -> Iterator[Any]:
    return itertools.islice(data, *args)


# -- curried forms of the extra stages -----------------------------------------------------------

info = pipelinefilter(_info)
log_keys = pipelinefilter(_log_keys)
associate = pipelinefilter(_associate)
extract_keys = pipelinefilter(_extract_keys)
xdecode = pipelinefilter(_xdecode)
unlisted = pipelinefilter(_unlisted)
