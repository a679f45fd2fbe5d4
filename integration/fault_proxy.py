"""HTTP-aware TCP proxy on loopback: counts requests and injects faults at runtime.

Every test endpoint sits behind one of these, so GET counting works the same way for moto,
the GCS emulator, Azurite and the HTTP server: the proxy parses each request head on the
client->server stream (bytes are forwarded unchanged, including ``Host`` and signatures) and
records it *before* forwarding, so a count read after the client returned is complete.

Faults (all armed at runtime, consumed in request order, cleared by ``reset()``):

* ``fail_503(times)``: answer ``HTTP/1.1 503`` to the next ``times`` matching requests;
* ``fail_status(status, times)``: the same with another status (403, 404, ...);
* ``cut_after(nbytes, times)``: close the connection after ``nbytes`` of the response
  (status line and headers included) to each of the next ``times`` matching requests;
* ``delay(seconds, times)``: hold matching requests that long before forwarding them;
* ``stall_after(nbytes, times)``: forward ``nbytes`` of the response, then hold the rest until
  ``release()`` (or a timeout) — a download visibly in progress, without timing;
* ``set_offline(True)`` / ``offline()``: stop listening and drop open connections
  (clients get "connection refused"), keeping the port for ``set_offline(False)``.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
_CHUNK = 1 << 16
_SERVICE_UNAVAILABLE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>ServiceUnavailable</Code><Message>injected by fault proxy</Message></Error>"
)


@dataclass(frozen=True)
class Request:
    """One request head seen by the proxy (``injected`` names the fault applied, if any)."""

    method: str
    target: str
    headers: dict[str, str]
    conn_id: int
    injected: str | None = None

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    @property
    def range(self) -> str | None:
        """The requested byte range (Azure sends it as ``x-ms-range``)."""
        return self.headers.get("range") or self.headers.get("x-ms-range")


@dataclass
class _Fault:
    kind: str  # "503" | "status" | "cut" | "cut-abort" | "delay" | "stall"
    times: int | None  # None: until reset()
    method: str | None
    path_contains: str | None
    value: float = 0.0
    timeout: float = 0.0

    def matches(self, method: str, target: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method is not None and method.upper() != self.method.upper():
            return False
        return self.path_contains is None or self.path_contains in target


class _ProtocolError(Exception):
    pass


class _Reader:
    """Buffered reads from a socket, enough to frame HTTP/1.1 requests."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(_CHUNK)
        self.buf += data
        return bool(data)

    def read_until(self, sep: bytes, limit: int = 1 << 20) -> bytes | None:
        """Bytes up to and including ``sep``; None on a clean EOF before any byte."""
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise _ProtocolError("request head too large")
            if not self._fill():
                if self.buf:
                    raise _ProtocolError("EOF inside request head")
                return None
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_some(self, n: int) -> bytes:
        """Up to ``n`` bytes (at least one), raising on EOF."""
        if not self.buf and not self._fill():
            raise _ProtocolError("EOF inside request body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


@dataclass(eq=False)  # identity-hashed: kept in a set
class _Conn:
    conn_id: int
    client: socket.socket
    upstream: socket.socket | None = None
    cut_left: int | None = None  # response bytes still allowed before a cut
    cut_abort: bool = False
    stall_left: int | None = None  # response bytes forwarded before a stall
    stall_timeout: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    def close(self, abort: bool = False) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.upstream):
            if s is None:
                continue
            if abort and s is self.client:  # RST instead of FIN
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


