"""The fluent ``WebDataset``: shard list, splitting, shuffling and tar reading, as a pipeline.

``WebDataset(urls, ...)`` builds a :class:`~cloudwds.pipeline.DataPipeline` whose first stages
are chosen from the arguments (webdataset's positional order): the shard source (a list, a
resampled stream, a dataset spec or an exact-epoch source; a directory is the shards in it), the rank and
worker splitters, the shard shuffle, the tar reader, and the empty-dataset check.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Self

from .handlers import Handler, reraise_exception
from .pipeline import DataPipeline
from .shards import split_by_node, split_by_worker
from .sources import tarfile_to_samples
from .sources.chain import shard_stages
from .storage import StorageConfig

log = logging.getLogger("cloudwds")


def _check_empty(src: Iterable[Any]) -> Iterator[Any]:
    """``empty_check=True``: an iteration that yields no sample at all is an error (webdataset)."""
    empty = True
    for sample in src:
        empty = False
        yield sample
    if empty:
        raise ValueError(
            "No samples found in dataset; perhaps you have fewer shards than workers.\n"
            "Turn off using empty_check=False in the WebDataset constructor."
        )


def _is_directory_url(urls: Any) -> bool:
    """A local directory given as the dataset (``"dir/"``, ``"dir"``, a ``PathLike``).

    It stands for the shards inside, sorted (:func:`~cloudwds.directory.shards_in_directory`).
    webdataset made such a URL a :class:`DirectoryShardList` work queue, which renames the
    user's files as it claims them; that queue is available, explicitly, under its own name.
    """
    return isinstance(urls, str | os.PathLike) and os.path.isdir(urls)


class WebDataset(DataPipeline):
    """The fluent dataset: ``WebDataset(urls).shuffle(1000).decode("rgb").to_tuple("png", "json")``.

    Shards are split by rank (``RANK``/``WORLD_SIZE`` or ``torch.distributed``) and then by
    DataLoader worker by default. ``shardshuffle=True`` (or any number) permutes the shard list
    each epoch with the same permutation on every rank; ``resampled=True`` draws shards at
    random forever (combine with ``.with_epoch(n)``). Storage arguments (``storage_options``,
    ``cache_dir``, ``cache_size``, ``prefetch``, ``rewrites``) are resolved once here, explicit
    values winning over ``WDS_*`` environment variables.

    The arguments up to ``seed`` are webdataset's, in its positional order: ``mode="resampled"``
    is ``resampled=True``; ``select_files``/``rename_files`` see each tar member's name;
    ``empty_check`` is ``None`` by default (a rank or worker without shards logs a warning),
    ``True`` raises ``ValueError`` when an iteration yields no sample (webdataset's default),
    ``False`` is silent. cloudwds's own options are keyword-only after them.
    """

    def __init__(
        self,
        urls: str | Iterable[str],
        handler: Handler = reraise_exception,
        mode: str | None = None,
        resampled: bool = False,
        repeat: bool = False,
        shardshuffle: bool | int | None = None,
        cache_size: int | str | None = None,
        cache_dir: str | os.PathLike[str] | bool | None = None,
        url_to_name: Callable[[str], str] | None = None,
        detshuffle: bool = False,
        nodesplitter: Callable[..., Any] | None = split_by_node,
        workersplitter: Callable[..., Any] | None = split_by_worker,
        select_files: Callable[[str], bool] | None = None,
        rename_files: Callable[[str], str] | None = None,
        empty_check: bool | None = None,
        verbose: bool = False,
        seed: int | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
        prefetch: int | None = None,
        rewrites: Any = None,
        exact_epoch: bool = False,
        remainder: str = "balance",
        batch_size: int | None = None,
        index: Any = None,
        allow_pipe: bool = False,
        max_member_size: int | str | None = None,
        **storage_kwargs: Any,
    ):
        # webdataset's positional order up to ``seed``; ``url_to_name`` (cache file naming),
        # ``detshuffle`` (cloudwds shard shuffles are always deterministic) and ``verbose`` are
        # accepted for it and have no effect: the cache is laid out by full URL.
        del url_to_name, detshuffle, verbose
        if mode == "resampled":
            resampled = True
        elif mode not in (None, "resampled"):
            raise ValueError(f"mode={mode!r}: only None and 'resampled' are supported")
        super().__init__(seed=seed)
        if _is_directory_url(urls):  # the shards inside, sorted, read in place
            from .directory import shards_in_directory

            urls = shards_in_directory(os.fspath(urls))  # type: ignore[arg-type]
        if storage_kwargs:  # a typo must name WebDataset, not StorageConfig.resolve
            from .keywords import check_keywords

            check_keywords(
                "WebDataset",
                storage_kwargs,
                StorageConfig.resolve,
                type(self).__init__,
                exclude=("storage_options", "cache_dir", "cache_size", "rewrites", "prefetch"),
            )
        storage = StorageConfig.resolve(
            storage_options=storage_options,
            cache_dir=cache_dir,
            cache_size=cache_size,
            rewrites=rewrites,
            prefetch=prefetch,
            **storage_kwargs,
        )
        self.storage = storage
        from .spec import MixedSource, is_spec_url

        if is_spec_url(urls):
            self.pipeline.append(
                MixedSource(
                    os.fspath(urls),  # type: ignore[arg-type]
                    handler=handler,
                    storage=storage,
                    resampled=True if resampled else None,
                    shardshuffle=bool(shardshuffle),
                    nodesplitter=nodesplitter,
                    workersplitter=workersplitter,
                    allow_pipe=allow_pipe,
                )
            )
        elif exact_epoch:
            if resampled:
                raise ValueError("exact_epoch=True and resampled=True exclude each other")
            from .exact import ExactEpochSource, shard_counts
            from .urls import expand_urls

            shard_urls = expand_urls(urls)
            self.pipeline.append(
                ExactEpochSource(
                    shard_urls,
                    shard_counts(shard_urls, storage, index),
                    storage,
                    remainder=remainder,
                    shuffle=shardshuffle is None or bool(shardshuffle),
                    batch_size=batch_size or 1,
                    handler=handler,
                )
            )
            self._auto_batch = batch_size is None
        else:  # the one shard chain, shared with dataset specs' collections
            self.pipeline.extend(
                shard_stages(
                    urls,
                    storage=storage,
                    resampled=resampled,
                    seed=self.seed,
                    shardshuffle=bool(shardshuffle),
                    nodesplitter=nodesplitter,
                    workersplitter=workersplitter,
                    warn_if_empty=empty_check is None,
                )
            )
        if not is_spec_url(urls) and not exact_epoch:
            self.pipeline.append(
                tarfile_to_samples(
                    handler=handler,
                    select_files=select_files,
                    rename_files=rename_files,
                    storage=storage,
                    max_member_size=max_member_size,
                )
            )
        if empty_check:
            self.pipeline.append(_check_empty)
        if repeat:
            self.repetitions = None

    # -- exact-epoch mode: the source does the shuffling and knows the batch size -------------
    _auto_batch = False

    def exact_source(self) -> Any:
        from .exact import ExactEpochSource

        source = self.pipeline[0] if self.pipeline else None
        return source if isinstance(source, ExactEpochSource) else None

    def stateful_items(self, batch_size: int | None = None) -> DataPipeline:
        """See :meth:`DataPipeline.stateful_items`; exact mode balances DataLoader batches."""
        inner = self
        if batch_size and batch_size > 1 and self._auto_batch:
            inner = self._with_source(batch_size=int(batch_size))
            inner._epochs = self._epochs  # the loader's copy shares the epoch counter
        return DataPipeline.stateful_items(inner)

    def _with_source(self, **changes: Any) -> Self:
        new = self._copy()
        source = copy.copy(new.pipeline[0])
        for key, value in changes.items():
            setattr(source, key, value)
        new.pipeline[0] = source
        return new

    def shuffle(self, bufsize: int = 1000, initial: int = 100, **kw: Any) -> Self:
        """Shuffle with a buffer of ``bufsize`` samples.

        In exact-epoch mode the source itself delivers each window of ``bufsize`` samples in a
        seeded random order instead (same memory as a buffer, and resumable by position).
        """
        if self.exact_source() is not None:
            return self._with_source(window=max(1, int(bufsize)))
        return super().shuffle(bufsize, initial, **kw)

    def batched(self, batchsize: int, *args: Any, **kw: Any) -> Self:
        """Batches of ``batchsize``; in exact-epoch mode also balances the batch counts."""
        new = super().batched(batchsize, *args, **kw)
        if new.exact_source() is not None and self._auto_batch:
            new = new._with_source(batch_size=int(batchsize))
        return new
