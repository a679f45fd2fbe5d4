"""Atomic sinks for remote objects and standard output (local files: :mod:`.local`)."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from .retry import RetryPolicy

__all__ = ["RemoteUpload", "StdoutSink"]


class RemoteUpload:
    """Spool to a local temp file, upload on commit: the object appears only when complete.

    The upload is one ``put_file`` retried by the storage layer's one :class:`RetryPolicy`
    (``method="put"`` for AIStore's object API, where fsspec's HTTP filesystem would POST).
    """

    def __init__(
        self, url: str, fs: Any, path: str, policy: RetryPolicy, method: str | None = None
    ):
        self.url = url
        self._fs = fs
        self._path = path
        self._policy = policy
        self._put_kwargs: dict[str, Any] = {"method": method} if method else {}
        self._tmp = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by commit/abort
            prefix="cloudwds-upload-", suffix=".tar", delete=False
        )

    def write(self, data: Any) -> int:
        return self._tmp.write(data)

    def commit(self) -> None:
        self._tmp.close()
        try:
            self._policy.run(
                "upload",
                self.url,
                lambda: self._fs.put_file(self._tmp.name, self._path, **self._put_kwargs),
            )
        finally:
            os.unlink(self._tmp.name)

    def abort(self) -> None:
        self._tmp.close()
        try:
            os.unlink(self._tmp.name)
        except FileNotFoundError:
            pass


class StdoutSink:
    """``-`` as an output: bytes go to standard output; commit and abort just flush."""

    def write(self, data: Any) -> int:
        return sys.stdout.buffer.write(data)

    def commit(self) -> None:
        sys.stdout.buffer.flush()

    def abort(self) -> None:
        sys.stdout.buffer.flush()
