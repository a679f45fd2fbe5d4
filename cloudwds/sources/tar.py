"""Stages that open shard items and expand them into samples: tar, CBOR and MsgPack.

Imported as :mod:`cloudwds.sources` (the package re-exports every public name).

Every shard is opened through :mod:`cloudwds.storage` and closed in a ``finally`` even when the
consumer stops mid-shard, so abandoned ``pipe:`` commands and HTTP connections do not leak.
A ``pipe:`` shard read to its end is drained to EOF, so a failing command raises
:class:`~cloudwds.errors.PipeError` even when its output was a complete archive.
While one shard is read, the next ``prefetch`` shards of this worker's list are fetched into
the shard cache in the background (when a cache is configured).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..allocator import configure_allocator

# imported with the dataset, not in every DataLoader worker at its first sample (see workerproc)
from ..cache.prefetch import PrefetchGroup
from ..errors import CloudWdsError, ShardError
from ..handlers import Handler, reraise_exception
from ..samples import cbor_items, group_members, msgpack_items, tar_samples
from ..stagebase import StageRun, StatefulStage, handle_error
from ..stats import COUNTERS, count_samples
from ..storage import StorageConfig, is_remote, open_shard, prefetch_shard
from ..storage.pipe import PipeReader
from ..tario import DEFAULT_BUFSIZE, iter_members, resolve_max_member_size
from ..world import World


def _url_and_storage(item: Any, stage: _ShardExpander) -> tuple[str, StorageConfig]:
    """The shard's URL and the config to open it with: the item's own (the shard list's, so
    one pipeline shares one config and one cache), else the stage's, resolved once."""
    if isinstance(item, dict):
        url = item["url"]
        storage = getattr(item, "storage", None) or item.get("storage")
    else:
        url, storage = item, None
    return url, storage or stage.storage_config()


def _read_to_end(opened: Any) -> None:
    """Drain a ``pipe:`` stream after the archive's end marker to collect the exit status.

    The tar reader stops at the end-of-archive block; without this, a command that wrote a
    whole archive and then failed (``pipe:cat shard.tar; exit 3``) would pass unnoticed.
    """
    stream = opened.stream
    if isinstance(stream, PipeReader):
        try:
            while stream.read(1 << 16):
                pass
        except ValueError:  # already at EOF: PipeReader closed stdout and checked the status
            pass


