"""``pipe:CMD`` sources and sinks: a shell command's stdout (or stdin) as a byte stream.

webdataset leaks the subprocess when a consumer abandons a shard mid-way; here the command runs
in its own process group, and closing the stream early kills the whole group (the shell *and*
what it started, e.g. ``curl``) and reaps it, so no zombie or orphan is left behind. A command
that exits non-zero after the stream was read to the end raises :class:`PipeError`.

Every command starts here, so this is where ``WDS_SECURE=1`` refuses them
(:func:`cloudwds.security.check_pipe_allowed`); whether a ``pipe:`` URL from data may get this
far is decided earlier, by the loader that read it (see :mod:`cloudwds.security`).
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import IO

from ..errors import PipeError
from ..security import check_pipe_allowed

# Exit statuses that mean "the reader went away", not "the command failed".
_SIGPIPE_STATUSES = {141, -signal.SIGPIPE}


class PipeReader:
    """Read the stdout of ``cmd``; raise at EOF if it failed, kill it if closed early."""

    def __init__(self, cmd: str, url: str, bufsize: int = 1 << 20):  # noqa: ARG002 - kept for callers; reads are unbuffered
        check_pipe_allowed("pipe:" + cmd)  # WDS_SECURE=1 refuses every command
        self.url = url
        self.cmd = cmd
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            cmd,
            shell=True,
            stdout=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        self._stdout: IO[bytes] = self._proc.stdout
        self._done = False

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        data = self._stdout.read(n) if n >= 0 else self._stdout.read()
        if not data and n != 0:
            self._finish()
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:
        if self._done:
            return 0
        n = self._stdout.readinto(buf)  # type: ignore[attr-defined]
        if not n:
            self._finish()
        return n or 0

    def _finish(self) -> None:
        if self._done or self._proc is None:
            return
        self._done = True
        status = self._proc.wait()
        self._stdout.close()
        self._proc = None
        if status != 0 and status not in _SIGPIPE_STATUSES:
            raise PipeError(f"command exited with status {status}: {self.cmd!r}", self.url)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._done = True
        if proc.poll() is None:
            _kill_group(proc)
        try:
            self._stdout.close()
        finally:
            proc.wait()

    def __enter__(self) -> PipeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing may escape a finalizer
            pass


class PipeWriter:
    """Write to the stdin of ``cmd``; ``close()`` waits and raises if the command failed."""

    def __init__(self, cmd: str, url: str):
        check_pipe_allowed("pipe:" + cmd)  # WDS_SECURE=1 refuses every command
        self.url = url
        self.cmd = cmd
        self._proc = subprocess.Popen(
            cmd, shell=True, stdin=subprocess.PIPE, bufsize=0, start_new_session=True
        )
        assert self._proc.stdin is not None
        self._stdin = self._proc.stdin

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._stdin.write(data) or 0

    def commit(self) -> None:
        self._stdin.close()
        status = self._proc.wait()
        if status != 0:
            raise PipeError(f"command exited with status {status}: {self.cmd!r}", self.url)

    def abort(self) -> None:
        if self._proc.poll() is None:
            _kill_group(self._proc)
        try:
            self._stdin.close()
        except OSError:
            pass
        self._proc.wait()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
