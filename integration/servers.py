"""Real storage servers on 127.0.0.1 for the integration tests (no mocks).

Each ``Endpoint`` owns one server (moto S3, gcp-storage-emulator, Azurite, or an in-process
range-capable HTTP server) and a ``FaultProxy`` in front of it. Clients only ever see the
proxy's URL, so request counting (``get_count``) and fault injection work the same way for
every backend. Server processes log to a temp file (never an unread PIPE) and are stopped by
SIGTERM to their own pid only.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import email.utils
import itertools
import mimetypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

from .fault_proxy import LOOPBACK, FaultProxy, Request

# Azurite's well-known public development key (not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DUMMY_AWS = {"key": "testing", "secret": "testing"}

# gcp-storage-emulator serves with http.server.HTTPServer (listen backlog 5): gcsfs's parallel
# prefetch overflows it and every dropped SYN costs a 1 s retransmit. Raise it to 128.
_GCS_BACKLOG_WRAPPER = (
    "import sys, http.server; http.server.HTTPServer.request_queue_size = 128; "
    "from gcp_storage_emulator.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def free_port() -> int:
    """A currently free loopback port (tiny race until the server binds it; fine for tests)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _http_answers(url: str, timeout: float = 2.0) -> bool:
    """True once anything answers HTTP at ``url`` (an error status counts as an answer)."""
    try:
        urllib.request.urlopen(url, timeout=timeout).read()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _http(method: str, url: str, timeout: float = 10.0) -> bytes:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return bytes(r.read())


