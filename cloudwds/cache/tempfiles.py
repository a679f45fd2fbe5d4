"""Temp files of downloads in progress: their names, and when one left behind is garbage.

A download writes ``<dir>/.<name>.<host>-<pid>.<random>.part`` next to its final ``<dir>/<name>``
(same directory, hence same file system, so ``os.replace`` publishes it atomically). The layout
never produces a final name starting with ``.``, so a dot-name of exactly this shape is always
ours; stale-temp cleanup looks at nothing else (a user's ``.notes.part`` is never touched).

A temp file is **stale** when nobody holds its shard's lock (only the lock holder ever writes a
shard's temp files, see :mod:`cloudwds.cache.locks`) *and* either its writer's pid is dead on
this host or it has not been modified for :data:`STALE_AFTER` seconds. The lock test alone is
exact on a local disk; the pid/age test guards network file systems where ``flock`` may not be
shared between hosts (a writer on another host is only presumed dead after an hour of silence).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Iterator

__all__ = [
    "STALE_AFTER",
    "TempName",
    "fsync_dir",
    "is_stale",
    "make_temp_path",
    "parse_temp_name",
    "temps_for",
]

STALE_AFTER = 3600.0
"""Seconds without modification after which a temp file from a live pid or another host is garbage."""

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
_TEMP = re.compile(
    r"\.(?P<name>.+)\.(?P<host>[A-Za-z0-9]{1,24})-(?P<pid>\d+)\.(?P<rand>[0-9a-f]{8})\.part"
)


class TempName:
    """The parsed parts of a temp file name: which final name it was for, and who wrote it."""

    __slots__ = ("final_name", "host", "pid")

    def __init__(self, final_name: str, host: str, pid: int):
        self.final_name = final_name
        self.host = host
        self.pid = pid


def make_temp_path(final_path: str) -> str:
    """A fresh, unique temp path in the same directory as ``final_path``."""
    head, name = os.path.split(final_path)
    return os.path.join(head, f".{name}.{_HOST}-{os.getpid()}.{secrets.token_hex(4)}.part")


def parse_temp_name(filename: str) -> TempName | None:
    """Parse a base name made by :func:`make_temp_path`; ``None`` for anything else."""
    m = _TEMP.fullmatch(filename)
    if m is None:
        return None
    return TempName(m.group("name"), m.group("host"), int(m.group("pid")))


def temps_for(final_path: str) -> Iterator[str]:
    """Paths of every temp file (of any writer) for ``final_path``."""
    head, name = os.path.split(final_path)
    try:
        siblings = os.listdir(head)
    except (FileNotFoundError, NotADirectoryError):
        return
    for sibling in siblings:
        parsed = parse_temp_name(sibling)
        if parsed is not None and parsed.final_name == name:
            yield os.path.join(head, sibling)


def is_stale(temp_path: str, parsed: TempName, now: float | None = None) -> bool:
    """The pid/age half of the staleness rule; the caller must hold the shard's lock.

    Holding the lock means no thread of *this* process is writing the shard either, so a temp
    file carrying our own pid is a leftover of an earlier process that had the same pid (pid 1
    in a restarted container, say) and is stale.
    """
    try:
        mtime = os.stat(temp_path).st_mtime
    except FileNotFoundError:
        return False
    if (now if now is not None else time.time()) - mtime >= STALE_AFTER:
        return True
    return parsed.host == _HOST and (parsed.pid == os.getpid() or not _pid_alive(parsed.pid))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def fsync_dir(path: str) -> None:
    """Make the rename durable (a crash must not resurrect the temp name or lose the final one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
