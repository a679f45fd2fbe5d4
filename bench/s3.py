"""A local S3 endpoint for the benchmarks: ``moto_server`` on a free 127.0.0.1 port.

The server runs as its own process (not ``ThreadedMotoServer``) so it does not compete for the
benchmark process's GIL; its per-request log goes to a file, never to a pipe. Dummy credentials
and ``AWS_EC2_METADATA_DISABLED=true`` keep botocore away from the instance-metadata address.
It is stopped by SIGTERM to its own pid only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import IO, Any

BUCKET = "cloudwds-bench"
# moto keeps an object in a SpooledTemporaryFile and, on every GET (ranged or not), reads the
# *whole* object back and slices it (moto/s3/responses.py ``_handle_range_header``). With the
# default ~5 MB in-memory limit that is a read of the whole object from a temp file per
# request; keep objects in memory so a request costs a memcpy of the object instead. Each GET
# still costs O(object size) on moto (not on real S3): see bench/README.md.
MOTO_ENV = {"MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(1 << 30)}
KEY = "testing"
SECRET = "testing"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def aws_env(endpoint: str) -> dict[str, str]:
    """Environment for botocore, s3fs and the ``aws`` CLI (what ``pipe:aws s3 cp`` needs)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class MotoS3:
    """``with MotoS3() as s3: s3.upload(local, name)``; ``s3.url(name)``, ``s3.storage_options``."""

    def __init__(self, log_dir: str | None = None):
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log_dir = log_dir or tempfile.mkdtemp(prefix="cloudwds-bench-moto-")
        self.log_path = os.path.join(self._log_dir, "moto.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._old_env: dict[str, str | None] = {}

    @property
    def storage_options(self) -> dict[str, str]:
        return {"key": KEY, "secret": SECRET, "endpoint_url": self.endpoint}

    def url(self, name: str) -> str:
        return f"s3://{BUCKET}/{name}"

    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def start(self) -> MotoS3:
        exe = shutil.which("moto_server")
        cmd = ([exe] if exe else [sys.executable, "-c", "from moto.server import main; main()"]) + [
            "-H",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        self._log: IO[bytes] | None = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, **aws_env(self.endpoint), **MOTO_ENV}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                break
            except Exception:  # noqa: BLE001 - not answering yet, whatever the error: retry
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start; see {self.log_path}") from None
                time.sleep(0.1)
        # Environment for the aws CLI used by webdataset's pipe: URLs (inherited by children).
        for k, v in aws_env(self.endpoint).items():
            self._old_env[k] = os.environ.get(k)
            os.environ[k] = v
        fs = self.fs()
        fs.mkdir(BUCKET)
        fs.ls(BUCKET)  # the first request loads moto's S3 backend; keep it out of timings
        return self

    def upload(self, local: str, name: str) -> str:
        self.fs().put_file(local, f"{BUCKET}/{name}")
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None
        for k, v in self._old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._old_env.clear()

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