# --------------------------------------------------------------------------- processes
_LIVE: set[ServerProcess] = set()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGTERM the server if pytest itself is killed (no orphaned emulators)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """One server subprocess: start, wait until it answers HTTP, stop only this pid."""

    def __init__(self, name: str, cmd: list[str], ready_url: str, cwd: str | None = None) -> None:
        self.name, self.cmd, self.ready_url, self.cwd = name, cmd, ready_url, cwd
        self.proc: subprocess.Popen[bytes] | None = None
        fd, self.log_path = tempfile.mkstemp(prefix=f"cloudwds-{name}-", suffix=".log")
        os.close(fd)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        if self.running:
            return
        # Log to a FILE: moto logs every request and would block on a full, unread PIPE.
        # PDEATHSIG is tied to the forking *thread*, so only use it from the main thread.
        main = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if main and sys.platform == "linux" else None,
            )
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while not _http_answers(self.ready_url):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with rc={self.proc.returncode}: {self.cmd}\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout}s\n{self.tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM our own pid, wait, SIGKILL that pid only if it ignores SIGTERM."""
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def tail(self, nbytes: int = 4000) -> str:
        try:
            return Path(self.log_path).read_bytes()[-nbytes:].decode(errors="replace")
        except OSError:
            return ""


@atexit.register
def _stop_leftovers() -> None:
    for p in list(_LIVE):
        p.stop()


# --------------------------------------------------------------------------- HTTP server
class RangeRequestHandler(SimpleHTTPRequestHandler):
    """Static files with single ``Range: bytes=a-b | a- | -n`` support (206/416).

    The stdlib handler ignores Range and fsspec then silently gets the whole file.
    """

    protocol_version = "HTTP/1.1"  # keep-alive, like real object stores
    disable_nagle_algorithm = True  # else ~40 ms stalls on small responses
    _range_len: int | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        super().end_headers()

    def send_head(self) -> BinaryIO | None:
        self._range_len = None
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", (rng or "").strip())
        if not m or m.groups() == ("", "") or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        first, last = m.groups()
        if first == "":
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        f = open(path, "rb")  # noqa: SIM115 - closed by the base class after copyfile
        f.seek(start)
        self.send_response(206)
        self.send_header(
            "Content-Type", mimetypes.guess_type(path)[0] or "application/octet-stream"
        )
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header(
            "Last-Modified", email.utils.formatdate(os.path.getmtime(path), usegmt=True)
        )
        self.end_headers()
        self._range_len = end - start + 1
        return f

    def copyfile(self, source: Any, outputfile: Any) -> None:
        if self._range_len is None:
            return super().copyfile(source, outputfile)
        left = self._range_len
        while left > 0:
            chunk = source.read(min(1 << 20, left))
            if not chunk:
                break
            outputfile.write(chunk)
            left -= len(chunk)


class RangeHTTPServer:
    """In-process threaded static file server for ``root`` (restartable on the same port)."""

    def __init__(self, root: str | Path, port: int = 0) -> None:
        self.root, self.port = str(root), port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> None:
        if self._httpd is not None:
            return
        root = self.root

        class Handler(RangeRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=root, **kw)

        httpd = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


# --------------------------------------------------------------------------- endpoints
_bucket_ids = itertools.count()


class Endpoint:
    """A running storage server behind a counting/fault-injecting proxy.

    Attributes tests use: ``endpoint`` (URL clients talk to), ``storage_options``, ``env``,
    ``fs``, ``url(path)``, ``get_count(path)``, ``new_bucket()``, ``write()/read()``,
    ``reset()``, ``stop()/start()``, ``offline()``, ``proxy`` (faults).
    """

    kind = "base"
    protocol = ""

    def __init__(self) -> None:
        self.backend_port = free_port()
        self.proxy = FaultProxy(self.backend_port)
        self._fs: Any = None

    # -- lifecycle
    def _start_backend(self) -> None:
        raise NotImplementedError

    def _stop_backend(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def start(self) -> Endpoint:
        """Start (or restart on the same ports) the server and its proxy."""
        self._start_backend()
        self.proxy.start()
        self._fs = None  # fresh client: pooled connections died with the old server
        return self

    def stop(self) -> None:
        """Stop proxy and server. In-memory servers lose all objects (HTTP keeps its files)."""
        self.proxy.stop()
        self._stop_backend()

    close = stop

    def offline(self) -> contextlib.AbstractContextManager[None]:
        """Context manager: endpoint refuses connections, stored objects are kept."""
        return self.proxy.offline()

    # -- addressing
    @property
    def endpoint(self) -> str:
        return self.proxy.endpoint

    @property
    def direct_endpoint(self) -> str:
        """The server itself, bypassing proxy and counters."""
        return f"http://{LOOPBACK}:{self.backend_port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that configure a fresh process instead of storage_options."""
        raise NotImplementedError

    def url(self, path: str) -> str:
        return f"{self.protocol}://{path.lstrip('/')}"

    def path_of(self, path_or_url: str) -> str:
        """``s3://b/k`` or ``b/k`` -> ``b/k``."""
        prefix = f"{self.protocol}://"
        p = path_or_url[len(prefix) :] if path_or_url.startswith(prefix) else path_or_url
        return p.lstrip("/")

    # -- client
    @property
    def fs(self) -> Any:
        """A cached fsspec filesystem for this endpoint (listings cache off)."""
        if self._fs is None:
            self._fs = self.new_fs()
        return self._fs

    def new_fs(self, **overrides: Any) -> Any:
        """A new, uncached fsspec filesystem instance (avoids fsspec's instance cache)."""
        import fsspec

        opts = {**self.storage_options, **overrides}
        opts.setdefault("skip_instance_cache", True)
        opts.setdefault("use_listings_cache", False)
        return fsspec.filesystem(self.protocol, **opts)

    def write(self, path: str, data: bytes) -> str:
        """Store ``data`` at ``path`` (``bucket/key``); returns the URL."""
        self.fs.pipe_file(self.path_of(path), data)
        return self.url(self.path_of(path))

    def read(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(self.path_of(path)))

    def new_bucket(self, prefix: str = "t") -> str:
        """Create a uniquely named, empty bucket/container and return its name."""
        name = f"{prefix}-{next(_bucket_ids):04d}-{uuid.uuid4().hex[:8]}".lower()
        self._make_bucket(name)
        return name

    def _make_bucket(self, name: str) -> None:
        self.fs.mkdir(name)

    # -- counting
    def object_of(self, req: Request) -> str | None:
        """``bucket/key`` if ``req`` is a data GET of one object, else None."""
        raise NotImplementedError

    def requests(self, path: str | None = None) -> list[Request]:
        """Requests seen by the proxy (for ``path``: data GETs of that object only)."""
        reqs = list(self.proxy.requests)
        if path is None:
            return reqs
        want = self.path_of(path)
        return [r for r in reqs if self.object_of(r) == want]

    def get_count(self, path: str | None = None) -> int:
        """Object-data GETs the endpoint received (for one object, or all objects).

        Counted when the request head arrives, including requests answered by an injected
        503 or cut; metadata GETs (listings, GCS object resources) and HEADs are excluded.
        """
        if path is None:
            return sum(1 for r in self.proxy.requests if self.object_of(r) is not None)
        return len(self.requests(path))

    def reset_counts(self) -> None:
        """Clear counters and armed faults."""
        self.proxy.reset()

    # -- state
    def wipe(self) -> None:
        """Delete every bucket/object on the server."""
        raise NotImplementedError

    def reset(self) -> None:
        """Wipe all data, counters and faults."""
        self.wipe()
        self.proxy.reset()
        if self._fs is not None:
            self._fs.invalidate_cache()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint} -> {self.direct_endpoint}>"


