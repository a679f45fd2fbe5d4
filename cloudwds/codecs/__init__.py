"""Decoders and encoders by extension: bytes of tar members ⇄ Python values.

- :mod:`.basic`: registry of non-image decoders (``cls``, ``json``, ``npy``...).
- :mod:`.images`: image specs (``"rgb8"``, ``"torchrgb"``, ``"pil"``...) and image encoding.
- :mod:`.decoding`: ``Decoder``, ``handle_extension``, ``make_decoder``, video/audio handlers.
- :mod:`.encoding`: the writer's ``make_encoder`` and its registry.
"""

from ..tenbin import tenbin_dumps, tenbin_loads
from .basic import basichandlers, decoders, extension_of, register_decoder
from .decoding import (
    AUDIO_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Decoder,
    ExtensionHandler,
    MissingDependencyError,
    handle_extension,
    make_decoder,
    torch_audio,
    torch_video,
)
from .encoding import Encoder, EncodingError, encoders, make_encoder, register_encoder
from .images import (
    DEFAULT_IMAGE_EXTENSIONS,
    IMAGE_SPECS,
    ImageHandler,
    decode_image,
    encode_image,
    imagehandler,
)

for _ext in ("ten", "tb"):  # webdataset's tensor format (cloudwds.tenbin)
    register_decoder(_ext, tenbin_loads)
    register_encoder(_ext, tenbin_dumps)
del _ext

__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_IMAGE_EXTENSIONS",
    "Decoder",
    "Encoder",
    "EncodingError",
    "ExtensionHandler",
    "IMAGE_SPECS",
    "ImageHandler",
    "MissingDependencyError",
    "VIDEO_EXTENSIONS",
    "basichandlers",
    "decode_image",
    "decoders",
    "encode_image",
    "encoders",
    "extension_of",
    "handle_extension",
    "imagehandler",
    "make_decoder",
    "make_encoder",
    "register_decoder",
    "register_encoder",
    "torch_audio",
    "torch_video",
]
assert __all__ == sorted(__all__), "keep __all__ sorted"
