"""``TarWriter`` and ``ShardWriter``: samples → WebDataset shards at any URL the storage layer opens.

A shard appears under its final name only when it is complete: local files are written under
a temporary name and renamed; object-store shards are uploaded in one piece on ``close()``;
an exception inside ``with TarWriter(...)`` discards the shard. ``ShardWriter`` opens a shard
only when the first sample for it arrives, so no empty shard is ever left behind.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self

from .codecs import make_encoder
from .storage import Sink, StorageConfig, open_output
from .tario import TarStreamWriter

Buffer = bytes | bytearray | memoryview  # what the tar writer hands to a sink


class BinaryWritable(Protocol):
    """A caller's output stream: webdataset's writers accept any object with ``write(bytes)``."""

    def write(self, data: Buffer, /) -> object: ...


class _StreamSink:
    """A caller-owned stream: written to, never closed or renamed by us."""

    def __init__(self, stream: BinaryWritable):
        self._stream = stream

    def write(self, data: Buffer) -> int:
        self._stream.write(data)  # what it returns varies (None for some streams); nobody reads it
        return len(data)

    def commit(self) -> None:
        flush = getattr(self._stream, "flush", None)
        if flush is not None:
            flush()

    def abort(self) -> None:
        self.commit()


class _GzipSink:
    """Compress into another sink (``.tar.gz`` / ``.tgz`` shards)."""

    def __init__(self, sink: Sink):
        self._sink = sink
        # typeshed wants a fileobj with flush(); GzipFile only calls it from its own flush(),
        # which nothing here calls (close() writes the trailer without it).
        gz = gzip.GzipFile(fileobj=sink, mode="wb", mtime=0)  # type: ignore[call-overload]
        self._gz: gzip.GzipFile = gz

    def write(self, data: Buffer) -> int:
        return self._gz.write(data)

    def commit(self) -> None:
        self._gz.close()
        self._sink.commit()

    def abort(self) -> None:
        try:
            self._gz.close()  # else GzipFile's finalizer writes its trailer into a closed sink
        finally:
            self._sink.abort()


class TarWriter:
    """Write samples (dicts with ``__key__``) as tar members ``<key>.<field>``.

    ``encoder=True`` encodes values by field extension (images from arrays/PIL, json, cls,
    npy, pickle...), ``False`` requires bytes/str values, a dict extends the table, a callable
    maps the whole sample. ``compress=True`` (or a ``.gz``/``.tgz`` URL) gzips the shard.
    """

    def __init__(
        self,
        fileobj: str | os.PathLike[str] | BinaryWritable,
        user: str = "bigdata",  # noqa: ARG002 - webdataset's signature; owner is always bigdata
        group: str = "bigdata",  # noqa: ARG002 - webdataset's signature; group is always bigdata
        mode: int = 0o0444,  # noqa: ARG002 - webdataset's signature; members are always 0o444
        compress: bool | None = None,
        encoder: bool
        | Mapping[str, Callable[[Any], bytes]]
        | Callable[[dict[str, Any]], dict[str, Any]] = True,
        keep_meta: bool = False,
        mtime: float | None = None,
        format: Any = None,  # noqa: A002, ARG002 - webdataset's name; always ustar + pax
        *,
        storage_options: Mapping[str, Any] | None = None,
        storage: StorageConfig | None = None,
    ):
        # webdataset's positional order; user/group/mode/format are accepted for it.
        if isinstance(fileobj, os.PathLike):
            fileobj = os.fspath(fileobj)
        self.url = fileobj if isinstance(fileobj, str) else getattr(fileobj, "name", None)
        if isinstance(fileobj, str):
            if storage is None:
                storage = StorageConfig.resolve(storage_options=storage_options)
            sink: Sink = open_output(fileobj, storage)
            if compress is None:
                compress = fileobj.endswith((".gz", ".tgz"))
        else:
            sink = _StreamSink(fileobj)
        self._sink: Sink = _GzipSink(sink) if compress else sink
        self._tar = TarStreamWriter(self._sink, mtime=mtime)
        self._encode = make_encoder(encoder)
        self.keep_meta = keep_meta
        self.count = 0
        self._closed = False

    @property
    def size(self) -> int:
        """Bytes written so far (uncompressed)."""
        return self._tar.bytes_written

    def write(self, obj: Mapping[str, Any]) -> int:
        """Write one sample; returns the number of bytes it took in the archive."""
        if self._closed:
            raise ValueError("write to a closed TarWriter")
        key = obj.get("__key__")
        if not isinstance(key, str) or not key:
            raise ValueError(f"sample needs a non-empty string __key__, got {key!r}")
        basename = key.rsplit("/", 1)[-1]
        if "." in basename:
            raise ValueError(
                f"__key__ {key!r} has a dot in its file name; readers would split it there"
            )
        encoded = self._encode(dict(obj))
        members = []
        for field in sorted(encoded):  # check every field before writing any: no half samples
            if field.startswith("__") and not self.keep_meta:
                continue
            value = encoded[field]
            if isinstance(value, str):
                value = value.encode("utf-8")
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise TypeError(f"field {field!r} of {key!r} is {type(value).__name__}, not bytes")
            members.append((f"{key}.{field}", value))
        before = self._tar.bytes_written
        for name, value in members:
            self._tar.add(name, value)
        self.count += 1
        return self._tar.bytes_written - before

    def close(self) -> None:
        """Finish the archive and publish it under its final name."""
        if self._closed:
            return
        self._closed = True
        self._tar.finish()
        self._sink.commit()

    def abort(self) -> None:
        """Discard the shard: nothing appears under the final name."""
        if self._closed:
            return
        self._closed = True
        self._sink.abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.abort()
            except Exception:  # noqa: BLE001 - a finalizer must not raise, whatever abort() hits
                pass


class ShardWriter:
    """Write samples across numbered shards: ``ShardWriter("out-%06d.tar", maxcount=1000)``.

    A new shard starts when the current one holds ``maxcount`` samples or ``maxsize`` bytes.
    ``post(url)`` runs after each shard is published (e.g. to upload or index it). ``shards``
    lists the URLs written.
    """

    def __init__(
        self,
        pattern: str,
        maxcount: int = 100000,
        maxsize: float = 3e9,
        post: Callable[[str], Any] | None = None,
        start_shard: int = 0,
        verbose: int = 0,
        opener: Callable[[str], Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        **kw: Any,
    ):
        if maxcount < 1:
            raise ValueError(f"maxcount must be >= 1, got {maxcount}")
        try:
            pattern % 0
        except TypeError as exn:
            raise ValueError(f"pattern {pattern!r} needs one %d-style field (e.g. %06d)") from exn
        self.pattern = pattern
        self.maxcount = maxcount
        self.maxsize = maxsize
        self.post = post
        self.verbose = verbose
        self.opener = opener  # webdataset's hook: opener(name) -> a writable stream
        self.kw = kw
        self.storage = kw.pop("storage", None) or StorageConfig.resolve(
            storage_options=storage_options
        )
        self.shard = start_shard
        self.shards: list[str] = []
        self.total = 0
        self._writer: TarWriter | None = None
        self._url: str | None = None

    def _next(self) -> None:
        self._finish()
        self._url = self.pattern % self.shard
        self.shard += 1
        if self.opener is not None:
            self._writer = TarWriter(self.opener(self._url), **self.kw)
        else:
            self._writer = TarWriter(self._url, storage=self.storage, **self.kw)

    def write(self, obj: Mapping[str, Any]) -> int:
        w = self._writer
        if w is None or w.count >= self.maxcount or w.size >= self.maxsize:
            self._next()
        assert self._writer is not None
        n = self._writer.write(obj)
        self.total += 1
        return n

    def _finish(self) -> None:
        if self._writer is None:
            return
        writer, url = self._writer, self._url
        self._writer = None
        if writer.count == 0:  # every write into it failed: leave no empty shard behind
            writer.abort()
            self.shard -= 1
            return
        writer.close()
        assert url is not None
        self.shards.append(url)
        if self.verbose:
            print(f"# wrote {url}: {writer.count} samples, {writer.size} bytes")
        if self.post is not None:
            self.post(url)

    def next_stream(self) -> None:
        """Close the current shard now; the next write starts a new one."""
        self._finish()

    def close(self) -> None:
        self._finish()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# -- webdataset's ``writer`` module names: encoders by their webdataset function names -----------


def torch_dumps(data: Any) -> bytes:
    """``torch.save`` to bytes (webdataset's name for the ``.pth`` encoder)."""
    from .codecs.encoding import encode_torch

    return encode_torch(data)


def numpy_dumps(data: Any) -> bytes:
    """One array in ``.npy`` format."""
    from .codecs.encoding import encode_npy

    return encode_npy(data)


def numpy_npz_dumps(data: Mapping[str, Any]) -> bytes:
    """A mapping name → array as ``.npz``."""
    from .codecs.encoding import encode_npz

    return encode_npz(data)


def tenbin_dumps(x: Any) -> bytes:
    """An array or a list of arrays in the ``.ten`` format (:mod:`cloudwds.tenbin`)."""
    from .tenbin import tenbin_dumps as dumps

    return dumps(x)


def cbor_dumps(x: Any) -> bytes:
    """CBOR bytes."""
    from .codecs.encoding import encode_cbor

    return encode_cbor(x)


def mp_dumps(x: Any) -> bytes:
    """MessagePack bytes."""
    from .codecs.encoding import encode_msgpack

    return encode_msgpack(x)


def imageencoder(image: Any, format: str = "PNG") -> bytes:  # noqa: A002 - webdataset's name
    """An image (PIL, array or tensor) encoded as ``format`` (``"PNG"``, ``"jpg"``...)."""
    from .codecs.images import encode_image

    return encode_image(image, format.lower())


def bytestr(data: Any) -> bytes:
    """``bytes`` as is, ``str`` as UTF-8."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("ascii")
    return str(data).encode("ascii")


def add_handlers(d: dict[str, Callable[[Any], bytes]], keys: str | list[str], value: Any) -> None:
    """Register ``value`` in ``d`` for each extension in ``keys`` (a list or space-separated)."""
    for k in keys.split() if isinstance(keys, str) else keys:
        d[k] = value


def make_handlers() -> dict[str, Callable[[Any], bytes]]:
    """A copy of the default extension → encoder table (:data:`cloudwds.codecs.encoders`)."""
    from .codecs import encoders

    return dict(encoders)


default_handlers = make_handlers()


def encode_based_on_extension1(data: Any, tname: str, handlers: Mapping[str, Any]) -> bytes:
    """Encode one value by the extension of its field name ``tname``."""
    from .codecs.encoding import Encoder

    return Encoder.encode1(tname, data, handlers)


def encode_based_on_extension(
    sample: Mapping[str, Any], handlers: Mapping[str, Any]
) -> dict[str, Any]:
    """Encode every field of ``sample`` with the extension table ``handlers``."""
    from .codecs.encoding import Encoder

    return Encoder(handlers)(sample)
