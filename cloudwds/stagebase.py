"""The stage protocol: :class:`Stage` (cloudwds), :class:`PipelineStage` (webdataset), and how
a pipeline applies either to a stream (:func:`apply_stage`).

A :class:`Stage` receives the iteration's :class:`~cloudwds.world.World` (epoch, rank, worker,
seed) through :meth:`Stage.apply`, which is how random stages get stable, per-epoch seeds
without any global state; called directly (``stage(src)``) it uses the caller's world.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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
    if isinstance(stage, PipelineStage):
        return stage.run(src)
    return stage(src)


def _handle(handler: Handler, exn: BaseException) -> bool:
    """True: skip and continue; False: stop. Re-raises when the handler does."""
    return bool(handler(exn))
