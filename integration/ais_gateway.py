"""A small AIStore-API gateway on loopback, backed by the real S3/GCS test endpoints.

No AIStore server is installable here, so this serves the part of AIStore's REST API that a
reader uses: ``GET``/``HEAD /v1/objects/<bucket>/<object>?provider=aws|gcp|ais`` with
``Range`` (206/416) and ``Content-Length``. ``aws``/``gcp`` objects are fetched through fsspec
filesystems (pointed at moto and the GCS emulator), ``ais`` objects come from a local
directory. Every request is counted, so tests can prove reads really went through AIS.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
# AIS provider names and the aliases the SDK/URLs use.
PROVIDERS = {"": "ais", "ais": "ais", "aws": "aws", "s3": "aws", "gcp": "gcp", "gs": "gcp"}
SCHEMES = {"s3": "aws", "gs": "gcp", "gcs": "gcp", "ais": "ais", "az": "azure", "abfs": "azure"}
_PIECE = 4 << 20  # upstream ranged reads of at most 4 MiB while streaming a response


@dataclass(frozen=True)
class AISRequest:
    method: str
    provider: str
    bucket: str
    obj: str
    range: str | None
    status: int


class AISGateway:
    """Threaded AIS object-API server: ``backends`` maps provider -> fsspec filesystem."""

    def __init__(
        self,
        backends: dict[str, Any] | None = None,
        ais_root: str | Path | None = None,
        port: int = 0,
        redirect: bool = False,
    ) -> None:
        self._tmp = None if ais_root else tempfile.TemporaryDirectory(prefix="cloudwds-ais-")
        self.ais_root = Path(ais_root or self._tmp.name)  # type: ignore[union-attr]
        self.backends: dict[str, Any] = dict(backends or {})
        self.redirect = redirect  # like a real gateway: 307 to a "target" before serving
        self.port = port
        self.log: list[AISRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tgt = itertools.count()

    # ------------------------------------------------------------------ lifecycle
    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        return {}  # plain HTTP

    @property
    def env(self) -> dict[str, str]:
        return {"AIS_ENDPOINT": self.endpoint}  # what the aistore SDK/CLI read

    def start(self) -> AISGateway:
        if self._httpd is None:
            gw = self

            class Handler(_Handler):
                gateway = gw

            self._httpd = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
            self._httpd.daemon_threads = True
            self.port = self._httpd.server_address[1]
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, args=(0.1,), daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> AISGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ addressing
    def url(self, path: str, provider: str = "ais") -> str:
        """``bucket/obj`` (or ``s3://bucket/obj``, provider from the scheme) -> AIS object URL."""
        if "://" in path:
            scheme, path = path.split("://", 1)
            provider = SCHEMES[scheme]
        bucket, _, obj = path.lstrip("/").partition("/")
        prov = PROVIDERS.get(provider, provider)
        return f"{self.endpoint}/v1/objects/{bucket}/{urllib.parse.quote(obj)}?provider={prov}"

    def put(self, path: str, data: bytes) -> str:
        """Store an ``ais://`` (provider=ais) object locally; returns its gateway URL."""
        target = self.ais_root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.url(path, "ais")

    # ------------------------------------------------------------------ counting
    def get_count(self, path: str | None = None, provider: str | None = None) -> int:
        """Successful GETs of ``bucket/obj`` or ``s3://bucket/obj`` (None: all objects)."""
        if path is not None and "://" in path:
            scheme, path = path.split("://", 1)
            provider = SCHEMES[scheme]
        prov = PROVIDERS.get(provider, provider) if provider else None
        with self._lock:
            return sum(
                1
                for r in self.log
                if r.method == "GET"
                and r.status in (200, 206)
                and (path is None or f"{r.bucket}/{r.obj}" == path.lstrip("/"))
                and (prov is None or r.provider == prov)
            )

    @property
    def total(self) -> int:
        """Every request the gateway answered (GET, HEAD, errors, redirects)."""
        with self._lock:
            return len(self.log)

    def counts(self) -> Counter[str]:
        """``"GET gcp://bkt/obj"`` -> number of requests."""
        with self._lock:
            return Counter(f"{r.method} {r.provider}://{r.bucket}/{r.obj}" for r in self.log)

    def reset_counts(self) -> None:
        with self._lock:
            self.log.clear()

    def _record(self, r: AISRequest) -> None:
        with self._lock:
            self.log.append(r)

    # ------------------------------------------------------------------ storage
    def _size(self, provider: str, bucket: str, obj: str) -> int:
        if provider == "ais":
            p = self._local(bucket, obj)
            if not p.is_file():
                raise FileNotFoundError(obj)
            return p.stat().st_size
        info = self._fs(provider).info(f"{bucket}/{obj}")
        if info.get("type") == "directory":
            raise FileNotFoundError(obj)
        return int(info["size"])

    def _read(self, provider: str, bucket: str, obj: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object."""
        if provider == "ais":
            with open(self._local(bucket, obj), "rb") as f:
                f.seek(start)
                return f.read(end - start)
        return bytes(self._fs(provider).cat_file(f"{bucket}/{obj}", start=start, end=end))

    def _local(self, bucket: str, obj: str) -> Path:
        if ".." in obj.split("/") or bucket == "..":
            raise FileNotFoundError(obj)
        return self.ais_root / bucket / obj

    def _fs(self, provider: str) -> Any:
        try:
            return self.backends[provider]
        except KeyError:
            raise LookupError(f"no backend for provider {provider!r}") from None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive like a real AIS proxy
    disable_nagle_algorithm = True  # else ~40 ms stalls on small range responses
    gateway: AISGateway

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        body = json.dumps(
            {"message": message, "method": self.command, "url_path": self.path, "status": status}
        ).encode()
        hdrs = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        self._reply(status, hdrs, body)

    def _serve(self, head: bool) -> None:
        gw = self.gateway
        u = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(u.query)
        parts = u.path.split("/", 4)  # "", "v1", "objects", bucket, obj
        rng = self.headers.get("Range")
        provider = PROVIDERS.get(query.get("provider", [""])[0], "?")
        if len(parts) < 5 or parts[1:3] != ["v1", "objects"] or not parts[3] or not parts[4]:
            gw._record(AISRequest(self.command, provider, "", u.path, rng, 400))
            return self._error(400, f"unsupported path {u.path}")
        bucket, obj = urllib.parse.unquote(parts[3]), urllib.parse.unquote(parts[4])

        def done(status: int) -> None:
            gw._record(AISRequest(self.command, provider, bucket, obj, rng, status))

        name = f"{provider}://{bucket}/{obj}"
        if gw.redirect and "tgt" not in query:
            done(307)
            sep = "&" if u.query else "?"
            loc = f"{self.path}{sep}tgt=t{next(gw._tgt) % 3}"
            return self._reply(307, {"Location": loc, "Content-Length": "0"})
        try:
            size = gw._size(provider, bucket, obj)
        except FileNotFoundError:
            done(404)  # the SDK parses "prov://bucket/obj" out of the message
            return self._error(404, f"object {name} does not exist")
        except LookupError as e:
            done(400)
            return self._error(400, str(e))
        start, end, status = 0, size, 200  # end is exclusive
        if rng and not head:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m or m.groups() == ("", ""):
                done(416)
                return self._error(416, f"invalid range {rng!r}")
            first, last = m.groups()
            if first == "":
                start = max(0, size - int(last))
            else:
                start = int(first)
                end = min(size, int(last) + 1) if last else size
            if start >= size or start >= end:
                done(416)
                return self._reply(416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
            status = 206
        hdrs = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(end - start),
            "Accept-Ranges": "bytes",
            "Ais-Present": "true",  # the SDK's as_file() checks it before resuming
            "Ais-Name": obj,
        }
        if status == 206:
            hdrs["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        done(status)
        self._reply(status, hdrs)
        if head:
            return
        pos = start
        while pos < end:  # stream in bounded pieces: memory stays flat for big shards
            piece = gw._read(provider, bucket, obj, pos, min(end, pos + _PIECE))
            if not piece:
                break
            self.wfile.write(piece)
            pos += len(piece)
        if pos < end:  # object shrank under us: the client must see a short body, not hang
            self.close_connection = True