class _ProcessEndpoint(Endpoint):
    """Endpoint whose server is a subprocess."""

    def __init__(self) -> None:
        super().__init__()
        self.process = ServerProcess(self.kind, self._command(), self._ready_url())

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready_url(self) -> str:
        return self.direct_endpoint + "/"

    def _start_backend(self) -> None:
        self.process.start()

    def _stop_backend(self) -> None:
        self.process.stop()

    @property
    def running(self) -> bool:
        return self.process.running and self.proxy.running

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.process.log_path)


class S3Endpoint(_ProcessEndpoint):
    """moto_server (S3 only) -> ``s3://`` via s3fs."""

    kind, protocol = "s3", "s3"
    # Object sub-resources that are GETs but not data reads.
    _NON_DATA = {"acl", "tagging", "uploadId", "uploads", "attributes", "retention", "legal-hold"}

    def _command(self) -> list[str]:
        # `python -m moto.server`, not the `moto_server` script: a pyenv shim is a bash wrapper,
        # so the pid we would SIGTERM would not be the server's.
        return [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.backend_port)]

    def _ready_url(self) -> str:
        return self.direct_endpoint + "/moto-api/"

    @property
    def storage_options(self) -> dict[str, Any]:
        # No region in client_kwargs: s3fs.mkdir would send LocationConstraint=us-east-1 -> 400.
        return {**DUMMY_AWS, "endpoint_url": self.endpoint}

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": DUMMY_AWS["key"],
            "AWS_SECRET_ACCESS_KEY": DUMMY_AWS["secret"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def object_of(self, req: Request) -> str | None:
        if req.method != "GET":
            return None
        u = urllib.parse.urlsplit(req.target)
        bucket, _, key = u.path.lstrip("/").partition("/")
        if not bucket or not key or self._NON_DATA & set(urllib.parse.parse_qs(u.query, True)):
            return None
        return f"{bucket}/{urllib.parse.unquote(key)}"

    def wipe(self) -> None:
        _http("POST", self.direct_endpoint + "/moto-api/reset")


class GCSEndpoint(_ProcessEndpoint):
    """gcp-storage-emulator (in memory) -> ``gs://`` via gcsfs."""

    kind, protocol = "gcs", "gs"
    _OBJ = re.compile(r"^(?:/download)?/storage/v1/b/([^/]+)/o/(.+)$")

    def _command(self) -> list[str]:
        return [
            sys.executable, "-c", _GCS_BACKLOG_WRAPPER,
            "start", "-H", LOOPBACK, "--port", str(self.backend_port), "--in-memory", "-q",
        ]  # fmt: skip

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "token": "anon", "project": "test"}

    @property
    def env(self) -> dict[str, str]:
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,
            "FSSPEC_GS_TOKEN": "anon",  # else gcsfs tries google-auth's default credential chain
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # else ~43 s gRPC retries per operation
        }

    def object_of(self, req: Request) -> str | None:
        u = urllib.parse.urlsplit(req.target)
        m = self._OBJ.match(u.path)
        if (
            req.method != "GET"
            or not m
            or "media" not in urllib.parse.parse_qs(u.query).get("alt", [])
        ):
            return None
        return f"{urllib.parse.unquote(m.group(1))}/{urllib.parse.unquote(m.group(2))}"

    def wipe(self) -> None:
        _http("GET", self.direct_endpoint + "/wipe")


def find_azurite() -> str:
    """Path of azurite-blob: ``$AZURITE_BLOB`` or scripts/install-emulators.sh's default dir."""
    explicit = os.environ.get("AZURITE_BLOB")
    base = os.environ.get(
        "CLOUDWDS_EMULATORS_DIR",
        os.path.join(os.path.expanduser("~"), ".cache", "cloudwds-emulators"),
    )
    path = explicit or os.path.join(base, "node_modules", ".bin", "azurite-blob")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"azurite-blob not found at {path}: run `bash scripts/install-emulators.sh` "
            "(or set AZURITE_BLOB=/path/to/azurite-blob)"
        )
    return path