class _ShardExpander(StatefulStage):
    """Open each shard item and expand it with ``self.expand(opened)``; shared error policy.

    A recipe: each iteration is an :class:`_ExpandRun` that owns its position. State::

        {"shards_done": 2, "in_shard": 17}   # shard items finished, samples of the current one

    Resuming skips ``shards_done`` items without opening them and parses but does not return
    the first ``in_shard`` samples of the next; the shard stream must be the same as when the
    state was taken (same seed, epoch and topology).
    """

    def __init__(
        self,
        handler: Handler = reraise_exception,
        storage: StorageConfig | None = None,
        prefetch: int | None = None,
    ):
        self.handler = handler
        self.storage = storage
        self.prefetch = prefetch

    def storage_config(self) -> StorageConfig:
        """The stage's config, resolved from the environment ONCE when none was passed.

        Resolving per shard built a new ShardCache (index + prefetch pool) for every shard,
        so prefetch and open used different caches; one pipeline now shares one.
        """
        if self.storage is None:
            self.storage = StorageConfig.resolve()
        return self.storage

    drain = False  # read the stream to EOF after expand() (the tar reader stops early)

    def expand(self, opened: Any) -> Iterator[Any]:
        raise NotImplementedError

    def fresh_state(self) -> dict[str, Any]:
        return {"shards_done": 0, "in_shard": 0}

    def check_state(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        return {
            "shards_done": int(state.get("shards_done", 0)),
            "in_shard": int(state.get("in_shard", 0)),
        }

    def start(
        self,
        src: Iterable[Any],
        world: World,  # noqa: ARG002 - the StatefulStage.start signature; the reader needs no world
        state: Mapping[str, Any] | None = None,
    ) -> StageRun:
        position = self.check_state(state or {}) or self.fresh_state()
        return _ExpandRun(self, src, (position["shards_done"], position["in_shard"]))


class _ExpandRun(StageRun):
    """One pass of a :class:`_ShardExpander` over its shard items; owns the position."""

    def __init__(self, stage: _ShardExpander, src: Iterable[Any], resume: tuple[int, int]):
        super().__init__()
        self.stage = stage
        self.src = src
        self.resume = resume
        # reported as-is until the run moves on: a checkpoint taken before the first sample
        # of a resumed run must not rewind it
        self.position = resume

    def state_dict(self) -> dict[str, Any]:
        done, in_shard = self.position
        return {"shards_done": done, "in_shard": in_shard}

    def _items(self) -> Iterator[Any]:
        with PrefetchGroup() as group:  # this iteration's prefetches end with it
            yield from self._expand_shards(group)

    def _expand_shards(self, group: Any) -> Iterator[Any]:
        stage = self.stage
        items = iter(self.src)
        skip_shards, skip_samples = self.resume
        for _ in range(skip_shards):
            if next(items, None) is None:
                break
        done = skip_shards
        self.position = (done, 0)
        ahead: deque[Any] = deque()
        handler = stage.handler
        while True:
            if ahead:
                item = ahead.popleft()
            else:
                item = next(items, None)
                if item is None:
                    return
            url, storage = _url_and_storage(item, stage)
            depth = stage.prefetch if stage.prefetch is not None else storage.prefetch
            # Look ahead only for remote shards: local ones gain nothing from the cache, and
            # pulling items early would let a work queue (DirectoryShardList) mark the shard
            # being read as done before it is opened.
            if depth and storage.cache is not None and is_remote(url, storage):
                while len(ahead) < depth:
                    nxt = next(items, None)
                    if nxt is None:
                        break
                    ahead.append(nxt)
                for upcoming in ahead:
                    prefetch_shard(*_url_and_storage(upcoming, stage), group)
            try:
                opened = open_shard(url, storage)
            except Exception as exn:  # noqa: BLE001 - the user's handler decides on any error
                if handle_error(handler, exn, count=True):
                    continue
                return
            COUNTERS.add("shards_opened")
            try:
                in_shard = 0
                for sample in stage.expand(opened):
                    if skip_samples:
                        skip_samples -= 1
                        in_shard += 1
                        continue
                    in_shard += 1
                    self.position = (done, in_shard)
                    count_samples()
                    yield sample
                if stage.drain:
                    _read_to_end(opened)
            except CloudWdsError as exn:
                go_on = handle_error(handler, exn, count=True)
                partial = getattr(exn, "partial_sample", None)
                if partial is not None:
                    yield partial  # the handler swallowed the cut: hand out what was read, as webdataset
                if go_on:
                    continue
                return
            except Exception as exn:  # noqa: BLE001 - wrapped with the URL, passed to the handler
                wrapped = ShardError(f"{type(exn).__name__}: {exn}", url)
                wrapped.__cause__ = exn
                if handle_error(handler, wrapped, count=True):
                    continue
                return
            finally:
                opened.close()
                skip_samples = 0
                done += 1
                self.position = (done, 0)


class tarfile_to_samples(_ShardExpander):
    """Shard items (URLs or ``{"url": ...}``) → samples ``{"__key__", "__url__", fields...}``.

    ``select_files(name) -> bool`` and ``rename_files(name) -> name`` see each member's name
    before grouping, as in webdataset: renaming first, then selection on the new name.
    ``max_member_size`` (bytes or ``"4G"``; default ``WDS_MAX_MEMBER_SIZE``, else 8 GiB) refuses
    larger members with ``MemberTooLargeError`` (see docs/untrusted-input.md).
    """

    def __init__(
        self,
        handler: Handler = reraise_exception,
        select_files: Callable[[str], bool] | None = None,
        rename_files: Callable[[str], str] | None = None,
        storage: StorageConfig | None = None,
        prefetch: int | None = None,
        bufsize: int = DEFAULT_BUFSIZE,
        max_member_size: int | str | None = None,
    ):
        configure_allocator()  # WDS_MALLOPT read here, not per member
        super().__init__(handler, storage, prefetch)
        self.select_files = select_files
        self.rename_files = rename_files
        self.bufsize = bufsize
        self.max_member_size = resolve_max_member_size(max_member_size)

    drain = True

    def expand(self, opened: Any) -> Iterator[Any]:
        if self.select_files is None and self.rename_files is None:
            return tar_samples(
                opened.stream,
                opened.url,
                opened.local_path,
                self.bufsize,
                max_member_size=self.max_member_size,
            )
        members = iter_members(
            opened.stream,
            opened.url,
            bufsize=self.bufsize,
            max_member_size=self.max_member_size,
        )
        chosen = _rename_select(members, self.rename_files, self.select_files)
        return group_members(chosen, opened.url, opened.local_path)


def _rename_select(
    members: Iterable[tuple[str, bytes]],
    rename: Callable[[str], str] | None,
    select: Callable[[str], bool] | None,
) -> Iterator[tuple[str, bytes]]:
    for name, data in members:
        if rename is not None:
            name = rename(name)
        if select is None or select(name):
            yield name, data


class cbors_to_samples(_ShardExpander):
    """Shard items naming files of concatenated CBOR values → one sample per value."""

    def expand(self, opened: Any) -> Iterator[Any]:
        return cbor_items(opened.stream)


class msgpack_to_samples(_ShardExpander):
    """Shard items naming files of concatenated MsgPack values → one sample per value."""

    def expand(self, opened: Any) -> Iterator[Any]:
        return msgpack_items(opened.stream)
