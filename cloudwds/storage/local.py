"""Local files: ``/path``, ``relative/path``, ``file:/path``, ``file:///path`` and ``-`` (stdin)."""

from __future__ import annotations

import os
import secrets
import sys
from typing import BinaryIO


def local_path_of(url: str) -> str | None:
    """The filesystem path a URL names, or None when it is not a local file URL."""
    if url.startswith("file://"):
        return url[len("file://") :] or "/"
    if url.startswith("file:"):
        return url[len("file:") :]
    if "://" in url or url.startswith("pipe:") or url == "-":
        return None
    return url


def open_local(path: str) -> BinaryIO:
    """Unbuffered: the tar reader does its own large reads, a second buffer would only copy."""
    return open(path, "rb", buffering=0)  # noqa: SIM115


def open_stdin() -> BinaryIO:
    return sys.stdin.buffer


def create_new_file(directory: str, prefix: str, suffix: str) -> tuple[int, str]:
    """Create a fresh ``<directory>/<prefix><random><suffix>`` for writing: ``(fd, path)``.

    Unlike :func:`tempfile.mkstemp` (always mode 0600, meant for private scratch files) the file
    is created with mode 0666 and the kernel applies the process umask, or the directory's
    default ACL, exactly as for any file a program writes: a shard written with umask 022 is
    0644 and other users or a web server can read it. Nothing reads or changes the umask, so
    this is safe in threaded programs (``os.umask`` is process-wide and racy).
    """
    for _ in range(100):
        path = os.path.join(directory, f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name {prefix}*{suffix} in {directory}")


_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class AtomicLocalFile:
    """A file written under a unique temp name in the target directory and renamed on commit.

    A crash or an exception leaves no file under the final name; ``abort()`` removes the temp.
    The published file has the mode the umask gives (see :func:`create_new_file`).
    """

    def __init__(self, path: str):
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        base = os.path.basename(path)
        fd, self.temp_path = create_new_file(directory, f".{base}.", ".part")
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._file.write(data)

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.temp_path, self.path)

    def abort(self) -> None:
        self._file.close()
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass
