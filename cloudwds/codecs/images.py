"""Image decoding by spec (``"rgb8"``, ``"torchrgb"``, ``"pil"``...) and image encoding.

Decoded values equal webdataset 1.0.2's for the same bytes: the image is converted with Pillow
to the spec's mode (``L``, ``RGB``, ``RGBA``), taken as a uint8 array, and float specs divide by
255 in float32. Differences that do not change values: arrays are always writable (webdataset
returns read-only views for uint8 numpy specs) and each spec costs one vectorized pass after
the decode.

JPEGs (recognised by their magic bytes ``FF D8 FF``, whatever the member's extension) decoded
to an array spec go through libjpeg-turbo via ``simplejpeg`` when it is installed, straight into
a numpy array: 1.3-1.6x faster than Pillow's path here (256x256), which decodes with
libjpeg-turbo too, with the same settings (accurate integer IDCT, fancy upsampling), into its own
4-byte-per-pixel buffer, and then copies the pixels out twice. The values are identical; what cannot be made identical goes to Pillow: CMYK and
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


MinSize = tuple[int, int]


def _min_size(value: int | tuple[int, int] | None) -> MinSize | None:
    """``jpeg_min_size`` as ``(height, width)``; an int means both; None or (0, 0): full size."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        pair = (value[0], value[1])
    else:
        raise TypeError(f"jpeg_min_size must be an int or (height, width) ints, got {value!r}")
    if pair[0] < 0 or pair[1] < 0:
        raise ValueError(f"jpeg_min_size must not be negative, got {value!r}")
    return None if pair == (0, 0) else pair


class ImageHandler:
    """Decoder handler ``(key, data) -> image | None`` for one image spec.

    A class rather than a closure so a ``Decoder`` holding it pickles into DataLoader workers.
    ``jpeg_min_size`` (cloudwds only) asks for JPEGs decoded at reduced size, see
    :func:`decode_image`.
    """

    def __init__(
        self,
        imagespec: str,
        extensions: str | list[str] | tuple[str, ...] = DEFAULT_IMAGE_EXTENSIONS,
        *,
        jpeg_min_size: int | tuple[int, int] | None = None,
    ) -> None:
        """Validate ``imagespec`` now, so a typo fails at pipeline construction, not per sample."""
        spec = imagespec.lower() if isinstance(imagespec, str) else imagespec
        if spec not in IMAGE_SPECS:
            raise ValueError(
                f"unknown image spec {imagespec!r}; valid specs: {', '.join(IMAGE_SPECS)}"
            )
        self.imagespec: str = spec
        self.extensions: frozenset[str] = frozenset(_split_extensions(extensions))
        self.jpeg_min_size: MinSize | None = _min_size(jpeg_min_size)
        _import_decoders()

    def __call__(self, key: str, data: bytes) -> Any:
        """Decode ``data`` if ``key``'s last extension is an image extension, else return None."""
        if extension_of(key) not in self.extensions:
            return None
        return decode_image(data, self.imagespec, jpeg_min_size=self.jpeg_min_size)

    def __repr__(self) -> str:
        extra = f", jpeg_min_size={self.jpeg_min_size!r}" if self.jpeg_min_size else ""
        return f"imagehandler({self.imagespec!r}, {' '.join(sorted(self.extensions))!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ImageHandler)
            and other.imagespec == self.imagespec
            and other.extensions == self.extensions
            and other.jpeg_min_size == self.jpeg_min_size
        )

    def __hash__(self) -> int:
        return hash((self.imagespec, self.extensions, self.jpeg_min_size))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Handlers pickled before jpeg_min_size existed unpickle as full-size decoders.
        self.__dict__.update({"jpeg_min_size": None, **state})


def imagehandler(
    imagespec: str,
    extensions: str | list[str] | tuple[str, ...] = DEFAULT_IMAGE_EXTENSIONS,
    *,
    jpeg_min_size: int | tuple[int, int] | None = None,
) -> ImageHandler:
    """Return a handler decoding image members to ``imagespec`` (webdataset's lowercase alias)."""
    return ImageHandler(imagespec, extensions, jpeg_min_size=jpeg_min_size)


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


