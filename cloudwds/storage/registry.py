"""The scheme registry: which back end opens a URL, decided by one table instead of if-chains.

A back end (:class:`StorageBackend`) answers a few questions about the URLs of its schemes —
where a URL really lives (:meth:`~StorageBackend.locate`), how to open it for reading
(:meth:`~StorageBackend.open_reader`), how to write it atomically
(:meth:`~StorageBackend.open_sink`), its fsspec filesystem (:meth:`~StorageBackend.filesystem`) —
and carries two facts: whether it is ``remote`` (cached, prefetched, retried) and which
``streaming`` opener reads it with one GET (``None``: ranged blocks). Everything else (rewrites,
the cache, AIStore routing, error wording) is done once, above it, in
:mod:`cloudwds.storage.target` and :mod:`cloudwds.storage.opening`.

Built in: ``-`` (stdin/stdout), local paths and ``file:``, ``pipe:``, ``ais://`` (AIStore's REST
API), and fsspec for ``s3``, ``gs``/``gcs``, ``az``/``abfs``/``abfss``, ``http``/``https``; any
other scheme fsspec knows (``memory://``, ``hf://``...) falls back to the plain fsspec back end.
Register your own with :func:`register_backend` (``cloudwds.register_backend``)::

    class Loud(FsspecBackend):
        def locate(self, url, config):      # "loud://x" is read from "memory://x"
            return "memory://" + url.split("://", 1)[1], None

    register_backend("loud", Loud())
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import StorageError
from ..stats import COUNTERS
from ..urls import url_scheme
from .ais import ais_object_url
from .fs import object_size, options_for, url_to_fs
from .local import AtomicLocalFile, local_path_of, open_local, open_stdin
from .pipe import PipeReader, PipeWriter
from .remote import RangeReader
from .sinks import RemoteUpload, StdoutSink
from .streaming import StreamOpener, StreamReader, open_http_stream, open_s3_stream

if TYPE_CHECKING:
    from .config import StorageConfig
    from .target import Target

__all__ = [
    "AISBackend",
    "FsspecBackend",
    "LocalBackend",
    "PipeBackend",
    "Sink",
    "StdioBackend",
    "StorageBackend",
    "get_backend",
    "known_schemes",
    "register_backend",
    "registry",
]


class Sink(Protocol):
    """An atomic writer: the object appears under its URL only on ``commit()``."""

    def write(self, data: Any, /) -> int: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class StorageBackend:
    """How the URLs of one or more schemes are opened. Subclass it to plug in a store.

    Required hook: :meth:`open_reader`. Optional: :meth:`locate` (default: the URL itself, no
    options), :meth:`open_sink` (default: not writable), :meth:`size` (default: unknown),
    :meth:`filesystem` (remote back ends whose objects fsspec can list: object identities for
    remembered counts, see :mod:`.identity`).
    """

    remote: bool = True
    """Remote back ends are cached (keyed by the original URL), prefetched and retried."""

    streaming: StreamOpener | None = None
    """Opens one streamed GET from a byte offset (see :mod:`.streaming`); ``None``: ranged blocks."""

    local_files: bool = False
    """True when :meth:`locate` gives a local path (``OpenedShard.local_path`` is set)."""

    def locate(self, url: str, config: StorageConfig) -> tuple[str, Mapping[str, Any] | None]:
        """``(location, options)`` for ``url`` (already rewritten): what the reader opens.

        For fsspec back ends the location is an fsspec URL and ``options`` its storage options;
        for local files a path; for ``pipe:`` the command. Called once per URL (see
        :func:`~cloudwds.storage.target.resolve_target`); may raise :class:`StorageError`.
        """
        del config  # the default needs no settings
        return url, None

    def open_reader(self, target: Target, config: StorageConfig) -> Any:
        """A fresh sequential binary stream of the object (``read``/``close``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot read {target.url}")

    def open_sink(self, target: Target, config: StorageConfig) -> Sink:
        """A :class:`Sink` that publishes the object on ``commit()`` and leaves nothing on ``abort()``."""
        del config  # not writable: nothing to configure
        raise StorageError(f"{type(self).__name__} cannot write", target.url)

    def size(self, target: Target, config: StorageConfig) -> int | None:
        """The object's size in bytes, or ``None`` when it cannot be known before reading."""
        del target, config  # a stream (stdin, a command) has no size before it ends
        return None

    def filesystem(self, target: Target) -> tuple[Any, str]:
        """The fsspec filesystem and path of the object (remote back ends)."""
        raise StorageError(f"{type(self).__name__} has no fsspec filesystem", target.url)


class StdioBackend(StorageBackend):
    """``-``: standard input for reading, standard output for writing."""

    remote = False

    def open_reader(self, target: Target, config: StorageConfig) -> Any:
        del target, config  # stdin is stdin
        return open_stdin()

    def open_sink(self, target: Target, config: StorageConfig) -> Sink:
        del target, config
        return StdoutSink()


class LocalBackend(StorageBackend):
    """Local paths (``/a/b.tar``, ``rel/b.tar``) and ``file:`` URLs; sinks rename into place."""

    remote = False
    local_files = True

    def locate(self, url: str, config: StorageConfig) -> tuple[str, Mapping[str, Any] | None]:
        del config
        path = local_path_of(url)
        if path is None:
            raise StorageError("not a local file URL", url)
        return path, None

    def open_reader(self, target: Target, config: StorageConfig) -> Any:
        del config
        stream = open_local(target.location)
        COUNTERS.add("bytes_local", os.fstat(stream.fileno()).st_size)
        return stream

    def open_sink(self, target: Target, config: StorageConfig) -> Sink:
        del config
        return AtomicLocalFile(target.location)

    def size(self, target: Target, config: StorageConfig) -> int | None:
        del config
        return os.path.getsize(target.location)


class PipeBackend(StorageBackend):
    """``pipe:CMD``: a shell command's stdout (reading) or stdin (writing)."""

    remote = False

    def locate(self, url: str, config: StorageConfig) -> tuple[str, Mapping[str, Any] | None]:
        del config
        return url[len("pipe:") :], None

    def open_reader(self, target: Target, config: StorageConfig) -> Any:
        del config
        return PipeReader(target.location, target.url)

    def open_sink(self, target: Target, config: StorageConfig) -> Sink:
        del config
        return PipeWriter(target.location, target.url)


class FsspecBackend(StorageBackend):
    """Any fsspec filesystem: ranged blocks with read-ahead, or one streamed GET (``streaming``).

    The user's ``storage_options`` (one mapping, or one per protocol) become the filesystem's
    options. Sinks spool to a temp file and upload it on commit.
    """

    def __init__(self, streaming: StreamOpener | None = None):
        self.streaming = streaming

    def __repr__(self) -> str:
        opener = getattr(self.streaming, "__name__", None)
        return f"{type(self).__name__}(streaming={opener})"

    def locate(self, url: str, config: StorageConfig) -> tuple[str, Mapping[str, Any] | None]:
        return url, options_for(url, config.storage_options)

    def filesystem(self, target: Target) -> tuple[Any, str]:
        return url_to_fs(target.location, target.options)

    def size(self, target: Target, config: StorageConfig) -> int | None:
        fs, path = self.filesystem(target)
        return object_size(fs, path, target.url, config.retry)

    def open_reader(self, target: Target, config: StorageConfig) -> Any:
        fs, path = self.filesystem(target)
        if config.streaming and self.streaming is not None:
            # no HEAD first: the first GET's answer gives the size (StreamOpener)
            return StreamReader(fs, path, target.url, None, config.retry, opener=self.streaming)
        return RangeReader(
            fs,
            path,
            target.url,
            policy=config.retry,
            block_size=config.block_size,
            readahead=config.readahead,
        )

    def open_sink(self, target: Target, config: StorageConfig) -> Sink:
        fs, path = self.filesystem(target)
        return RemoteUpload(target.url, fs, path, config.retry)


class AISBackend(FsspecBackend):
    """AIStore's REST API over HTTP: ``ais://bucket/obj``, and cloud URLs routed by ``USE_AIS_FOR``.

    ``ais://b/o`` is read and written at ``$AIS_ENDPOINT/v1/objects/b/o?provider=ais``. A routed
    cloud URL (``routed=True``: ``gs://``/``s3://``... with ``USE_AIS_FOR``) is *read* through the
    gateway, which fetches and caches it from the cloud, but *written* to the cloud itself with
    the user's ``storage_options`` (routing is for reads).
    """

    def __init__(self, routed: bool = False):
        super().__init__(streaming=open_http_stream)
        self.routed = routed

    def __repr__(self) -> str:
        return f"AISBackend(routed={self.routed})"

    def locate(self, url: str, config: StorageConfig) -> tuple[str, Mapping[str, Any] | None]:
        if not config.ais_endpoint:
            raise StorageError("ais:// URL needs AIS_ENDPOINT (or ais_endpoint=)", url)
        return ais_object_url(url, config.ais_endpoint), None  # user options are for the cloud

    def open_sink(self, target: Target, config: StorageConfig) -> Sink:
        if self.routed:
            cloud = get_backend(url_scheme(target.rewritten))
            location, options = cloud.locate(target.rewritten, config)
            fs, path = url_to_fs(location, options)
            return RemoteUpload(target.url, fs, path, config.retry)
        fs, path = self.filesystem(target)
        # AIStore's object API takes PUT; fsspec's HTTP filesystem would POST
        return RemoteUpload(target.url, fs, path, config.retry, method="put")


_FSSPEC = FsspecBackend()
_LOCAL = LocalBackend()
_S3 = FsspecBackend(streaming=open_s3_stream)
_HTTP = FsspecBackend(streaming=open_http_stream)
_REGISTRY: dict[str, StorageBackend] = {
    "": _LOCAL,  # a path
    "-": StdioBackend(),
    "abfs": _FSSPEC,
    "abfss": _FSSPEC,
    "ais": AISBackend(),
    "az": _FSSPEC,
    "file": _LOCAL,
    "gcs": _FSSPEC,
    "gs": _FSSPEC,
    "http": _HTTP,
    "https": _HTTP,
    "pipe": PipeBackend(),
    "s3": _S3,
    "s3a": _S3,
}
assert list(_REGISTRY) == sorted(_REGISTRY), "keep the built-in table sorted"
AIS_ROUTE = AISBackend(routed=True)
"""Reads of cloud URLs whose scheme is in ``USE_AIS_FOR`` (see :func:`.target.resolve_target`)."""

registry: Mapping[str, StorageBackend] = MappingProxyType(_REGISTRY)
"""Read-only view of the registered schemes (``""`` is a local path, ``"-"`` stdin/stdout)."""


def scheme_of(url: str) -> str:
    """The registry key of a URL: its scheme, ``"-"`` for stdin/stdout, ``""`` for a path."""
    return "-" if url == "-" else url_scheme(url)


def register_backend(scheme: str, backend: StorageBackend, *, clobber: bool = False) -> None:
    """Make ``scheme://...`` URLs open through ``backend`` (a :class:`StorageBackend`).

    Refuses to replace a registered scheme (built-in or not) unless ``clobber=True``, so two
    plug-ins cannot silently take each other's URLs. Register before building datasets; a
    DataLoader worker started with ``spawn`` must register again (import your plug-in module in
    the worker, e.g. from ``worker_init_fn``).
    """
    key = scheme.lower().removesuffix("://").removesuffix(":")
    if not isinstance(backend, StorageBackend):
        raise TypeError(f"backend for {scheme!r} must be a StorageBackend, got {backend!r}")
    if key in _REGISTRY and not clobber:
        raise ValueError(
            f"storage scheme {key!r} is already registered ({_REGISTRY[key]!r}); "
            "pass clobber=True to replace it"
        )
    global _VERSION
    _REGISTRY[key] = backend
    _VERSION += 1  # targets resolved before this may name another back end


_VERSION = 0


def registry_version() -> int:
    """Bumped by every :func:`register_backend`: remembered targets older than it are redone."""
    return _VERSION


def get_backend(scheme: str) -> StorageBackend:
    """The back end for ``scheme`` (``"s3"``, ``"file"``, ``""``...); fsspec for unknown schemes.

    An unknown scheme is not an error here: fsspec may know it (``memory``, ``hf``...), and if
    it does not, opening the URL says so, naming it.
    """
    return _REGISTRY.get(scheme.lower(), _FSSPEC)


def known_schemes() -> list[str]:
    """The registered schemes, sorted (``""`` is a local path, ``"-"`` stdin/stdout)."""
    return sorted(_REGISTRY)
