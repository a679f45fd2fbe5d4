"""Encoders for the writer: turn a sample of Python values into suffix → bytes, by extension.

The mirror image of :mod:`.decoding`: every extension the basic decoders read can be written
(``cls`` ints, ``json``, ``pyd``, ``npy``, ``npz``, ``msgpack``, ``cbor``, ``pth``) plus images
from numpy arrays, torch tensors (C H W) or PIL images. The table is exposed read-only as
:data:`encoders` and extended with :func:`register_encoder` (``clobber=False``).

Rules shared by every mode (webdataset's, except where marked):

- ``bytes`` pass through unchanged and ``str`` is written as UTF-8, whatever the extension.
- ``__key__`` is returned unchanged for the writer; other ``__`` metadata (``__url__``...) is
  dropped, since the writer never stores it.
- ``x.gz`` fields are encoded as ``x`` and then gzipped with ``mtime=0`` (reproducible bytes);
  bytes that already start with the gzip magic are taken as compressed and kept (cloudwds).
"""

from __future__ import annotations

import gzip
import io
import json
import operator
import pickle
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import CloudWdsError
from .basic import extension_of, normalize_extension
from .images import ENCODABLE_IMAGE_EXTENSIONS, encode_image

EncodeFn = Callable[[Any], bytes]
SampleFn = Callable[[dict[str, Any]], Mapping[str, Any]]

_GZIP_MAGIC = b"\x1f\x8b"


class EncodingError(CloudWdsError, ValueError):
    """A field could not be turned into bytes; the message names the field and the reason."""


def encode_text(x: Any) -> bytes:
    """Encode a ``str`` as UTF-8 (other types are refused rather than ``str()``-ed silently)."""
    if not isinstance(x, str):
        raise TypeError(f"expected str, got {type(x).__name__}")
    return x.encode("utf-8")


def encode_int(x: Any) -> bytes:
    """Encode an integer (also numpy/torch integer scalars) as ASCII digits; floats are refused."""
    return str(operator.index(x)).encode("ascii")


def encode_json(x: Any) -> bytes:
    """Encode as UTF-8 JSON, with a hint for the usual culprit (numpy values)."""
    try:
        return json.dumps(x).encode("utf-8")
    except TypeError as exn:
        raise TypeError(f"{exn}; convert arrays with .tolist() or store them as .npy") from exn


def encode_pickle(x: Any) -> bytes:
    """Pickle with the default protocol (readable by every supported Python)."""
    return pickle.dumps(x)


def encode_torch(x: Any) -> bytes:
    """Serialize with ``torch.save`` (torch imported on first use)."""
    import torch

    out = io.BytesIO()
    torch.save(x, out)
    return out.getvalue()


def encode_npy(x: Any) -> bytes:
    """Write one array in ``.npy`` format; object arrays are refused (decoders refuse them too)."""
    out = io.BytesIO()
    np.save(out, np.asarray(x), allow_pickle=False)
    return out.getvalue()


def encode_npz(x: Any) -> bytes:
    """Write a mapping name → array as a compressed ``.npz``."""
    if not isinstance(x, Mapping):
        raise TypeError(f"npz needs a mapping of name -> array, got {type(x).__name__}")
    out = io.BytesIO()
    np.savez_compressed(out, allow_pickle=False, **{str(k): np.asarray(v) for k, v in x.items()})
    return out.getvalue()


def encode_msgpack(x: Any) -> bytes:
    """Encode as MessagePack (bin type for bytes, so they decode back as bytes)."""
    import msgpack

    packed: bytes = msgpack.packb(x, use_bin_type=True)  # msgpack has no type information
    return packed


def encode_cbor(x: Any) -> bytes:
    """Encode as CBOR with ``cbor2``."""
    import cbor2

    return cbor2.dumps(x)


_ENCODERS: dict[str, EncodeFn] = {}
for _exts, _fn in (
    ("txt text transcript", encode_text),
    ("cls cls2 index inx id", encode_int),
    ("json jsn", encode_json),
    ("pyd pickle pkl", encode_pickle),
    ("pth", encode_torch),
    ("npy", encode_npy),
    ("npz", encode_npz),
    ("mp msg msgpack", encode_msgpack),
    ("cbor", encode_cbor),
):
    for _ext in _exts.split():
        _ENCODERS[_ext] = _fn
for _ext in ENCODABLE_IMAGE_EXTENSIONS:
    _ENCODERS[_ext] = partial(encode_image, ext=_ext)
del _exts, _fn, _ext

