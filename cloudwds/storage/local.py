"""Local files: ``/path``, ``relative/path``, ``file:/path``, ``file:///path`` and ``-`` (stdin)."""

from __future__ import annotations

import os
import sys
import tempfile
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


class AtomicLocalFile:
    """A file written under a unique temp name in the target directory and renamed on commit.

    A crash or an exception leaves no file under the final name; ``abort()`` removes the temp.
    """

    def __init__(self, path: str):
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        base = os.path.basename(path)
        fd, self.temp_path = tempfile.mkstemp(prefix=f".{base}.", suffix=".part", dir=directory)
        self._file = os.fdopen(fd, "wb")

    def write(self, data) -> int:
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