def _import_decoders() -> None:
    """Import Pillow and simplejpeg now, where the pipeline is built.

    Otherwise every DataLoader worker imports them again at its first image, in every epoch
    (forked workers start from the parent's modules): about 50 ms per worker per epoch here.
    """
    import PIL.Image  # noqa: F401 - the import is the point

    _jpeg_module()


def fast_jpeg_available() -> bool:
    """Tell whether JPEGs decode through ``simplejpeg`` (installed and importable) here."""
    return _jpeg_module() is not None


def _decode_jpeg_fast(data: bytes, mode: str, min_size: MinSize | None = None) -> np.ndarray | None:
    """Decode a JPEG to a new writable uint8 array in Pillow ``mode``, or None for "use Pillow".

    None covers: simplejpeg missing, a colour space Pillow converts differently, an image over
    Pillow's pixel limit, and any error or warning from libjpeg-turbo (``strict=True``), so that
    Pillow, not this path, decides what a damaged file gives. ``min_size`` ``(h, w)``: see
    :func:`_reduction`.
    """
    sj = _jpeg_module()
    if sj is None:
        return None
    try:
        height, width, colorspace, _subsampling = sj.decode_jpeg_header(data)
    except Exception:  # noqa: BLE001 - any header simplejpeg can't read goes to Pillow, which decides
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
    min_h = min_w = 0
    if min_size is not None:
        scale = _reduction(height, width, min_size)
        if scale > 1:  # the scaled size itself: libjpeg-turbo then picks exactly 1/scale
            min_h, min_w = -(-height // scale), -(-width // scale)
    try:
        arr = sj.decode_jpeg(
            data,
            colorspace=target,
            fastdct=False,
            fastupsample=False,
            min_height=min_h,
            min_width=min_w,
            strict=True,
        )
    except Exception:  # noqa: BLE001 - any libjpeg-turbo error or warning: Pillow decides what it gives
        return None
    height, width = arr.shape[:2]  # smaller than the header's when min_size scaled it
    if as_rgb_then_l:
        # Pillow's exact integer RGB -> L weights, by calling Pillow itself.
        rgb = PIL.Image.frombuffer("RGB", (width, height), arr, "raw", "RGB", 0, 1)
        return np.array(rgb.convert("L"))
    out: np.ndarray = arr
    if mode == "L":
        return out.reshape(height, width)  # H W 1 -> H W, a view of the same new array
    return out


def _reduction(height: int, width: int, min_size: MinSize) -> int:
    """The largest of 8, 4, 2 (else 1) dividing both sides, rounded up, to at least ``min_size``.

    Only these DCT scales: libjpeg-turbo's others (3/8, 5/8, 7/8...) are often slower than a full
    decode.
    """
    min_h, min_w = min_size
    for scale in (8, 4, 2):
        if -(-height // scale) >= min_h and -(-width // scale) >= min_w:
            return scale
    return 1


def decode_image(
    data: bytes, imagespec: str, *, jpeg_min_size: int | tuple[int, int] | None = None
) -> Any:
    """Decode encoded image bytes to ``imagespec`` (see :data:`IMAGE_SPECS`).

    ``jpeg_min_size`` (an int for both sides, or ``(height, width)``) is for pipelines that
    shrink images anyway: a JPEG taking the simplejpeg path is decoded by libjpeg-turbo's DCT
    scaling at 1/8, 1/4 or 1/2 of each side (rounded up), the smallest of these that keeps both
    sides at least that large, which skips much of the decoding work (1/2: about 2x faster).
    Its values are libjpeg-turbo's scaled IDCT, close to, but not equal to, a full decode
    followed by any resize; images already smaller than the asked size, other formats, ``pil``
    specs and JPEGs that go to Pillow (see the module notes, or simplejpeg not installed) are
    decoded at full size, so the sizes a pipeline gets can differ by file: resize after.
    """
    container, dtype, mode = IMAGE_SPECS[imagespec]
    min_size = _min_size(jpeg_min_size)
    arr: np.ndarray | None = None
    if container != "pil" and data[:3] == _JPEG_MAGIC:
        arr = _decode_jpeg_fast(data, mode, min_size)  # new, writable: no copy needed below
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
