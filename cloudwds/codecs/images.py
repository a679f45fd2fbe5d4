"""Image decoding by spec (``"rgb8"``, ``"torchrgb"``, ``"pil"``...) and image encoding.

Decoded values equal webdataset 1.0.2's for the same bytes: the image is converted with Pillow
to the spec's mode (``L``, ``RGB``, ``RGBA``), taken as a uint8 array, and float specs divide by
255 in float32. Differences that do not change values: arrays are always writable (webdataset
returns read-only views for uint8 numpy specs) and each spec costs one vectorized pass after
the decode.

JPEGs (recognised by their magic bytes ``FF D8 FF``, whatever the member's extension) decoded
to an array spec go through libjpeg-turbo via ``simplejpeg`` when it is installed, straight into
a numpy array: about twice as fast as Pillow's path, which decodes with libjpeg-turbo too, with
the same settings (accurate integer IDCT, fancy upsampling), and then copies the pixels out of
its own buffer. The values are identical; what cannot be made identical goes to Pillow: CMYK and
YCCK JPEGs (Pillow inverts Adobe CMYK and converts it to RGB with its own formula), images over
Pillow's ``MAX_IMAGE_PIXELS`` (so its decompression-bomb warning or error still applies), and
any JPEG libjpeg-turbo reports a problem with, even a recoverable one, so a corrupt or truncated
JPEG fails (or, with ``ImageFile.LOAD_TRUNCATED_IMAGES``, decodes) exactly as it does with
Pillow. ``L`` from a colour JPEG is decoded as RGB and converted by Pillow's own ``convert("L")``
(libjpeg's grey output is the Y channel, which is not the same number). ``pil*`` specs and every
other format always use Pillow; so does everything when ``simplejpeg`` is not installed.

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


_JPEG_MAGIC = b"\xff\xd8\xff"
# Colour spaces whose decode libjpeg-turbo does the same way for simplejpeg as for Pillow.
_SAME_AS_PILLOW = frozenset({"YCbCr", "Gray", "RGB"})
_SIMPLEJPEG_COLORSPACE = {"L": "GRAY", "RGB": "RGB", "RGBA": "RGBA"}
_simplejpeg: Any = None  # the module once imported, False when it is not installed


def _jpeg_module() -> Any:
    """``simplejpeg`` or None; imported on the first JPEG, not with cloudwds (cold start)."""
    global _simplejpeg
    if _simplejpeg is None:
        try:
            import simplejpeg
        except ImportError:
            _simplejpeg = False
        else:
            _simplejpeg = simplejpeg
    return _simplejpeg or None


def fast_jpeg_available() -> bool:
    """Tell whether JPEGs decode through ``simplejpeg`` (installed and importable) here."""
    return _jpeg_module() is not None


def _decode_jpeg_fast(data: bytes, mode: str) -> np.ndarray | None:
    """Decode a JPEG to a new writable uint8 array in Pillow ``mode``, or None for "use Pillow".

    None covers: simplejpeg missing, a colour space Pillow converts differently, an image over
    Pillow's pixel limit, and any error or warning from libjpeg-turbo (``strict=True``), so that
    Pillow, not this path, decides what a damaged file gives.
    """
    sj = _jpeg_module()
    if sj is None:
        return None
    try:
        height, width, colorspace, _subsampling = sj.decode_jpeg_header(data)
    except Exception:
        return None
    if colorspace not in _SAME_AS_PILLOW:
        return None
    import PIL.Image

    limit = PIL.Image.MAX_IMAGE_PIXELS
    if limit is not None and height * width > limit:
        return None
    # Gray JPEGs to RGB(A): libjpeg replicates the channel, as Pillow's L -> RGB does.
    as_rgb_then_l = mode == "L" and colorspace != "Gray"
    target = "RGB" if as_rgb_then_l else _SIMPLEJPEG_COLORSPACE[mode]
    try:
        arr = sj.decode_jpeg(
            data, colorspace=target, fastdct=False, fastupsample=False, strict=True
        )
    except Exception:
        return None
    if as_rgb_then_l:
        # Pillow's exact integer RGB -> L weights, by calling Pillow itself.
        rgb = PIL.Image.frombuffer("RGB", (width, height), arr, "raw", "RGB", 0, 1)
        return np.array(rgb.convert("L"))
    if mode == "L":
        return arr.reshape(height, width)  # H W 1 -> H W, a view of the same new array
    return arr


def decode_image(data: bytes, imagespec: str) -> Any:
    """Decode encoded image bytes to ``imagespec`` (see :data:`IMAGE_SPECS`)."""
    container, dtype, mode = IMAGE_SPECS[imagespec]
    arr: np.ndarray | None = None
    if container != "pil" and data[:3] == _JPEG_MAGIC:
        arr = _decode_jpeg_fast(data, mode)  # new, writable: no copy needed below
    if arr is None:
        arr = _decode_pillow(data, container, mode)
        if not isinstance(arr, np.ndarray):
            return arr  # a PIL image for the pil specs
        if container == "numpy" and dtype == "uint8":
            return arr.copy()  # Pillow's buffer is read-only
    if container == "numpy":
        if dtype == "uint8":
            return arr
        # float32 / float32 in one pass: same values as webdataset's astype(float32) / 255.0.
        return np.divide(arr, _F32_255, dtype=np.float32)

    import torch

    chw = arr if arr.ndim == 2 else arr.transpose(2, 0, 1)  # H W C -> C H W
    if dtype == "uint8":
        if arr.ndim == 3:
            return torch.from_numpy(np.ascontiguousarray(chw))
        return torch.from_numpy(chw if chw.flags.writeable else chw.copy())
    out = np.empty(chw.shape, dtype=np.float32)
    np.divide(chw, _F32_255, out=out, dtype=np.float32)
    return torch.from_numpy(out)


def _decode_pillow(data: bytes, container: str, mode: str) -> Any:
    """Pillow's path: a PIL image for ``pil`` specs, else a read-only uint8 array view."""
    import PIL.Image

    with PIL.Image.open(io.BytesIO(data)) as img:
        if container == "pil":
            # convert() always returns a loaded copy detached from the BytesIO.
            return img.convert(mode)
        # H W or H W C uint8, read-only view of Pillow's buffer.
        return np.asarray(img if img.mode == mode else img.convert(mode))


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
