"""Tests for cloudwds.codecs.images: the libjpeg-turbo (simplejpeg) JPEG path gives exactly the
values of Pillow's path (webdataset's), and everything it cannot match goes to Pillow.

Every JPEG is made here with Pillow (or simplejpeg's encoder for subsamplings Pillow does not
write); the reference is always ``np.asarray(Image.open(...).convert(mode))`` laid out and
scaled the way the spec says, which is what webdataset returns.
"""

from __future__ import annotations

import io
import json
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
import simplejpeg
import torch
import webdataset.autodecode as wds_autodecode

from cloudwds.codecs.decoding import make_decoder
from cloudwds.codecs.images import (
    IMAGE_SPECS,
    _decode_jpeg_fast,
    decode_image,
    fast_jpeg_available,
    imagehandler,
)
from cloudwds.errors import DecodingError

ARRAY_SPECS = sorted(s for s, spec in IMAGE_SPECS.items() if spec.container != "pil")


def _pixels(h: int, w: int, seed: int, noise: int = 40) -> np.ndarray:
    """A photo-like RGB image: gradients (so chroma upsampling matters) plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x * y) % 256], -1)
    jitter = rng.integers(-noise, noise + 1, base.shape)
    return np.clip(base + jitter, 0, 255).astype(np.uint8)


def _pil_jpeg(img: PIL.Image.Image, **opts: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", **opts)
    return out.getvalue()


def _jpeg_variants() -> dict[str, bytes]:
    """name -> JPEG bytes over sizes, subsamplings, qualities, progressive, grey, Adobe RGB..."""
    out: dict[str, bytes] = {}
    sizes = [(1, 1), (2, 3), (17, 33), (33, 17), (8, 8), (16, 16), (61, 47), (256, 256)]
    for i, (h, w) in enumerate(sizes):
        img = PIL.Image.fromarray(_pixels(h, w, seed=i))
        for q in (25, 90):
            for ss, name in ((0, "444"), (1, "422"), (2, "420")):
                out[f"{h}x{w}-q{q}-{name}"] = _pil_jpeg(img, quality=q, subsampling=ss)
            out[f"{h}x{w}-q{q}-progressive"] = _pil_jpeg(img, quality=q, progressive=True)
            out[f"{h}x{w}-q{q}-gray"] = _pil_jpeg(img.convert("L"), quality=q)
        out[f"{h}x{w}-optimized"] = _pil_jpeg(img, optimize=True)
        out[f"{h}x{w}-adobe-rgb"] = _pil_jpeg(img, keep_rgb=True)  # no YCbCr transform
        arr = np.ascontiguousarray(_pixels(h, w, seed=100 + i))
        for ss in ("440", "411"):  # Pillow writes neither
            out[f"{h}x{w}-{ss}"] = simplejpeg.encode_jpeg(arr, 85, "RGB", ss)
    img = PIL.Image.fromarray(_pixels(40, 30, seed=7))
    out["restart-markers"] = _pil_jpeg(img, restart_marker_blocks=2)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # orientation "rotate 90": neither webdataset nor cloudwds applies it
    out["exif-orientation-6"] = _pil_jpeg(img, exif=exif)
    out["trailing-bytes"] = _pil_jpeg(img) + b"not part of the image" * 4
    mpo = io.BytesIO()
    img.save(mpo, format="MPO", save_all=True, append_images=[img.rotate(90)])
    out["mpo-first-frame"] = mpo.getvalue()
    return out


JPEGS = _jpeg_variants()
FAST_CASES = sorted(JPEGS)


def _cmyk_jpeg() -> bytes:
    return _pil_jpeg(PIL.Image.fromarray(_pixels(21, 37, seed=3)).convert("CMYK"), quality=90)


def pillow_reference(data: bytes, spec: str) -> np.ndarray:
    """What the spec must return, computed from Pillow alone (webdataset's recipe)."""
    container, dtype, mode = IMAGE_SPECS[spec]
    with PIL.Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img.convert(mode))
    if dtype == "float32":
        arr = arr.astype(np.float32) / np.float32(255.0)
    if container == "torch" and arr.ndim == 3:
        arr = arr.transpose(2, 0, 1)
    return arr


