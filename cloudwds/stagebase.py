"""The stage protocol: :class:`Stage` (cloudwds), :class:`PipelineStage` (webdataset), and how
a pipeline applies either to a stream (:func:`apply_stage`).

A :class:`Stage` receives the iteration's :class:`~cloudwds.world.World` (epoch, rank, worker,
seed) through :meth:`Stage.apply`, which is how random stages get stable, per-epoch seeds
without any global state; called directly (``stage(src)``) it uses the caller's world.

Recipe and run: a stage object is a *recipe* (its arguments; shared by fluent copies, pickled
to DataLoader workers). A :class:`StatefulStage` keeps nothing about an iteration on itself:
:meth:`StatefulStage.start` returns a :class:`StageRun`, an iterator that owns the position
(and random state, open streams) of that one iteration and reports it with ``state_dict()``.
Two live iterations of one stage therefore never share a position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .handlers import Handler
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


class StageRun(Iterator[Any]):
    """One iteration of a :class:`StatefulStage`: yields its items and owns their position.

    Subclasses implement :meth:`_items` (a generator over ``self``'s fields) and
    :meth:`state_dict`; ``close()`` ends the iteration (open shards close with it).
    """

    def __init__(self) -> None:
        self._gen: Iterator[Any] | None = None

    def _items(self) -> Iterator[Any]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The position after the last item this run handed out (a few JSON-able values)."""
        raise NotImplementedError

    def __iter__(self) -> StageRun:
        return self

    def __next__(self) -> Any:
        if self._gen is None:
            self._gen = self._items()
        return next(self._gen)

    def close(self) -> None:
        gen, self._gen = self._gen, None
        close = getattr(gen, "close", None)
        if close is not None:
            close()


class StatefulStage(Stage):
    """A stage whose iterations have a resumable position (tar reader, exact source, mixer).

    :meth:`start` builds a :class:`StageRun` from an explicit ``state`` (``None``: the start).
    Pipelines call it with the state they were asked to resume. Used directly as an iterator
    factory (``stage.apply(src, world)``, ``stage(src)``), the stage also offers the
    webdataset-era convenience of ``load_state_dict`` (applies to the next ``apply``) and
    ``state_dict`` (the most recently started run's position).
    """

    def start(
        self, src: Iterable[Any], world: World, state: Mapping[str, Any] | None = None
    ) -> StageRun:
        raise NotImplementedError

    def fresh_state(self) -> dict[str, Any]:
        """The state of a run that has handed out nothing yet."""
        return {}

    def check_state(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """Validate a loaded state (raise ``ValueError``); ``None`` means "from the start"."""
        return dict(state) if state else None

    def apply(self, src: Iterable[Any], world: World) -> Iterator[Any]:
        staged = self.__dict__.pop("_staged", None)
        run = self.start(src, world, staged)
        self.__dict__["_last_run"] = run
        return run

    def state_dict(self) -> dict[str, Any]:
        run: StageRun | None = self.__dict__.get("_last_run")
        if run is not None:
            return run.state_dict()
        staged = self.__dict__.get("_staged")
        return dict(staged) if staged is not None else self.fresh_state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.__dict__["_staged"] = self.check_state(state)
        self.__dict__.pop("_last_run", None)

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles (fluent copies, DataLoader workers) never carry a live run
        return {k: v for k, v in self.__dict__.items() if k != "_last_run"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


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

    def __call__(self, *args: Any, **kw: Any) -> Any:
        return self.run(*args, **kw)


def apply_stage(stage: Callable[..., Any], src: Iterable[Any], world: World) -> Iterator[Any]:
    """Apply a :class:`Stage` with the world, a :class:`PipelineStage` through ``run(src)``,
    or any plain ``iterator -> iterator`` callable."""
    if isinstance(stage, Stage):
        return stage.apply(src, world)
    out: Iterator[Any] = stage.run(src) if isinstance(stage, PipelineStage) else stage(src)
    return out


def handle_error(handler: Handler, exn: BaseException, count: bool = False) -> bool:
    """Ask ``handler`` about ``exn``: True = skip and continue, False = stop quietly.

    The one place stages consult their ``handler=``; it re-raises when the handler does, and
    with ``count`` adds the error to the ``errors`` statistic (shard-level failures).
    """
    if count:
        from .stats import COUNTERS

        COUNTERS.add("errors")
    return bool(handler(exn))


def handled(src: Iterable[Any], fn: Callable[[Any], Any], handler: Handler) -> Iterator[Any]:
    """``fn(item)`` for each item of ``src``; a failure goes to ``handler`` (skip it or stop).

    The per-item stages (``map``, ``decode``, ``to_tuple``...) share this one loop instead of
    each copying the try/except.
    """
    for item in src:
        try:
            out = fn(item)
        except Exception as exn:  # noqa: BLE001 - any error of fn goes to the user's handler
            if handle_error(handler, exn):
                continue
            return
        yield out