class FaultProxy:
    """Threaded loopback proxy in front of ``upstream_host:upstream_port``."""

    def __init__(self, upstream_port: int, upstream_host: str = LOOPBACK, port: int = 0) -> None:
        if upstream_host not in (LOOPBACK, "localhost"):
            raise ValueError("FaultProxy only forwards to loopback")
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self.requests: list[Request] = []
        self.connections = 0
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._ids = itertools.count(1)
        self._conns: set[_Conn] = set()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> FaultProxy:
        """Listen (again) on the same port; port 0 picks a free one the first time."""
        if self._listener is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, self.port))
        sock.listen(128)
        sock.settimeout(0.1)  # lets the accept loop notice stop()
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(sock,), name=f"fault-proxy-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection (the port number is kept)."""
        sock, self._listener = self._listener, None
        if sock is not None:
            sock.close()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
            self._accept_thread = None
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()

    close = stop

    def set_offline(self, offline: bool) -> None:
        """Offline: connection refused at the endpoint, upstream data untouched."""
        if offline:
            self.stop()
        else:
            self.start()

    @contextlib.contextmanager
    def offline(self) -> Iterator[None]:
        self.set_offline(True)
        try:
            yield
        finally:
            self.set_offline(False)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- faults
    def _arm(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def fail_status(
        self,
        status: int,
        times: int | None = 1,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer ``status`` (e.g. 403) to the next ``times`` matching requests."""
        self._arm(_Fault("status", times, method, path_contains, float(status)))

    def fail_503(
        self, times: int = 1, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Answer 503 (with ``Connection: close``) to the next ``times`` matching requests."""
        self._arm(_Fault("503", times, method, path_contains))

    def cut_after(
        self,
        nbytes: int,
        times: int | None = 1,
        method: str | None = "GET",
        path_contains: str | None = None,
        abort: bool = False,
    ) -> None:
        """Close the connection after ``nbytes`` of the response to the next matching requests.

        ``abort=True`` sends a TCP RST instead of a FIN. ``times=None`` cuts until reset().
        """
        self._arm(_Fault("cut-abort" if abort else "cut", times, method, path_contains, nbytes))

    def delay(
        self,
        seconds: float,
        times: int | None = None,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Hold matching requests ``seconds`` before forwarding (``times=None``: until reset)."""
        self._arm(_Fault("delay", times, method, path_contains, seconds))

    def stall_after(
        self,
        nbytes: int,
        times: int | None = 1,
        method: str | None = "GET",
        path_contains: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        """Forward ``nbytes`` of the next matching responses, then hold them until release()."""
        self._released.clear()
        self._arm(_Fault("stall", times, method, path_contains, nbytes, timeout))

    def release(self) -> None:
        """Let stalled responses continue."""
        self._released.set()

    def reset(self) -> None:
        """Clear all faults and counters (does not touch open connections)."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.connections = 0

    def reset_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take(self, method: str, target: str) -> list[_Fault]:
        """Consume one use of the first fault of each kind matching this request."""
        taken: list[_Fault] = []
        with self._lock:
            seen: set[str] = set()
            for f in self._faults:
                kind = "cut" if f.kind.startswith("cut") else f.kind
                if kind in seen or not f.matches(method, target):
                    continue
                seen.add(kind)
                if f.times is not None:
                    f.times -= 1
                taken.append(f)
            self._faults = [f for f in self._faults if f.times is None or f.times > 0]
        return taken

    # ----------------------------------------------------------------- counting
    def count(self, pred: Callable[[Request], bool] | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if pred is None or pred(r))

    def gets(self, path_contains: str = "") -> int:
        """GET requests whose target contains ``path_contains``."""
        return self.count(lambda r: r.method == "GET" and path_contains in r.target)

    # ----------------------------------------------------------------- plumbing
    def _accept_loop(self, sock: socket.socket) -> None:
        while self._listener is sock:
            try:
                client, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(next(self._ids), client)
            with self._lock:
                self.connections += 1
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: _Conn) -> None:
        try:
            conn.upstream = socket.create_connection(self.upstream, timeout=10)
            conn.upstream.settimeout(None)
            conn.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            conn.close()
            self._forget(conn)
            return
        pump = threading.Thread(target=self._pump_responses, args=(conn,), daemon=True)
        pump.start()
        try:
            self._pump_requests(conn)
        except (OSError, _ProtocolError):
            pass
        finally:
            pump.join()
            conn.close()
            self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _pump_requests(self, conn: _Conn) -> None:
        """Frame requests client->upstream, recording each and applying faults."""
        assert conn.upstream is not None
        reader = _Reader(conn.client)
        while not conn.closed:
            head = reader.read_until(b"\r\n\r\n")
            if head is None:  # client closed: let the pending response finish
                with contextlib.suppress(OSError):
                    conn.upstream.shutdown(socket.SHUT_WR)
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            faults = self._take(method, target)
            kinds = {f.kind for f in faults}
            injected = "503" if "503" in kinds else next((k for k in kinds if k != "delay"), None)
            answer = next((f for f in faults if f.kind == "status"), None)
            if answer is not None:
                injected = str(int(answer.value))
            with self._lock:
                self.requests.append(Request(method, target, headers, conn.conn_id, injected))
            for f in faults:
                if f.kind == "delay":
                    time.sleep(f.value)
            if "503" in kinds or answer is not None:
                if "100-continue" not in headers.get("expect", "").lower():
                    self._copy_body(reader, headers, None)  # drain so close() sends no RST
                body = _SERVICE_UNAVAILABLE
                status = (
                    b"503 Service Unavailable" if answer is None else b"%d Injected" % answer.value
                )
                conn.client.sendall(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: application/xml\r\n"
                    b"Retry-After: 0\r\nConnection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                conn.close()
                return
            cut = next((f for f in faults if f.kind.startswith("cut")), None)
            conn.cut_left = int(cut.value) if cut else None
            conn.cut_abort = bool(cut and cut.kind == "cut-abort")
            stall = next((f for f in faults if f.kind == "stall"), None)
            conn.stall_left = int(stall.value) if stall else None
            conn.stall_timeout = stall.timeout if stall else 0.0
            conn.upstream.sendall(head)
            self._copy_body(reader, headers, conn.upstream)

    @staticmethod
    def _copy_body(reader: _Reader, headers: dict[str, str], dest: socket.socket | None) -> None:
        """Forward (or drain, if dest is None) one request body: Content-Length or chunked."""

        def send(b: bytes) -> None:
            if dest is not None:
                dest.sendall(b)

        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = reader.read_until(b"\r\n")
                if size_line is None:
                    raise _ProtocolError("EOF in chunked body")
                send(size_line)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, ended by an empty line
                        line = reader.read_until(b"\r\n")
                        if line is None:
                            raise _ProtocolError("EOF in chunked trailers")
                        send(line)
                        if line == b"\r\n":
                            return
                left = size + 2  # chunk data + CRLF
                while left:
                    b = reader.read_some(left)
                    send(b)
                    left -= len(b)
        left = int(headers.get("content-length", "0") or "0")
        while left:
            b = reader.read_some(min(left, _CHUNK))
            send(b)
            left -= len(b)

    def _pump_responses(self, conn: _Conn) -> None:
        """Copy upstream->client, enforcing an armed cut."""
        assert conn.upstream is not None
        try:
            while True:
                data = conn.upstream.recv(_CHUNK)
                if not data:
                    break
                stall = conn.stall_left
                if stall is not None:
                    if len(data) < stall:
                        conn.stall_left = stall - len(data)
                    else:
                        conn.client.sendall(data[:stall])
                        data = data[stall:]
                        conn.stall_left = None
                        self._released.wait(conn.stall_timeout)
                left = conn.cut_left
                if left is not None and len(data) >= left:
                    if left:
                        conn.client.sendall(data[:left])
                    conn.close(abort=conn.cut_abort)
                    return
                if left is not None:
                    conn.cut_left = left - len(data)
                conn.client.sendall(data)
        except OSError:
            pass
        conn.close()