def as_numpy(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        assert value.is_contiguous()
        return value.numpy()
    assert isinstance(value, np.ndarray)
    assert value.flags.writeable and value.flags.c_contiguous
    return value


def test_simplejpeg_is_used_here() -> None:
    assert fast_jpeg_available()


@pytest.mark.parametrize("name", FAST_CASES)
def test_fast_path_takes_every_variant_and_matches_pillow_exactly(name: str) -> None:
    data = JPEGS[name]
    for mode in ("L", "RGB", "RGBA"):
        fast = _decode_jpeg_fast(data, mode)
        assert fast is not None, f"{name} {mode} fell back to Pillow"
        with PIL.Image.open(io.BytesIO(data)) as img:
            ref = np.asarray(img.convert(mode))
        assert fast.dtype == np.uint8 and fast.shape == ref.shape
        assert np.array_equal(fast, ref), f"{name} {mode}"
    for spec in ARRAY_SPECS:
        ours = decode_image(data, spec)
        ref = pillow_reference(data, spec)
        got = as_numpy(ours)
        assert got.dtype == ref.dtype and got.shape == ref.shape, spec
        assert np.array_equal(got, ref), f"{name} {spec}"


@pytest.mark.parametrize("name", ["17x33-q90-420", "61x47-q25-444", "8x8-q90-gray", "1x1-q90-422"])
@pytest.mark.parametrize("spec", ARRAY_SPECS)
def test_equals_webdataset(name: str, spec: str) -> None:
    data = JPEGS[name]
    ours = decode_image(data, spec)
    theirs = wds_autodecode.ImageHandler(spec)(".jpg", data)
    assert type(ours) is type(theirs)
    if isinstance(ours, torch.Tensor):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
    else:
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_colour_jpeg_as_l_uses_pillows_weights_not_libjpegs_luma() -> None:
    """libjpeg's GRAY output of a colour JPEG is its Y channel, which is not Pillow's
    ``convert("L")``: the fast path must give Pillow's numbers."""
    data = JPEGS["256x256-q90-444"]
    luma = simplejpeg.decode_jpeg(data, colorspace="GRAY")[:, :, 0]
    ref = pillow_reference(data, "l8")
    assert not np.array_equal(luma, ref)  # the reason for the conversion
    assert np.array_equal(decode_image(data, "l8"), ref)
    assert np.array_equal(decode_image(data, "torchl8").numpy(), ref)


def test_gray_jpeg_as_rgb_and_rgba_replicates_the_channel() -> None:
    data = JPEGS["61x47-q90-gray"]
    grey = pillow_reference(data, "l8")
    rgb = decode_image(data, "rgb8")
    rgba = decode_image(data, "rgba8")
    assert rgb.shape == (61, 47, 3) and all(np.array_equal(rgb[:, :, c], grey) for c in range(3))
    assert np.array_equal(rgba[:, :, :3], rgb) and (rgba[:, :, 3] == 255).all()


def test_rgba_from_colour_jpeg_is_rgb_plus_opaque_alpha() -> None:
    data = JPEGS["17x33-q90-420"]
    rgba = decode_image(data, "rgba8")
    assert np.array_equal(rgba[:, :, :3], decode_image(data, "rgb8"))
    assert (rgba[:, :, 3] == 255).all()


def test_exif_orientation_is_not_applied() -> None:
    data = JPEGS["exif-orientation-6"]
    assert decode_image(data, "rgb8").shape == (40, 30, 3)  # H W as stored, not rotated


def test_cmyk_jpeg_goes_to_pillow() -> None:
    data = _cmyk_jpeg()
    assert simplejpeg.decode_jpeg_header(data)[2] == "CMYK"
    # libjpeg-turbo would decode it, to other numbers than Pillow's CMYK -> RGB: not used.
    assert not np.array_equal(
        simplejpeg.decode_jpeg(data, colorspace="RGB"), pillow_reference(data, "rgb8")
    )
    assert _decode_jpeg_fast(data, "RGB") is None
    for spec in ARRAY_SPECS:
        assert np.array_equal(as_numpy(decode_image(data, spec)), pillow_reference(data, spec))


def test_jpeg_is_recognised_by_magic_bytes_not_extension() -> None:
    jpeg = JPEGS["17x33-q90-420"]
    handler = imagehandler("rgb8")
    assert np.array_equal(handler(".png", jpeg), pillow_reference(jpeg, "rgb8"))
    png = io.BytesIO()
    PIL.Image.fromarray(_pixels(5, 7, seed=1)).save(png, format="PNG")
    assert np.array_equal(handler(".jpg", png.getvalue()), _pixels(5, 7, seed=1))


def test_pil_specs_still_return_pillow_images() -> None:
    data = JPEGS["17x33-q90-420"]
    for spec, array_spec in (
        ("pil", "rgb8"),
        ("pilrgb", "rgb8"),
        ("pill", "l8"),
        ("pilrgba", "rgba8"),
    ):
        img = decode_image(data, spec)
        assert isinstance(img, PIL.Image.Image) and img.mode == IMAGE_SPECS[spec].mode
        assert np.array_equal(np.asarray(img), pillow_reference(data, array_spec))


# ---------------------------------------------------------------- damaged and unusual files


def _recoverably_corrupt() -> bytes:
    """A JPEG with one byte flipped that libjpeg-turbo warns about but Pillow decodes.

    The first such byte from the middle of the entropy-coded data on is taken, so the file is
    the same on every run.
    """
    good = JPEGS["61x47-q90-420"]
    for pos in range(len(good) // 2, len(good) - 2):
        data = good[:pos] + bytes([good[pos] ^ 0xFF]) + good[pos + 1 :]
        try:
            simplejpeg.decode_jpeg(data, strict=True)
        except ValueError:
            try:
                pillow_reference(data, "rgb8")
            except Exception:
                continue
            return data
    raise AssertionError("no recoverably corrupt variant found")


def test_recoverable_corruption_gives_pillows_values() -> None:
    data = _recoverably_corrupt()
    with pytest.raises(ValueError):
        simplejpeg.decode_jpeg(data, strict=True)  # the fast path declines ...
    assert _decode_jpeg_fast(data, "RGB") is None
    for spec in ARRAY_SPECS:  # ... and Pillow's decode is what the user gets, as before
        assert np.array_equal(as_numpy(decode_image(data, spec)), pillow_reference(data, spec))


def test_truncated_jpeg_fails_with_pillows_error_naming_url_and_member() -> None:
    good = JPEGS["61x47-q90-420"]
    sample = {"__key__": "dir/a", "__url__": "s3://b/shard-0003.tar", "jpg": good[: len(good) // 2]}
    for spec in ("rgb8", "rgb", "torchrgb", "l8"):
        with pytest.raises(DecodingError) as info:
            make_decoder(spec)(sample)
        assert info.value.url == "s3://b/shard-0003.tar"
        assert info.value.member == "dir/a.jpg"
        assert "s3://b/shard-0003.tar" in str(info.value) and "dir/a.jpg" in str(info.value)
        cause = info.value.__cause__
        assert type(cause) is OSError and "truncated" in str(cause)  # Pillow's, as before


def test_truncated_jpeg_with_load_truncated_images_decodes_as_pillow_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(PIL.ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    good = JPEGS["61x47-q90-420"]
    data = good[: len(good) * 2 // 3]
    ours = decode_image(data, "rgb8")
    assert ours.shape == (61, 47, 3)
    assert np.array_equal(ours, pillow_reference(data, "rgb8"))


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff not really a jpeg",
        b"\xff\xd8\xff",
        # SOF0 claiming 12-bit samples: libjpeg-turbo's 8-bit API refuses, so does Pillow
        JPEGS["17x33-q90-420"].replace(b"\xff\xc0\x00\x11\x08", b"\xff\xc0\x00\x11\x0c", 1),
    ],
    ids=["garbage", "magic-only", "12-bit"],
)
def test_undecodable_jpeg_raises_pillows_error(data: bytes) -> None:
    with pytest.raises(Exception) as pillow_error, PIL.Image.open(io.BytesIO(data)) as img:
        img.convert("RGB")
    with pytest.raises(type(pillow_error.value)):
        decode_image(data, "rgb8")
    sample = {"__key__": "k", "__url__": "/data/s.tar", "jpeg": data}
    with pytest.raises(DecodingError) as info:
        make_decoder("torchrgb")(sample)
    assert info.value.member == "k.jpeg" and info.value.url == "/data/s.tar"
    assert type(info.value.__cause__) is type(pillow_error.value)


def test_decompression_bomb_limits_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    data = JPEGS["61x47-q90-420"]  # 2,867 pixels
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 2000)  # over the limit: Pillow warns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = decode_image(data, "rgb8")
        ref = pillow_reference(data, "rgb8")
    assert any(issubclass(w.category, PIL.Image.DecompressionBombWarning) for w in caught)
    assert np.array_equal(ours, ref)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # over twice the limit: error
    with pytest.raises(PIL.Image.DecompressionBombError):
        decode_image(data, "rgb8")


# ---------------------------------------------------------------- reduced-size decode


@pytest.mark.parametrize(
    ("name", "min_size", "shape"),
    [
        ("256x256-q90-420", 128, (128, 128)),
        ("256x256-q90-420", (64, 0), (64, 64)),
        ("256x256-q90-420", (0, 32), (32, 32)),
        ("256x256-q90-420", 1, (32, 32)),
        ("256x256-q90-420", 129, (256, 256)),  # 1/2 would be too small; no 3/8...7/8 scales
        ("256x256-q90-420", 1000, (256, 256)),  # never larger than the image
        ("61x47-q90-444", 16, (31, 24)),  # sides rounded up; 1/4 would make 12 wide
        ("61x47-q90-gray", (8, 6), (8, 6)),
        ("33x17-q90-422", (0, 0), (33, 17)),  # (0, 0): full size
    ],
)
def test_jpeg_min_size_picks_the_largest_power_of_two_reduction(
    name: str, min_size: int | tuple[int, int], shape: tuple[int, int]
) -> None:
    data = JPEGS[name]
    rgb8 = decode_image(data, "rgb8", jpeg_min_size=min_size)
    assert rgb8.shape == (*shape, 3)
    # The other specs are the same scaled pixels, converted exactly as at full size.
    assert np.array_equal(
        decode_image(data, "rgb", jpeg_min_size=min_size), rgb8.astype(np.float32) / 255
    )
    assert np.array_equal(
        decode_image(data, "torchrgb8", jpeg_min_size=min_size).numpy(), rgb8.transpose(2, 0, 1)
    )
    rgba8 = decode_image(data, "rgba8", jpeg_min_size=min_size)
    assert np.array_equal(rgba8[:, :, :3], rgb8) and (rgba8[:, :, 3] == 255).all()
    l8 = decode_image(data, "l8", jpeg_min_size=min_size)
    assert np.array_equal(l8, np.asarray(PIL.Image.fromarray(rgb8).convert("L")))


def test_jpeg_min_size_values_are_close_to_a_full_decode_shrunk() -> None:
    """Not equal (libjpeg-turbo's scaled IDCT is its own filter), but under a level on average."""
    y, x = np.mgrid[0:256, 0:256] / 256.0
    smooth = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + 4 * y)], -1) * 255
    data = _pil_jpeg(PIL.Image.fromarray(smooth.astype(np.uint8)), quality=90)
    full = PIL.Image.fromarray(decode_image(data, "rgb8"))
    for factor in (2, 4, 8):
        small = decode_image(data, "rgb8", jpeg_min_size=256 // factor).astype(np.int16)
        boxed = np.asarray(full.reduce(factor)).astype(np.int16)
        assert small.shape == boxed.shape
        assert not np.array_equal(small, boxed)
        assert float(np.abs(small - boxed).mean()) < 1.0


def test_jpeg_min_size_leaves_other_images_at_full_size() -> None:
    png = io.BytesIO()
    PIL.Image.fromarray(_pixels(40, 40, seed=2)).save(png, format="PNG")
    cmyk = _cmyk_jpeg()
    handler = imagehandler("rgb8", jpeg_min_size=8)
    assert np.array_equal(handler(".png", png.getvalue()), _pixels(40, 40, seed=2))
    assert np.array_equal(handler(".jpg", cmyk), pillow_reference(cmyk, "rgb8"))  # via Pillow
    pil = decode_image(JPEGS["256x256-q90-420"], "pil", jpeg_min_size=8)
    assert pil.size == (256, 256)


def test_imagehandler_jpeg_min_size_is_part_of_its_identity_and_pickles() -> None:
    import pickle

    h = imagehandler("rgb8", jpeg_min_size=(64, 32))
    assert h.jpeg_min_size == (64, 32) and "jpeg_min_size=(64, 32)" in repr(h)
    assert h != imagehandler("rgb8") and h == imagehandler("rgb8", jpeg_min_size=(64, 32))
    assert hash(h) == hash(imagehandler("rgb8", jpeg_min_size=(64, 32)))
    assert imagehandler("rgb8", jpeg_min_size=0) == imagehandler("rgb8")
    clone = pickle.loads(pickle.dumps(h))
    assert clone == h
    assert clone(".jpg", JPEGS["256x256-q90-420"]).shape == (64, 64, 3)
    decoder = make_decoder(h)
    out = decoder({"__key__": "k", "jpg": JPEGS["256x256-q90-420"], "cls": b"3"})
    assert out["jpg"].shape == (64, 64, 3) and out["cls"] == 3


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, ValueError),
        ((8, -8), ValueError),
        ("64", TypeError),
        (8.0, TypeError),
        ((1, 2, 3), TypeError),
    ],
)
def test_jpeg_min_size_rejects_bad_values(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="jpeg_min_size"):
        imagehandler("rgb8", jpeg_min_size=value)  # type: ignore[arg-type]
    png = io.BytesIO()
    PIL.Image.fromarray(_pixels(4, 4, seed=0)).save(png, format="PNG")
    for data in (JPEGS["8x8-q90-420"], png.getvalue()):  # checked whatever the format
        with pytest.raises(error, match="jpeg_min_size"):
            decode_image(data, "rgb8", jpeg_min_size=value)  # type: ignore[arg-type]


