"""Extension → decoder registry for the non-image formats every shard tends to carry.

A tar member's suffix names its format (``cls`` → int, ``json`` → JSON, ``npy`` → array). The
table below is the single place that mapping lives; it is exposed read-only as :data:`decoders`
and extended with :func:`register_decoder`, which refuses silent overrides (``clobber=False``).
Heavy or optional libraries (torch, msgpack, cbor2) are imported on first use only.

Pickles and torch files are decoded under the trust policy of :mod:`cloudwds.security`
(allow-listed types, weights-only torch) unless the data is trusted.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import numpy as np

from ..security import load_pickle, load_torch
from ..security import torch_loads as torch_loads  # webdataset's names; refused under WDS_SECURE
from ..security import unpickle_loads as unpickle_loads

DecodeFn = Callable[[bytes], Any]


def extension_of(key: str) -> str:
    """Return the dispatch extension of a sample key: the lowercased part after its last dot."""
    return key.rpartition(".")[2].lower()


def normalize_extension(ext: str) -> str:
    """Return ``ext`` lowercased without leading dots, so ``".PNG"`` and ``"png"`` are one key."""
    return ext.lower().lstrip(".")


def decode_text(data: bytes) -> str:
    """Decode UTF-8 text (``txt``, ``text``, ``transcript``)."""
    return data.decode("utf-8")


def decode_int(data: bytes) -> int:
    """Decode an ASCII integer such as a class label (``cls``, ``index``, ``id``)."""
    return int(data)


def decode_json(data: bytes) -> Any:
    """Decode JSON; ``json.loads`` accepts bytes directly, so there is no extra copy."""
    return json.loads(data)


def decode_pickle(data: bytes, *, trusted: bool | None = None) -> Any:
    """Unpickle (``pyd``, ``pickle``, ``pkl``) through the allow-list of plain data types.

    A shard may come from anyone, and ``pickle.loads`` runs whatever the pickle names; so only
    built-in containers and scalars, numpy arrays and torch tensors are rebuilt unless
    ``trusted`` (default: ``WDS_TRUSTED=1``) — see :func:`cloudwds.security.load_pickle`.
    """
    return load_pickle(data, trusted=trusted)


def decode_torch(data: bytes, *, trusted: bool | None = None) -> Any:
    """Load a ``torch.save`` payload onto the CPU, ``weights_only=True`` unless ``trusted``.

    webdataset loads with ``weights_only=False``, which runs code from the shard; tensors,
    state dicts and plain containers load the same either way (:func:`cloudwds.security.load_torch`).
    """
    return load_torch(data, trusted=trusted)


# Decoders that take ``trusted=``: a Decoder built with ``trusted=`` passes it on to these.
TRUST_AWARE: frozenset[DecodeFn] = frozenset([decode_pickle, decode_torch])


def decode_npy(data: bytes) -> np.ndarray:
    """Load one ``.npy`` array; object arrays are refused (``allow_pickle=False``)."""
    array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)  # numpy types load() as Any
    return array


def decode_npz(data: bytes) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` archive into a plain dict (the archive is closed after)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def decode_msgpack(data: bytes) -> Any:
    """Decode MessagePack with strings as ``str`` (``raw=False``)."""
    import msgpack

    return msgpack.unpackb(data, raw=False)


def decode_cbor(data: bytes) -> Any:
    """Decode CBOR with ``cbor2``."""
    import cbor2

    return cbor2.loads(data)


_DECODERS: dict[str, DecodeFn] = {}
for _exts, _fn in (
    ("txt text transcript", decode_text),
    ("cls cls2 index inx id", decode_int),
    ("json jsn", decode_json),
    ("pyd pickle pkl", decode_pickle),
    ("pth", decode_torch),
    ("npy", decode_npy),
    ("npz", decode_npz),
    ("mp msg msgpack", decode_msgpack),
    ("cbor", decode_cbor),
):
    for _ext in _exts.split():
        _DECODERS[_ext] = _fn
del _exts, _fn, _ext

decoders: MappingProxyType[str, DecodeFn] = MappingProxyType(_DECODERS)
"""Read-only view of extension → ``f(bytes) -> value`` used by :func:`basichandlers`."""


def register_decoder(ext: str, f: DecodeFn, clobber: bool = False) -> None:
    """Teach :func:`basichandlers` (hence every default ``Decoder``) a new extension.

    Refuses to replace an existing entry unless ``clobber=True``, so two plug-ins cannot silently
    fight over one suffix. Register at import time of a module: worker processes started with
    ``spawn`` re-import modules and do not see registrations made later in the parent.
    """
    name = normalize_extension(ext)
    if not name or "." in name:
        raise ValueError(f"extension must be one non-empty component, got {ext!r}")
    if not callable(f):
        raise TypeError(f"decoder for {name!r} must be callable, got {f!r}")
    if name in _DECODERS and not clobber:
        raise ValueError(
            f"a decoder for {name!r} is already registered ({_DECODERS[name]!r}); "
            "pass clobber=True to replace it"
        )
    _DECODERS[name] = f


def basichandlers(key: str, data: bytes) -> Any:
    """Decode ``data`` by the extension of ``key`` using :data:`decoders`; None if unknown.

    This is the default ``post`` handler of every ``Decoder``, so text, labels, JSON, pickles,
    arrays, msgpack and CBOR decode even when only an image handler was asked for.
    """
    f = _DECODERS.get(extension_of(key))
    return None if f is None else f(data)