encoders: MappingProxyType[str, EncodeFn] = MappingProxyType(_ENCODERS)
"""Read-only view of extension → ``f(value) -> bytes`` used by ``make_encoder(True)``."""


def register_encoder(ext: str, f: EncodeFn, clobber: bool = False) -> None:
    """Teach the default encoder (``encoder=True``) a new extension; refuses silent overrides."""
    name = normalize_extension(ext)
    if not name or "." in name:
        raise ValueError(f"extension must be one non-empty component, got {ext!r}")
    if not callable(f):
        raise TypeError(f"encoder for {name!r} must be callable, got {f!r}")
    if name in _ENCODERS and not clobber:
        raise ValueError(
            f"an encoder for {name!r} is already registered ({_ENCODERS[name]!r}); "
            "pass clobber=True to replace it"
        )
    _ENCODERS[name] = f


class Encoder:
    """Callable ``sample -> {suffix: bytes, "__key__": key}`` built by :func:`make_encoder`.

    ``table=None`` means the live default table; ``table={}`` with ``transform`` means "values
    must already be bytes or str". A class, not a closure, so a writer holding it pickles.
    """

    def __init__(
        self, table: Mapping[str, EncodeFn] | None = None, transform: SampleFn | None = None
    ) -> None:
        """Store the extension table and the optional sample → sample function run first."""
        self.table = None if table is None else dict(table)
        self.transform = transform

    def __repr__(self) -> str:
        table = "default" if self.table is None else sorted(self.table)
        return f"Encoder(table={table}, transform={self.transform!r})"

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Encode every field of ``sample``; errors name the offending field."""
        if self.transform is not None:
            sample = self.transform(dict(sample))
            if not isinstance(sample, Mapping):
                raise TypeError(f"encoder function must return a dict, got {type(sample).__name__}")
        table = _ENCODERS if self.table is None else self.table
        result: dict[str, Any] = {}
        for key, value in sample.items():
            if key.startswith("__"):
                if key == "__key__":
                    result[key] = value
                continue
            result[key] = self.encode1(key, value, table)
        return result

    @staticmethod
    def encode1(key: str, value: Any, table: Mapping[str, EncodeFn]) -> bytes:
        """Encode one field by the extension of ``key`` (``x.gz``: encode as ``x``, then gzip)."""
        compress = key.endswith(".gz")
        inner = key[:-3] if compress else key
        if isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            if compress and data[:2] == _GZIP_MAGIC:
                return data
        elif isinstance(value, str):
            data = value.encode("utf-8")
        else:
            ext = extension_of(inner)
            f = table.get(ext)
            if f is None:
                if not table:
                    raise TypeError(
                        f"field {key!r}: with encoder=False (or a custom function) values must be "
                        f"bytes or str, got {type(value).__name__}"
                    )
                raise EncodingError(
                    f"field {key!r}: no encoder for extension {ext!r} and the value is "
                    f"{type(value).__name__}, not bytes/str; pass bytes or encoder={{{ext!r}: fn}}"
                )
            try:
                out = f(value)
            except Exception as exn:
                raise EncodingError(
                    f"field {key!r}: cannot encode {type(value).__name__} as {ext!r}: "
                    f"{type(exn).__name__}: {exn}"
                ) from exn
            if not isinstance(out, bytes | bytearray | memoryview):
                raise EncodingError(
                    f"field {key!r}: encoder {f!r} returned {type(out).__name__}, not bytes"
                )
            data = bytes(out)
        return gzip.compress(data, mtime=0) if compress else data


def make_encoder(encoder: bool | Mapping[str, EncodeFn] | SampleFn = True) -> Encoder:
    """Turn the writer's ``encoder=`` argument into an :class:`Encoder`.

    - ``True``: the default table (:data:`encoders`).
    - ``False``: no encoding; values must be bytes (kept) or str (UTF-8), else ``TypeError``.
    - a dict ext → fn: overrides/extends the default table for this writer only.
    - a callable sample → sample: applied first; its values must then be bytes or str.
    """
    if encoder is True:
        return Encoder()
    if encoder is False or encoder is None:
        return Encoder(table={})
    if isinstance(encoder, Mapping):
        table = dict(_ENCODERS)
        for ext, f in encoder.items():
            if not callable(f):
                raise TypeError(f"encoder for {ext!r} must be callable, got {f!r}")
            table[normalize_extension(ext)] = f
        return Encoder(table=table)
    if callable(encoder):
        return Encoder(table={}, transform=encoder)
    raise ValueError(
        f"encoder must be True, False, a dict ext -> fn or a callable, got {encoder!r}"
    )