# ---------------------------------------------------------------- without simplejpeg

_CHILD = """
import json, pathlib, sys
sys.modules["simplejpeg"] = None  # import simplejpeg now raises ImportError
import numpy as np, torch
from cloudwds.codecs.images import decode_image, fast_jpeg_available
folder = pathlib.Path(sys.argv[1])
specs = json.loads(sys.argv[2])
arrays = {}
for path in sorted(folder.glob("*.jpg")):
    for s in specs:
        v = decode_image(path.read_bytes(), s)
        arrays[path.stem + "|" + s] = v.numpy() if isinstance(v, torch.Tensor) else v
    small = decode_image(path.read_bytes(), "rgb8", jpeg_min_size=1)  # no scaling without it
    arrays[path.stem + "|min"] = small
np.savez(folder / "decoded.npz", **arrays)
print(json.dumps({"fast": fast_jpeg_available(), "imported": sys.modules["simplejpeg"] is not None}))
"""


def test_without_simplejpeg_values_are_identical(tmp_path: pathlib.Path) -> None:
    names = ["1x1-q90-422", "17x33-q25-420", "61x47-q90-gray", "256x256-q90-444", "8x8-440"]
    for n in names:
        (tmp_path / f"{n}.jpg").write_bytes(JPEGS[n])
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path), json.dumps(ARRAY_SPECS)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"fast": False, "imported": False}
    child = np.load(tmp_path / "decoded.npz")
    assert len(child.files) == len(names) * (len(ARRAY_SPECS) + 1)
    for n in names:
        assert np.array_equal(child[n + "|min"], decode_image(JPEGS[n], "rgb8"))
        for s in ARRAY_SPECS:
            here = as_numpy(decode_image(JPEGS[n], s))
            there = child[n + "|" + s]
            assert here.dtype == there.dtype and np.array_equal(here, there), (n, s)
