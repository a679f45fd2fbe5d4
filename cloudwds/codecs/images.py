"""Image decoding by spec (``"rgb8"``, ``"torchrgb"``, ``"pil"``...) and image encoding.

Decoded values equal webdataset 1.0.2's for the same bytes: the image is converted with Pillow
to the spec's mode (``L``, ``RGB``, ``RGBA``), taken as a uint8 array, and float specs divide by
255 in float32. Differences that do not change values: arrays are always writable (webdataset
returns read-only views for uint8 numpy specs) and each spec costs one vectorized pass after
Pillow's decode.

Axes: numpy specs give ``H W`` (``l``) or ``H W C``; torch specs give ``H W`` or ``C H W``.
"""

from __future__ import annotations

import io
from typing import Any, NamedTuple

import numpy as np

from .basic import extension_of, normalize_extension

DEFAULT_IMAGE_EXTENSIONS = "jpg jpeg png ppm pgm pbm pnm webp gif tif tiff bmp"


class ImageSpec(NamedTuple):
    """What an image spec decodes to: container, element type and Pillow mode."""

    container: str  # "numpy" | "torch" | "pil"
    dtype: str | None  # "uint8" | "float32" | None (pil)
    mode: str  # Pillow mode: "L" | "RGB" | "RGBA"


IMAGE_SPECS: dict[str, ImageSpec] = {
    "l8": ImageSpec("numpy", "uint8", "L"),
    "rgb8": ImageSpec("numpy", "uint8", "RGB"),
    "rgba8": ImageSpec("numpy", "uint8", "RGBA"),
    "l": ImageSpec("numpy", "float32", "L"),
    "rgb": ImageSpec("numpy", "float32", "RGB"),
    "rgba": ImageSpec("numpy", "float32", "RGBA"),
    "torchl8": ImageSpec("torch", "uint8", "L"),
    "torchrgb8": ImageSpec("torch", "uint8", "RGB"),
    "torchrgba8": ImageSpec("torch", "uint8", "RGBA"),
    "torchl": ImageSpec("torch", "float32", "L"),
    "torchrgb": ImageSpec("torch", "float32", "RGB"),
    "torch": ImageSpec("torch", "float32", "RGB"),
    "torchrgba": ImageSpec("torch", "float32", "RGBA"),
    "pill": ImageSpec("pil", None, "L"),
    "pil": ImageSpec("pil", None, "RGB"),  # webdataset converts "pil" to RGB too
    "pilrgb": ImageSpec("pil", None, "RGB"),
    "pilrgba": ImageSpec("pil", None, "RGBA"),
}

_F32_255 = np.float32(255.0)


def _split_extensions(extensions: str | list[str] | tuple[str, ...] | frozenset[str]) -> list[str]:
    items = extensions.split() if isinstance(extensions, str) else list(extensions)
    return [normalize_extension(e) for e in items]


class ImageHandler:
    """Decoder handler ``(key, data) -> image | None`` for one image spec.

    A class rather than a closure so a ``Decoder`` holding it pickles into DataLoader workers.
    """

    def __init__(
        self,
        imagespec: str,
        extensions: str | list[str] | tuple[str, ...] = DEFAULT_IMAGE_EXTENSIONS,
    ) -> None:
        """Validate ``imagespec`` now, so a typo fails at pipeline construction, not per sample."""
        spec = imagespec.lower() if isinstance(imagespec, str) else imagespec
        if spec not in IMAGE_SPECS:
            raise ValueError(
                f"unknown image spec {imagespec!r}; valid specs: {', '.join(IMAGE_SPECS)}"
            )
        self.imagespec: str = spec
        self.extensions: frozenset[str] = frozenset(_split_extensions(extensions))

    def __call__(self, key: str, data: bytes) -> Any:
        """Decode ``data`` if ``key``'s last extension is an image extension, else return None."""
        if extension_of(key) not in self.extensions:
            return None
        return decode_image(data, self.imagespec)

    def __repr__(self) -> str:
        return f"imagehandler({self.imagespec!r}, {' '.join(sorted(self.extensions))!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ImageHandler)
            and other.imagespec == self.imagespec
            and other.extensions == self.extensions
        )

    def __hash__(self) -> int:
        return hash((self.imagespec, self.extensions))


