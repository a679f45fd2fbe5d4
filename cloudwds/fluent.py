"""The fluent shorthands shared by :class:`~cloudwds.pipeline.DataPipeline`, ``WebDataset`` and
``WebLoader``: ``.map(f)`` is ``.compose(map(f))``, and so on for every webdataset method.

They live apart from the pipeline because ``WebLoader`` uses them too without being a pipeline:
each class supplies ``compose`` (append stages to a *copy* of itself) and inherits the rest.
Every method returns ``Self``, so a chain started on a ``WebDataset`` stays a ``WebDataset``
for type checkers as it does at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from . import stages as st
from .handlers import Handler, reraise_exception


class FluidInterface:
    """Fluent shorthands; each appends a stage to a copy of the pipeline (or loader)."""

    def compose(self, *stages: Callable[..., Any]) -> Self:
        raise NotImplementedError

    def shuffle(self, bufsize: int = 1000, initial: int = 100, **kw: Any) -> Self:
        return self.compose(st.shuffle(bufsize, initial, **kw))

    def map(self, f: Callable[[Any], Any], handler: Handler = reraise_exception) -> Self:
        return self.compose(st.map(f, handler=handler))

    def select(self, predicate: Callable[[Any], bool]) -> Self:
        return self.compose(st.select(predicate))

    def decode(self, *args: Any, **kw: Any) -> Self:
        return self.compose(st.decode(*args, **kw))

    def to_tuple(self, *args: str, **kw: Any) -> Self:
        """Dict samples → tuples (a pipeline right after ``.decode()`` decodes only these fields)."""
        return self.compose(st.to_tuple(*args, **kw))

    def map_tuple(self, *fs: Any, handler: Handler = reraise_exception) -> Self:
        return self.compose(st.map_tuple(*fs, handler=handler))

    def map_dict(self, handler: Handler = reraise_exception, **fs: Any) -> Self:
        return self.compose(st.map_dict(handler=handler, **fs))

    def rename(self, **kw: Any) -> Self:
        return self.compose(st.rename(**kw))

    def rename_keys(self, *args: Any, **kw: Any) -> Self:
        return self.compose(st.rename_keys(*args, **kw))

    def batched(
        self,
        batchsize: int,
        collation_fn: Callable[[list[Any]], Any] | None = st.default_collation_fn,
        partial: bool = True,
    ) -> Self:
        return self.compose(st.batched(batchsize, collation_fn=collation_fn, partial=partial))

    def unbatched(self) -> Self:
        return self.compose(st.unbatched())

    def slice(self, *args: int | None) -> Self:
        return self.compose(st.slice(*args))

    def rsample(self, p: float = 0.5) -> Self:
        return self.compose(st.rsample(p))

    # -- the rest of webdataset's fluent methods --------------------------------------------
    def listed(self, batchsize: int, partial: bool = True) -> Self:
        """Lists of ``batchsize`` samples, not collated."""
        return self.compose(st.batched(batchsize, collation_fn=None, partial=partial))

    def unlisted(self) -> Self:
        """Flatten lists of samples."""
        from .filters import unlisted

        return self.compose(unlisted())

    def log_keys(self, logfile: str | None = None) -> Self:
        from .filters import log_keys

        return self.compose(log_keys(logfile))

    def extract_keys(self, *args: Any, **kw: Any) -> Self:
        from .filters import extract_keys

        return self.compose(extract_keys(*args, **kw))

    def xdecode(self, *args: Any, **kw: Any) -> Self:
        from .filters import xdecode

        return self.compose(xdecode(*args, **kw))

    def mcached(self) -> Self:
        """Keep the samples of the first complete pass in memory (:class:`~cloudwds.Cached`)."""
        from .extrastages import Cached

        return self.compose(Cached())

    def lmdb_cached(self, *args: Any, **kw: Any) -> Self:
        """Keep the samples of the first complete pass in an LMDB file (:class:`~cloudwds.LMDBCached`)."""
        from .extrastages import LMDBCached

        return self.compose(LMDBCached(*args, **kw))
