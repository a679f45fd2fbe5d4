"""webdataset's ``autodecode`` module: decoders by extension, image specs, ``Decoder``.

Everything here is cloudwds's codec layer (:mod:`cloudwds.codecs`) under webdataset's names.
Loaders that can run code go through the trust policy of :mod:`cloudwds.security`:
``unpickle_loads`` uses the allow-listing unpickler and ``torch_loads`` loads weights only,
unless the data is trusted (``WDS_TRUSTED=1``); both refuse under ``WDS_SECURE=1`` as
webdataset's do under ``enforce_security``.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from .codecs import Decoder, handle_extension, imagehandler, torch_audio, torch_video
from .codecs.basic import _DECODERS, basichandlers
from .codecs.decoding import Continue, gzfilter
from .codecs.images import DEFAULT_IMAGE_EXTENSIONS, IMAGE_SPECS, ImageHandler
from .errors import DecodingError
from .security import torch_loads, unpickle_loads
from .tenbin import tenbin_loads

__all__ = [
    "Continue",
    "Decoder",
    "DecodingError",
    "IMAGE_EXTENSIONS",
    "ImageHandler",
    "basichandlers",
    "call_extension_handler",
    "cbor_loads",
    "decoders",
    "default_decoder",
    "default_post_handlers",
    "default_pre_handlers",
    "gzfilter",
    "handle_extension",
    "imagehandler",
    "imagespecs",
    "msgpack_loads",
    "npy_loads",
    "npz_loads",
    "pytorch_weights_only",
    "tenbin_loads",
    "torch_audio",
    "torch_loads",
    "torch_video",
    "unpickle_loads",
]

pytorch_weights_only = os.environ.get("WDS_PYTORCH_WEIGHTS_ONLY", "0") == "1"
"""webdataset's flag, kept for imports. cloudwds loads ``.pth`` weights-only unless trusted."""

IMAGE_EXTENSIONS = DEFAULT_IMAGE_EXTENSIONS.split()
imagespecs = dict(IMAGE_SPECS)
# webdataset's table: cloudwds's registry, with the loaders that can run code replaced by
# webdataset's policy functions (refused outright under WDS_SECURE / enforce_security).
decoders: dict[str, Any] = {
    **_DECODERS,
    **dict.fromkeys(("pyd", "pickle", "pkl"), unpickle_loads),
    "pth": torch_loads,
}
default_pre_handlers = [gzfilter]
default_post_handlers = [basichandlers]
default_decoder = Decoder([])


def msgpack_loads(data: bytes) -> Any:
    """Decode MessagePack."""
    return _DECODERS["msgpack"](data)


def npy_loads(data: bytes) -> np.ndarray:
    """Load one ``.npy`` array (object arrays refused)."""
    array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)  # numpy types load() as Any
    return array


def npz_loads(data: bytes) -> dict[str, np.ndarray]:
    """Load an ``.npz`` archive into a dict."""
    arrays: dict[str, np.ndarray] = _DECODERS["npz"](data)
    return arrays


def cbor_loads(data: bytes) -> Any:
    """Decode CBOR."""
    return _DECODERS["cbor"](data)


def call_extension_handler(key: str, data: bytes, f: Any, extensions: list[str]) -> Any:
    """``f(data)`` when ``key``'s extension is in ``extensions``, else None."""
    return handle_extension(" ".join(extensions), f)(key, data)