def imagehandler(
    imagespec: str, extensions: str | list[str] | tuple[str, ...] = DEFAULT_IMAGE_EXTENSIONS
) -> ImageHandler:
    """Return a handler decoding image members to ``imagespec`` (webdataset's lowercase alias)."""
    return ImageHandler(imagespec, extensions)


def decode_image(data: bytes, imagespec: str) -> Any:
    """Decode encoded image bytes to ``imagespec`` (see :data:`IMAGE_SPECS`)."""
    import PIL.Image

    container, dtype, mode = IMAGE_SPECS[imagespec]
    with PIL.Image.open(io.BytesIO(data)) as img:
        if container == "pil":
            # convert() always returns a loaded copy detached from the BytesIO.
            return img.convert(mode)
        # H W or H W C uint8, read-only view of Pillow's buffer.
        arr = np.asarray(img if img.mode == mode else img.convert(mode))
    if container == "numpy":
        if dtype == "uint8":
            return arr.copy()
        # float32 / float32 in one pass: same values as webdataset's astype(float32) / 255.0.
        return np.divide(arr, _F32_255, dtype=np.float32)

    import torch

    chw = arr if arr.ndim == 2 else arr.transpose(2, 0, 1)  # H W C -> C H W
    if dtype == "uint8":
        return torch.from_numpy(np.ascontiguousarray(chw) if arr.ndim == 3 else chw.copy())
    out = np.empty(chw.shape, dtype=np.float32)
    np.divide(chw, _F32_255, out=out, dtype=np.float32)
    return torch.from_numpy(out)


# ---------------------------------------------------------------- encoding

_PIL_FORMATS: dict[str, str] = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "png": "PNG",
    "ppm": "PPM",
    "pgm": "PPM",
    "pbm": "PPM",
    "pnm": "PPM",
    "tif": "TIFF",
    "tiff": "TIFF",
    "bmp": "BMP",
    "webp": "WEBP",
}
ENCODABLE_IMAGE_EXTENSIONS = tuple(_PIL_FORMATS)

_FORCED_MODE = {"pgm": "L", "pbm": "1"}  # these formats are defined by their pixel type


def to_pil(image: Any) -> Any:
    """Turn a PIL image, numpy array (``H W``/``H W C``) or torch tensor (``H W``/``C H W``) into PIL.

    uint8 is used as-is; floats must lie in 0..1 (a ±0.001 slack absorbs rounding) and are
    scaled by 255, rounded and clipped, so decode(``"rgb"``) → encode round-trips exactly.
    """
    import PIL.Image

    if isinstance(image, PIL.Image.Image):
        return image
    if hasattr(image, "detach") and hasattr(
        image, "permute"
    ):  # torch.Tensor, without importing torch
        tensor = image.detach().cpu()
        if tensor.ndim == 3:
            tensor = tensor.permute(1, 2, 0)  # C H W -> H W C
        image = tensor.numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"cannot encode {type(image).__name__} as an image")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise ValueError(
            f"image must be H W, H W 3 or H W 4 (torch: C H W); got shape {image.shape}"
        )
    if image.dtype.kind == "f":
        lo, hi = float(np.min(image)), float(np.max(image))
        if not (lo >= -0.001 and hi <= 1.001):  # also rejects NaN
            raise ValueError(
                f"float images must be in 0..1, got values in {lo}..{hi} (use uint8 for 0..255)"
            )
        image = np.rint(image.clip(0.0, 1.0) * 255.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8 or float in 0..1, got dtype {image.dtype}")
    return PIL.Image.fromarray(np.ascontiguousarray(image))


def encode_image(image: Any, ext: str, quality: int = 95) -> bytes:
    """Encode ``image`` (see :func:`to_pil`) in the format named by ``ext`` (``"jpg"``, ``"png"``...)."""
    ext = normalize_extension(ext)
    fmt = _PIL_FORMATS.get(ext)
    if fmt is None:
        raise ValueError(f"cannot encode images as {ext!r}; known: {' '.join(_PIL_FORMATS)}")
    img = to_pil(image)
    forced = _FORCED_MODE.get(ext)
    if forced is not None and img.mode != forced:
        img = img.convert(forced)
    opts: dict[str, Any] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    out = io.BytesIO()
    img.save(out, format=fmt, **opts)
    return out.getvalue()
