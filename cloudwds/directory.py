"""A shard source that consumes a local directory as a work queue (webdataset's DirectoryShardList).

A producer drops shards into a directory; each consumer process claims one by renaming it to
``name._<pid>_`` (a rename is atomic, so two processes never claim the same file), yields it,
and afterwards deletes it (``mode="unlink"``), marks it done (``"keep"`` → ``name._done_``), or
puts it back (``"resample"``). Claims of processes that died are put back the same way.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from typing import Any

from .stages import Stage
from .world import World

_MODES = ("unlink", "keep", "resample")

SHARD_SUFFIXES = (".tar", ".tgz", ".tar.gz")


def shards_in_directory(path: str) -> list[str]:
    """The shards (``*.tar``, ``*.tgz``, ``*.tar.gz``) directly inside ``path``, sorted by name.

    This is what ``WebDataset("dir/")`` reads: the user's files, read in place and never
    renamed. The claiming work queue is :class:`DirectoryShardList`, chosen explicitly.
    """
    names = sorted(
        name
        for name in os.listdir(path)
        if name.endswith(SHARD_SUFFIXES) and os.path.isfile(os.path.join(path, name))
    )
    if not names:
        raise ValueError(
            f"no shards ({', '.join('*' + s for s in SHARD_SUFFIXES)}) in directory {path!r}"
        )
    return [os.path.join(path, name) for name in names]


def check_pid_is_running(pid: int) -> bool:
    """True when a process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def without_last_extension(fname: str) -> str:
    """``a.tar._123_`` → ``a.tar``."""
    return re.sub(r"\.[^.]*$", "", fname)


def get_pid_from_filename(fname: str) -> int | None:
    """The claiming pid of ``name._<pid>_``, else None."""
    match = re.match(r"^(.*)\._(\d+)_$", fname)
    return int(match.group(2)) if match else None


class DirectoryShardList(Stage):
    """Yield ``{"url": claimed_path}`` for shards matching ``pattern`` in directory ``path``.

    ``poll`` seconds between scans of an empty directory (``None``: stop when it is empty),
    ``timeout`` seconds without any shard before stopping, ``select`` ``"random"`` or
    ``"oldest"`` (by mtime). The pattern may use braces (``*.{tar,tgz}``).
    """

    def __init__(
        self,
        path: str,
        pattern: str = "*.{tar,tgz,tar.tgz}",
        poll: float | None = 1,
        timeout: float = 1e12,
        mode: str = "resample",
        select: str = "random",
        fate: Any = None,
    ):
        if not path.endswith("/"):
            raise ValueError(f"DirectoryShardList: {path!r} must end with '/'")
        if not os.path.isdir(path):
            raise ValueError(f"DirectoryShardList: {path!r} is not a directory")
        if mode not in _MODES:
            raise ValueError(f"DirectoryShardList: mode must be one of {_MODES}, got {mode!r}")
        if select not in ("random", "oldest"):
            raise ValueError(f"unknown selection strategy {select}")
        self.path = path
        self.pattern = pattern
        self.poll = poll
        self.timeout = timeout
        self.mode = mode
        self.select = select
        self.fate = fate

    def recycle(self, activename: str) -> None:
        """Dispose of a claimed shard according to ``mode``."""
        if self.mode == "unlink":
            os.unlink(activename)
        elif self.mode == "keep":
            os.rename(activename, without_last_extension(activename) + "._done_")
        else:
            os.rename(activename, without_last_extension(activename))

    def cleanup_files_without_processes(self) -> None:
        """Recycle claims whose process no longer runs."""
        for entry in os.listdir(self.path):
            pid = get_pid_from_filename(entry)
            if pid is not None and not check_pid_is_running(pid):
                self.recycle(os.path.join(self.path, entry))

    def _candidates(self) -> list[str]:
        from .utils import glob_with_braces

        return sorted(set(glob_with_braces(self.path + self.pattern)))

    def apply(
        self,
        src: Any,  # noqa: ARG002 - Stage.apply's signature; a source ignores its input
        world: World,  # noqa: ARG002 - Stage.apply's signature; claims are taken, not drawn
    ) -> Iterator[dict[str, Any]]:
        return iter(self)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        last = time.time()
        while time.time() - last < self.timeout:
            candidates = self._candidates()
            if not candidates:
                if self.poll is None:
                    return
                time.sleep(self.poll)
                continue
            if self.select == "oldest":
                candidate = min(candidates, key=lambda fn: os.stat(fn).st_mtime)
            else:
                candidate = random.choice(candidates)
            activename = f"{candidate}._{os.getpid()}_"
            try:
                os.rename(candidate, activename)
            except FileNotFoundError:  # another consumer claimed it first
                continue
            last = time.time()
            yield {"url": activename}
            if os.path.exists(activename):
                self.recycle(activename)
            self.cleanup_files_without_processes()