class AzureEndpoint(_ProcessEndpoint):
    """Azurite blob service (in memory) -> ``az://`` / ``abfs://`` via adlfs."""

    kind, protocol = "azure", "az"

    def _command(self) -> list[str]:
        script = os.path.realpath(find_azurite())
        # Run node on main.js directly (not npx/sh): the pid we SIGTERM must be node itself.
        node = shutil.which("node")
        prefix = [node, script] if script.endswith(".js") and node else [script]
        return prefix + [
            "--blobHost", LOOPBACK, "--blobPort", str(self.backend_port),
            "--inMemoryPersistence", "--extentMemoryLimit", "512",
            "--skipApiVersionCheck",  # azure-storage-blob 12.31 sends an API version 3.37 rejects
            "--loose", "--disableTelemetry", "--silent",
        ]  # fmt: skip

    def _ready_url(self) -> str:
        return f"{self.direct_endpoint}/{AZURITE_ACCOUNT}?comp=list"

    def connection_string(self, endpoint: str | None = None) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={endpoint or self.endpoint}/{AZURITE_ACCOUNT};"
        )

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"connection_string": self.connection_string()}

    @property
    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string()}

    def object_of(self, req: Request) -> str | None:
        u = urllib.parse.urlsplit(req.target)
        parts = u.path.lstrip("/").split("/", 2)
        query = urllib.parse.parse_qs(u.query, True)
        if req.method != "GET" or len(parts) < 3 or parts[0] != AZURITE_ACCOUNT:
            return None
        if "comp" in query or "restype" in query or not parts[2]:
            return None
        return f"{urllib.parse.unquote(parts[1])}/{urllib.parse.unquote(parts[2])}"

    def _service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(
            self.connection_string(self.direct_endpoint)
        )

    def _make_bucket(self, name: str) -> None:
        # adlfs.mkdir swallows server errors ("assume it exists"); the SDK raises them.
        with self._service() as svc:
            svc.create_container(name)

    def wipe(self) -> None:
        with self._service() as svc:
            for c in svc.list_containers():
                svc.delete_container(c.name)


class HTTPEndpoint(Endpoint):
    """Static files under ``root`` served with Range support -> ``http://`` via fsspec."""

    kind, protocol = "http", "http"

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__()
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="cloudwds-http-")
        self.root = Path(root or self._tmp.name)  # type: ignore[union-attr]
        self.server = RangeHTTPServer(self.root, self.backend_port)

    def _start_backend(self) -> None:
        self.server.start()

    def _stop_backend(self) -> None:
        self.server.stop()

    @property
    def running(self) -> bool:
        return self.server.running and self.proxy.running

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def storage_options(self) -> dict[str, Any]:
        return {}

    @property
    def env(self) -> dict[str, str]:
        return {}

    def url(self, path: str) -> str:
        return f"{self.endpoint}/{urllib.parse.quote(self.path_of(path))}"

    def path_of(self, path_or_url: str) -> str:
        for prefix in (self.endpoint, self.direct_endpoint):
            if path_or_url.startswith(prefix):
                return urllib.parse.unquote(path_or_url[len(prefix) :]).lstrip("/")
        return path_or_url.lstrip("/")

    def new_fs(self, **overrides: Any) -> Any:
        """HTTPFileSystem rooted at the endpoint, so paths are ``dir/file`` like buckets."""
        import fsspec
        from fsspec.implementations.dirfs import DirFileSystem

        http = fsspec.filesystem("http", **{"skip_instance_cache": True, **overrides})
        return DirFileSystem(path=self.endpoint, fs=http)

    def write(self, path: str, data: bytes) -> str:
        target = self.root / self.path_of(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.url(path)

    def read(self, path: str) -> bytes:
        return (self.root / self.path_of(path)).read_bytes()

    def _make_bucket(self, name: str) -> None:
        (self.root / name).mkdir(parents=True)

    def object_of(self, req: Request) -> str | None:
        if req.method != "GET":
            return None
        return urllib.parse.unquote(req.path).lstrip("/") or None

    def wipe(self) -> None:
        for child in self.root.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()


ENDPOINTS: dict[str, type[Endpoint]] = {
    "s3": S3Endpoint,
    "gcs": GCSEndpoint,
    "azure": AzureEndpoint,
    "http": HTTPEndpoint,
}


@contextlib.contextmanager
def running(kind: str) -> Iterator[Endpoint]:
    """Start one endpoint for the duration of a ``with`` block (scripts, function-scoped use)."""
    ep = ENDPOINTS[kind]()
    try:
        yield ep.start()
    finally:
        ep.close()
