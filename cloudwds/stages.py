"""Sample-stream stages: shuffle, map, select, decode, to_tuple, rename, batched, ...

Each public name (``shuffle(1000)``, ``map(f)``) returns a small :class:`Stage` object: it pickles
without closures (DataLoader with ``spawn``), prints readably, and is applied to an iterator with
``stage(src)``. Inside a :class:`~cloudwds.pipeline.DataPipeline`, stages receive the iteration's
:class:`~cloudwds.world.World` (epoch, rank, worker, seed) through :meth:`Stage.apply`, which is
how random stages get stable, per-epoch seeds without any global state. The protocol lives in
:mod:`cloudwds.stagebase`, the buffering stages (shuffle, batched, unbatched) in
:mod:`cloudwds.buffers`; both are re-exported here.

Error policy: stages that run user code or decoders take ``handler`` (see
:mod:`cloudwds.handlers`); it decides whether a failing sample is skipped or ends the stream.
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .buffers import _shuffled as _shuffled
from .buffers import _shuffled_webdataset as _shuffled_webdataset
from .buffers import batched as batched
from .buffers import default_collation_fn as default_collation_fn
from .buffers import shuffle as shuffle
from .buffers import unbatched as unbatched
from .errors import MissingKeyError
from .handlers import Handler, reraise_exception
from .stagebase import PipelineStage as PipelineStage
from .stagebase import Stage as Stage
from .stagebase import apply_stage as apply_stage
from .stagebase import handled
from .world import World as World

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

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:  # noqa: ARG002 - Stage.apply's signature
        f = self.f

        def one(sample: Any) -> Any:
            result = f(sample)
            if isinstance(result, dict) and isinstance(sample, dict) and "__key__" in sample:
                result.setdefault("__key__", sample["__key__"])  # webdataset keeps the key
            return result

        return (r for r in handled(src, one, self.handler) if r is not None)


class select(Stage):
    """Keep samples for which ``predicate(sample)`` is true."""

    def __init__(self, predicate: Callable[[Any], bool]):
        self.predicate = predicate

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:  # noqa: ARG002 - Stage.apply's signature
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

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_decoder")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from .codecs import make_decoder

        self.__dict__.update(state)
        self._decoder = make_decoder(
            *self.args, only=self.only, partial=self.partial, trusted=self.trusted
        )

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:  # noqa: ARG002 - Stage.apply's signature
        return handled(src, self._decoder, self.handler)


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

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:  # noqa: ARG002 - Stage.apply's signature
        fields = [_alternatives(a) for a in self.args]
        missing_is_error = self.missing_is_error
        none_is_error = self.none_is_error

        def one(sample: Any) -> tuple[Any, ...]:
            result = tuple(_first(sample, keys, missing_is_error) for keys in fields)
            if none_is_error and any(x is None for x in result):
                index = [x is None for x in result].index(True)
                raise MissingKeyError(
                    f"field {self.args[index]!r} is None",
                    sample.get("__url__"),
                    sample.get("__key__"),
                )
            return result

        return handled(src, one, self.handler)


class map_tuple(Stage):
    """Apply one function per tuple position; ``None`` leaves that position unchanged."""

    def __init__(self, *fs: Callable[[Any], Any] | None, handler: Handler = reraise_exception):
        self.fs = fs
        self.handler = handler

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:  # noqa: ARG002 - Stage.apply's signature
        fs = self.fs

        def one(sample: Any) -> tuple[Any, ...]:
            out = list(sample)
            for i, f in enumerate(fs[: len(out)]):
                if f is not None:
                    out[i] = f(out[i])
            return tuple(out)

        return handled(src, one, self.handler)


class map_dict(Stage):
    """Apply functions to named fields: ``map_dict(jpg=augment, cls=int)``."""

    def __init__(self, handler: Handler = reraise_exception, **fs: Callable[[Any], Any]):
        if not fs:
            raise ValueError("map_dict needs at least one field=function")
        self.fs = fs
        self.handler = handler

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:  # noqa: ARG002 - Stage.apply's signature
        fs = self.fs

        def one(sample: Any) -> dict[str, Any]:
            out = dict(sample)
            for key, f in fs.items():
                if key not in out:
                    raise MissingKeyError(
                        f"map_dict: no field {key!r}", out.get("__url__"), out.get("__key__")
                    )
                out[key] = f(out[key])
            return out

        return handled(src, one, self.handler)


class rename(Stage):
    """Rename fields: ``rename(image="jpg;png", label="cls")``.

    ``keep=True`` keeps the fields not renamed; ``keep=False`` keeps *only* the renamed fields,
    as webdataset does — metadata included, so add ``__key__="__key__"`` to keep the key.
    """

    def __init__(self, handler: Handler = reraise_exception, keep: bool = True, **kw: str):
        self.kw = kw
        self.keep = keep
        self.handler = handler

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:  # noqa: ARG002 - Stage.apply's signature
        targets = {new: _alternatives(old) for new, old in self.kw.items()}
        replaced = {k for keys in targets.values() for k in keys}
        keep = self.keep

        def one(sample: Any) -> dict[str, Any]:
            out = {k: v for k, v in sample.items() if k not in replaced} if keep else {}
            for new, keys in targets.items():
                out[new] = _first(sample, keys, True)
            return out

        return handled(src, one, self.handler)


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

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:  # noqa: ARG002 - Stage.apply's signature
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

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:
        rng = world.rng("rsample")
        p = self.p
        return (s for s in src if rng.random() < p)


class slice(Stage):  # noqa: A001 - webdataset's public name
    """``itertools.islice`` over the stream: ``slice(10)``, ``slice(5, 100, 2)``."""

    def __init__(self, *args: int | None):
        self.args = args

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:  # noqa: ARG002 - Stage.apply's signature
        return itertools.islice(src, *self.args)
