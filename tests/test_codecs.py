"""Tests for cloudwds.codecs: real images made with Pillow, values checked against webdataset."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import sys

import numpy as np
import PIL.Image
import pytest
import torch
import webdataset.autodecode as wds_autodecode
import webdataset.writer as wds_writer

from cloudwds.codecs import (
    IMAGE_SPECS,
    Decoder,
    EncodingError,
    MissingDependencyError,
    basichandlers,
    decode_image,
    decoders,
    encoders,
    handle_extension,
    imagehandler,
    make_decoder,
    make_encoder,
    register_decoder,
    register_encoder,
    torch_audio,
    torch_video,
)
from cloudwds.codecs import basic as basic_module
from cloudwds.codecs import encoding as encoding_module
from cloudwds.errors import DecodingError, UnsafeInputError

RNG = np.random.default_rng(1234)


def encode_pil(img: PIL.Image.Image, fmt: str, **opts: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **opts)
    return out.getvalue()


def random_image(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint8)


# Real encoded images of every mode the decoders must convert from: name -> bytes.
IMAGES: dict[str, bytes] = {
    "rgb.png": encode_pil(PIL.Image.fromarray(random_image((13, 7, 3))), "PNG"),
    "l.png": encode_pil(PIL.Image.fromarray(random_image((13, 7))), "PNG"),
    "rgba.png": encode_pil(PIL.Image.fromarray(random_image((13, 7, 4))), "PNG"),
    "rgb.jpg": encode_pil(PIL.Image.fromarray(random_image((16, 24, 3))), "JPEG", quality=90),
    "l.jpg": encode_pil(PIL.Image.fromarray(random_image((16, 8))), "JPEG"),
    "p.gif": encode_pil(PIL.Image.fromarray(random_image((9, 9, 3))).convert("P"), "GIF"),
    "rgb.bmp": encode_pil(PIL.Image.fromarray(random_image((5, 6, 3))), "BMP"),
    "rgb.tiff": encode_pil(PIL.Image.fromarray(random_image((5, 6, 3))), "TIFF"),
    "rgba.webp": encode_pil(PIL.Image.fromarray(random_image((8, 6, 4))), "WEBP", lossless=True),
    "l.pgm": encode_pil(PIL.Image.fromarray(random_image((4, 3))), "PPM"),
    "bits.pbm": encode_pil(PIL.Image.fromarray(random_image((4, 9))).convert("1"), "PPM"),
}

EXPECTED_LAYOUT = {  # spec -> (container, dtype, channels or None for 2-D, channel axis first?)
    "l8": (np.ndarray, np.uint8, None),
    "rgb8": (np.ndarray, np.uint8, 3),
    "rgba8": (np.ndarray, np.uint8, 4),
    "l": (np.ndarray, np.float32, None),
    "rgb": (np.ndarray, np.float32, 3),
    "rgba": (np.ndarray, np.float32, 4),
    "torchl8": (torch.Tensor, torch.uint8, None),
    "torchrgb8": (torch.Tensor, torch.uint8, 3),
    "torchrgba8": (torch.Tensor, torch.uint8, 4),
    "torchl": (torch.Tensor, torch.float32, None),
    "torchrgb": (torch.Tensor, torch.float32, 3),
    "torch": (torch.Tensor, torch.float32, 3),
    "torchrgba": (torch.Tensor, torch.float32, 4),
}
PIL_MODES = {"pil": "RGB", "pill": "L", "pilrgb": "RGB", "pilrgba": "RGBA"}


def test_spec_table_covers_webdataset_specs() -> None:
    assert set(IMAGE_SPECS) == set(wds_autodecode.imagespecs)
    assert set(IMAGE_SPECS) == set(EXPECTED_LAYOUT) | set(PIL_MODES)


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("name", sorted(IMAGES))
@pytest.mark.parametrize("spec", sorted(IMAGE_SPECS))
def test_image_spec_equals_webdataset(name: str, spec: str) -> None:
    data = IMAGES[name]
    ours = decode_image(data, spec)
    theirs = wds_autodecode.ImageHandler(spec)("." + name, data)
    if spec in PIL_MODES:
        assert isinstance(ours, PIL.Image.Image)
        assert ours.mode == theirs.mode == PIL_MODES[spec]
        assert ours.size == theirs.size
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))
        return
    kind, dtype, channels = EXPECTED_LAYOUT[spec]
    assert isinstance(ours, kind)
    assert ours.dtype == theirs.dtype == dtype
    assert tuple(ours.shape) == tuple(theirs.shape)
    if kind is np.ndarray:
        assert np.array_equal(ours, theirs)
        assert ours.flags.writeable
    else:
        assert torch.equal(ours, theirs)
        assert ours.is_contiguous()
    # Independent check of the layout and values against Pillow itself.
    mode = {None: "L", 3: "RGB", 4: "RGBA"}[channels]
    with PIL.Image.open(io.BytesIO(data)) as img:
        ref = np.asarray(img.convert(mode))
    h, w = ref.shape[:2]
    arr = ours if kind is np.ndarray else ours.numpy()
    if channels is None:
        assert arr.shape == (h, w)
    elif kind is np.ndarray:
        assert arr.shape == (h, w, channels)
    else:
        arr = arr.transpose(1, 2, 0)  # C H W -> H W C
        assert arr.shape == (channels, h, w)[1:] + (channels,)
    if np.dtype(arr.dtype) == np.float32:
        assert float(arr.min()) >= 0.0 and float(arr.max()) <= 1.0
        assert np.array_equal(arr, ref.astype(np.float32) / np.float32(255.0))
    else:
        assert np.array_equal(arr, ref)


def test_rgb8_exact_pixels_from_png() -> None:
    pixels = random_image((6, 4, 3))
    data = encode_pil(PIL.Image.fromarray(pixels), "PNG")
    assert np.array_equal(decode_image(data, "rgb8"), pixels)
    assert np.array_equal(decode_image(data, "torchrgb8").numpy(), pixels.transpose(2, 0, 1))
    rgba = decode_image(data, "rgba8")
    assert np.array_equal(rgba[:, :, :3], pixels) and (rgba[:, :, 3] == 255).all()


def test_imagehandler_dispatches_on_last_extension_only() -> None:
    h = imagehandler("rgb8")
    png = IMAGES["rgb.png"]
    assert h(".seg.PNG", png).shape == (13, 7, 3)
    assert h(".txt", png) is None
    assert h(".png.txt", b"hello") is None
    only_png = imagehandler("l8", "png")
    assert only_png(".jpg", IMAGES["rgb.jpg"]) is None
    assert only_png(".png", png).shape == (13, 7)
    assert "rgb8" in repr(h)


def test_unknown_spec_lists_valid_specs() -> None:
    with pytest.raises(ValueError, match="rgb9.*valid specs.*torchrgb"):
        make_decoder("rgb9")
    with pytest.raises(ValueError, match="valid specs"):
        imagehandler("nope")


def test_corrupt_image_names_url_and_member() -> None:
    good = IMAGES["rgb.jpg"]
    sample = {"__key__": "dir/a", "__url__": "s3://b/shard-0003.tar", "jpg": good[: len(good) // 3]}
    corrupt = dict(sample, jpg=b"\xff\xd8 not really a jpeg")
    for bad in (sample, corrupt):
        with pytest.raises(DecodingError) as info:
            make_decoder("rgb")(bad)
        text = str(info.value)
        assert "s3://b/shard-0003.tar" in text and "dir/a.jpg" in text
        assert info.value.url == "s3://b/shard-0003.tar"
        assert info.value.member == "dir/a.jpg"
        assert info.value.__cause__ is not None


# ---------------------------------------------------------------- basic decoders and round trips

ROUND_TRIPS = [
    ("txt", "héllo wörld"),
    ("text", "plain"),
    ("transcript", "a b c"),
    ("cls", 7),
    ("cls2", 0),
    ("index", 123456),
    ("inx", -3),
    ("id", 42),
    ("json", {"a": [1, 2.5, None], "b": "ü"}),
    ("jsn", [1, "two"]),
    ("pyd", {"tuple": (1, 2), "set": {3}}),
    ("pickle", [b"raw", 1.5]),
    ("pkl", ("x", None)),
    ("mp", {"k": [1, 2, 3], "s": "str", "b": b"bin"}),
    ("msg", [1, {"x": 2}]),
    ("msgpack", {"z": True}),
    ("cbor", {"k": [1, 2.5, "s", b"bytes"]}),
]


@pytest.mark.parametrize(("ext", "value"), ROUND_TRIPS, ids=[e for e, _ in ROUND_TRIPS])
def test_roundtrip_basic_extensions(ext: str, value: object) -> None:
    encoded = make_encoder(True)({"__key__": "k", ext: value})
    assert isinstance(encoded[ext], bytes)
    decoded = Decoder([])({"__key__": "k", ext: encoded[ext]})
    assert decoded[ext] == value
    # Also under a dotted suffix and gzipped.
    key = f"input.{ext}.gz"
    encoded = make_encoder(True)({key: value})
    assert encoded[key][:2] == b"\x1f\x8b"
    assert Decoder()({key: encoded[key]})[key] == value


# webdataset 1.0.2 has no .pkl encoder, and its .cbor one needs the unmaintained `cbor` module.
WDS_WRITABLE = [(e, v) for e, v in ROUND_TRIPS if e in wds_writer.default_handlers and e != "cbor"]


@pytest.mark.parametrize(("ext", "value"), WDS_WRITABLE, ids=[e for e, _ in WDS_WRITABLE])
def test_reads_what_webdataset_writes(ext: str, value: object) -> None:
    data = wds_writer.default_handlers[ext](value)
    assert Decoder()({"__key__": "k", ext: data})[ext] == value


def test_roundtrip_arrays_and_torch() -> None:
    arr = RNG.standard_normal((3, 4)).astype(np.float32)
    arrays = {"a": np.arange(5, dtype=np.int64), "b": arr}
    tensor = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    enc = make_encoder(True)({"npy": arr, "npz": arrays, "pth": {"t": tensor}, "x.npy.gz": arr})
    out = Decoder()(enc)
    assert out["npy"].dtype == np.float32 and np.array_equal(out["npy"], arr)
    assert isinstance(out["npz"], dict) and set(out["npz"]) == {"a", "b"}
    assert all(np.array_equal(out["npz"][k], v) for k, v in arrays.items())
    assert torch.equal(out["pth"]["t"], tensor)
    assert np.array_equal(out["x.npy.gz"], arr)


def test_json_null_decodes_to_none_not_bytes() -> None:
    assert Decoder()({"json": b"null"})["json"] is None


def test_unhandled_fields_stay_bytes_and_metadata_becomes_str() -> None:
    out = Decoder()({"__key__": b"a/b", "__url__": "u", "bin": b"\x00\x01", "jpg": b"\xff"})
    assert out == {"__key__": "a/b", "__url__": "u", "bin": b"\x00\x01", "jpg": b"\xff"}


def test_bytes_like_values_are_accepted() -> None:
    out = Decoder()({"cls": memoryview(b"5"), "txt": bytearray(b"hi"), "bin": memoryview(b"x")})
    assert out == {"cls": 5, "txt": "hi", "bin": b"x"}
    assert type(out["bin"]) is bytes


def test_partial_controls_non_bytes_fields() -> None:
    sample = {"__key__": "k", "__url__": "shard.tar", "cls": 3, "txt": b"t"}
    with pytest.raises(DecodingError, match="partial=True") as info:
        Decoder()(sample)
    assert info.value.member == "k.cls"
    assert Decoder(partial=True)(sample) == {
        "__key__": "k",
        "__url__": "shard.tar",
        "cls": 3,
        "txt": "t",
    }


def test_default_post_handlers_run_after_image_handler() -> None:
    sample = {"__key__": "k", "png": IMAGES["rgb.png"], "cls": b"3", "b.json": b'{"x": 1}'}
    out = Decoder([imagehandler("rgb")])(sample)
    assert out["png"].dtype == np.float32 and out["cls"] == 3 and out["b.json"] == {"x": 1}
    bare = Decoder([imagehandler("rgb")], post=[])(sample)
    assert bare["cls"] == b"3"


def test_make_decoder_without_args_keeps_images_as_bytes() -> None:
    sample = {"__key__": "k", "jpg": IMAGES["rgb.jpg"], "cls": b"9"}
    out = make_decoder()(sample)
    assert out["jpg"] == IMAGES["rgb.jpg"] and out["cls"] == 9
    out = make_decoder("torchrgb8", handler=lambda exn: True)(sample)
    assert out["jpg"].shape == (3, 16, 24) and out["cls"] == 9


def test_gz_member_is_gunzipped_then_decoded_by_inner_extension() -> None:
    sample = {
        "__key__": "k",
        "json.gz": gzip.compress(b'{"a": 1}'),
        "seg.png.gz": gzip.compress(IMAGES["l.png"]),
        "blob.gz": gzip.compress(b"\x00raw"),
    }
    out = make_decoder("l8")(sample)
    assert out["json.gz"] == {"a": 1}
    assert out["seg.png.gz"].shape == (13, 7)
    assert out["blob.gz"] == b"\x00raw"
    with pytest.raises(DecodingError, match="k.json.gz"):
        Decoder()({"__key__": "k", "json.gz": b"not gzip"})


def test_only_restricts_decoding() -> None:
    sample = {
        "__key__": "k",
        "jpg": IMAGES["rgb.jpg"],
        "cls": b"3",
        "seg.png": IMAGES["l.png"],
        "json.gz": gzip.compress(b"[1]"),
    }
    out = make_decoder("rgb8", only=["jpg"])(sample)
    assert out["jpg"].shape == (16, 24, 3)
    assert out["cls"] == b"3" and out["seg.png"] == IMAGES["l.png"]
    out = make_decoder("rgb8", only="cls seg.png json")(sample)
    assert out["jpg"] == IMAGES["rgb.jpg"]
    assert out["cls"] == 3 and out["seg.png"].shape == (13, 7, 3) and out["json.gz"] == [1]
    out = Decoder(imagehandler("l8"), only=".png")(sample)  # by extension, leading dot ok
    assert out["seg.png"].shape == (13, 7) and out["cls"] == b"3"


# ---------------------------------------------------------------- handlers


def decode_upper(data: bytes) -> str:
    return data.decode().upper()


def my_png_decoder(key: str, value: bytes) -> object:
    """README-style handler: sees keys with a leading dot."""
    if not key.endswith(".png"):
        return None
    assert isinstance(value, bytes)
    return ("png", len(value))


def test_handle_extension_matching() -> None:
    h = handle_extension("jpg jpeg", decode_upper)
    assert h(".jpg", b"a") == "A" and h(".JPEG", b"b") == "B" and h("x.jpg", b"c") == "C"
    assert h(".png", b"a") is None and h(".jpg.txt", b"a") is None
    dotted = handle_extension("seg.png", decode_upper)
    assert dotted(".seg.png", b"s") == "S" and dotted(".a.seg.png", b"s") == "S"
    assert dotted(".png", b"s") is None and dotted(".xseg.png", b"s") is None
    dot = handle_extension(".png", decode_upper)
    assert dot(".png", b"p") == "P" and dot(".seg.png", b"p") == "P"
    assert repr(h) == "handle_extension('jpg jpeg', decode_upper)"
    with pytest.raises(ValueError):
        handle_extension("  ", decode_upper)


def test_handle_extension_in_decoder_beats_defaults() -> None:
    d = Decoder(handle_extension("txt", decode_upper))
    assert d({"a.txt": b"hi", "txt": b"yo", "cls": b"1"}) == {"a.txt": "HI", "txt": "YO", "cls": 1}


def test_positional_and_list_forms_are_equivalent() -> None:
    sample = {"__key__": "k", "png": IMAGES["rgb.png"], "mp4": b"\x00", "cls": b"1"}
    positional = Decoder(my_png_decoder, torch_video, torch_audio)
    listed = Decoder([my_png_decoder, torch_video, torch_audio])
    assert positional.handlers == listed.handlers
    sample.pop("mp4")
    expected = {"__key__": "k", "png": ("png", len(IMAGES["rgb.png"])), "cls": 1}
    assert positional(sample) == listed(sample) == expected
    with pytest.raises(TypeError):
        Decoder("rgb8")  # specs go through make_decoder, not Decoder


def test_handler_exception_is_wrapped_with_cause() -> None:
    def boom(key: str, data: bytes) -> object:
        raise KeyError("inner")

    with pytest.raises(DecodingError, match="KeyError") as info:
        Decoder(boom)({"__key__": "x/y", "__url__": "a.tar", "bin": b"1"})
    assert isinstance(info.value.__cause__, KeyError)
    assert "a.tar" in str(info.value) and "x/y.bin" in str(info.value)


def test_pickled_decoder_and_handlers_still_work() -> None:
    d = make_decoder(
        my_png_decoder,
        "torchrgb8",
        handle_extension("seg.txt", decode_upper),
        only="jpg seg.txt png",
    )
    d2 = pickle.loads(pickle.dumps(d))
    sample = {"__key__": "k", "jpg": IMAGES["rgb.jpg"], "seg.txt": b"ab", "png": IMAGES["l.png"]}
    a, b = d(sample), d2(sample)
    assert torch.equal(a["jpg"], b["jpg"]) and b["seg.txt"] == "AB" and b["png"] == a["png"]
    for obj in (imagehandler("rgb"), handle_extension("a b", decode_upper), make_encoder(True)):
        assert pickle.loads(pickle.dumps(obj)) is not None
    assert pickle.loads(pickle.dumps(imagehandler("rgb"))) == imagehandler("rgb")
    enc = pickle.loads(pickle.dumps(make_encoder({"foo": encode_foo})))
    assert enc({"x.foo": 5}) == {"x.foo": b"foo5"}


# ---------------------------------------------------------------- video / audio


def test_torch_video_and_audio_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails even if installed
    monkeypatch.setitem(sys.modules, "torchvision.io", None)
    monkeypatch.setitem(sys.modules, "torchaudio", None)
    assert torch_video(".png", b"x") is None and torch_audio(".mp4", b"x") is None
    with pytest.raises(MissingDependencyError, match="pip install torchvision"):
        torch_video(".mp4", b"\x00")
    d = Decoder(torch_video, torch_audio)
    with pytest.raises(ImportError, match="torchaudio") as info:
        d({"__key__": "clip7", "__url__": "av.tar", "flac": b"\x00"})
    assert isinstance(info.value, DecodingError)
    assert info.value.member == "clip7.flac" and info.value.url == "av.tar"
    assert "clip7.flac" in str(info.value)


# ---------------------------------------------------------------- registries


def test_registries_are_read_only_and_refuse_clobbering() -> None:
    with pytest.raises(TypeError):
        decoders["foo"] = decode_upper  # type: ignore[index]
    with pytest.raises(TypeError):
        encoders["foo"] = encode_foo  # type: ignore[index]
    with pytest.raises(ValueError, match="clobber"):
        register_decoder("json", decode_upper)
    with pytest.raises(ValueError, match="clobber"):
        register_encoder("json", encode_foo)
    try:
        register_decoder(".UPX", decode_upper)
        register_encoder("upx", str.encode)
        assert decoders["upx"] is decode_upper
        assert basichandlers(".a.upx", b"q") == "Q"
        enc = make_encoder(True)({"upx": "already str", "b.upx": b"raw"})
        assert Decoder()(enc) == {"upx": "ALREADY STR", "b.upx": "RAW"}
        register_decoder("upx", decode_text_twice, clobber=True)
        assert Decoder()({"upx": b"a"}) == {"upx": "aa"}
    finally:
        basic_module._DECODERS.pop("upx", None)
        encoding_module._ENCODERS.pop("upx", None)


def decode_text_twice(data: bytes) -> str:
    return data.decode() * 2


def encode_foo(x: object) -> bytes:
    return f"foo{x}".encode()


# ---------------------------------------------------------------- encoders


def test_encoder_keeps_key_drops_other_metadata_and_passes_bytes() -> None:
    enc = make_encoder(True)
    out = enc({"__key__": "a/b", "__url__": "x.tar", "jpg": b"\xff\xd8raw", "txt": "é", "cls": 3})
    assert out == {"__key__": "a/b", "jpg": b"\xff\xd8raw", "txt": "é".encode(), "cls": b"3"}
    assert enc({"cls": np.int64(4)}) == {"cls": b"4"}
    with pytest.raises(EncodingError, match="'cls'"):
        enc({"cls": 1.5})


def test_encoder_false_requires_bytes_or_str() -> None:
    enc = make_encoder(False)
    out = enc({"__key__": "k", "a": b"1", "b": "é", "c": bytearray(b"2"), "d": memoryview(b"3")})
    assert out == {"__key__": "k", "a": b"1", "b": "é".encode(), "c": b"2", "d": b"3"}
    with pytest.raises(TypeError, match="'cls'.*int"):
        enc({"__key__": "k", "cls": 3})


def test_callable_and_dict_encoders() -> None:
    def to_bytes(sample: dict) -> dict:
        return {k: (v if k.startswith("__") else str(v)) for k, v in sample.items()}

    assert make_encoder(to_bytes)({"__key__": "k", "n": 5}) == {"__key__": "k", "n": b"5"}
    with pytest.raises(TypeError, match="'n'"):
        make_encoder(lambda s: s)({"n": 5})
    enc = make_encoder({".foo": encode_foo, "cls": encode_foo})
    assert enc({"a.foo": 1, "cls": 2, "json": [3]}) == {
        "a.foo": b"foo1",
        "cls": b"foo2",
        "json": b"[3]",
    }
    with pytest.raises(ValueError):
        make_encoder("png")  # type: ignore[arg-type]


def test_unknown_extension_with_value_names_the_key() -> None:
    with pytest.raises(EncodingError, match="'thing.xyz'.*'xyz'"):
        make_encoder(True)({"__key__": "k", "thing.xyz": [1, 2]})
    assert make_encoder(True)({"thing.xyz": b"ok"}) == {"thing.xyz": b"ok"}


def test_json_encoder_hint_for_numpy() -> None:
    with pytest.raises(EncodingError, match="tolist"):
        make_encoder(True)({"json": np.zeros(2)})


def test_gzip_encoding_is_deterministic_and_keeps_compressed_bytes() -> None:
    enc = make_encoder(True)
    a = enc({"json.gz": {"x": 1}})["json.gz"]
    assert a == enc({"json.gz": {"x": 1}})["json.gz"]
    assert gzip.decompress(a) == b'{"x": 1}'
    assert enc({"bin.gz": a})["bin.gz"] == a  # already gzipped: kept
    assert gzip.decompress(enc({"bin.gz": b"plain"})["bin.gz"]) == b"plain"


@pytest.mark.parametrize("ext", ["png", "bmp", "tiff", "tif", "ppm", "pnm", "webp"])
def test_image_roundtrip_lossless_formats(ext: str) -> None:
    pixels = random_image((10, 12, 3))
    if ext == "webp":
        data = make_encoder(
            {"webp": lambda img: encode_pil(PIL.Image.fromarray(img), "WEBP", lossless=True)}
        )({"webp": pixels})["webp"]
    else:
        data = make_encoder(True)({ext: pixels})[ext]
    assert np.array_equal(make_decoder("rgb8")({ext: data})[ext], pixels)


def test_image_encoding_inputs() -> None:
    enc, dec = make_encoder(True), make_decoder("rgba8")
    pixels = random_image((5, 7, 4))
    # uint8 RGBA, float 0..1, torch C H W, PIL, and gray H W / H W 1 all round-trip through png.
    assert np.array_equal(dec(enc({"png": pixels}))["png"], pixels)
    floats = pixels.astype(np.float32) / 255.0
    assert np.array_equal(dec(enc({"png": floats}))["png"], pixels)
    as_torch = torch.from_numpy(pixels.transpose(2, 0, 1).copy())
    assert np.array_equal(dec(enc({"png": as_torch}))["png"], pixels)
    assert np.array_equal(dec(enc({"png": PIL.Image.fromarray(pixels)}))["png"], pixels)
    gray = random_image((6, 3))
    l8 = make_decoder("l8")
    assert np.array_equal(l8(enc({"png": gray}))["png"], gray)
    assert np.array_equal(l8(enc({"png": gray[:, :, None]}))["png"], gray)
    assert np.array_equal(l8(enc({"pgm": random_image((6, 3, 3))}))["pgm"].shape, (6, 3))
    decoded_rgb = make_decoder("rgb")({"png": IMAGES["rgb.png"]})["png"]  # float decode → encode
    assert (
        enc({"png": decoded_rgb})["png"]
        == enc({"png": decode_image(IMAGES["rgb.png"], "rgb8")})["png"]
    )
    with PIL.Image.open(io.BytesIO(enc({"pbm": gray})["pbm"])) as img:
        assert img.mode == "1"


def test_jpeg_encoding_quality_and_errors() -> None:
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (24, 1, 3))
    data = make_encoder(True)({"jpg": smooth})["jpg"]
    assert data[:2] == b"\xff\xd8"
    back = make_decoder("rgb8")({"jpg": data})["jpg"].astype(int)
    assert np.abs(back - smooth).mean() < 2.0  # quality 95
    with pytest.raises(EncodingError, match="0..1"):
        make_encoder(True)({"png": np.full((2, 2), 255.0)})
    with pytest.raises(EncodingError, match="shape"):
        make_encoder(True)({"png": np.zeros((2, 2, 2), np.uint8)})
    with pytest.raises(EncodingError, match="dtype"):
        make_encoder(True)({"png": np.zeros((2, 2), np.int32)})


def test_webdataset_reads_what_we_write() -> None:
    sample = {
        "__key__": "k",
        "cls": 3,
        "json": {"a": 1},
        "npy": np.arange(3),
        "png": random_image((4, 4, 3)),
    }
    encoded = make_encoder(True)(sample)
    decoded = wds_autodecode.Decoder([wds_autodecode.imagehandler("rgb8")])(encoded)
    assert decoded["cls"] == 3 and decoded["json"] == {"a": 1}
    assert np.array_equal(decoded["npy"], sample["npy"])
    assert np.array_equal(decoded["png"], sample["png"])
    assert json.loads(encoded["json"]) == {"a": 1}


# ---------------------------------------------------------------- trust (cloudwds.security)


class _Custom:
    """A user's own class: pickles of it decode only when the data is trusted."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Custom) and other.v == self.v


class _RunsCode:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_extensions_refuse_custom_classes_unless_trusted(monkeypatch) -> None:
    monkeypatch.delenv("WDS_TRUSTED", raising=False)
    data = pickle.dumps(_Custom(3))
    for ext in ("pyd", "pickle", "pkl", "x.pkl"):
        with pytest.raises(UnsafeInputError) as info:
            Decoder()({"__key__": "k", "__url__": "s3://b/s.tar", ext: data})
        assert (info.value.url, info.value.member) == ("s3://b/s.tar", f"k.{ext}")
        assert not isinstance(info.value, DecodingError)  # the refusal keeps its own type
        assert Decoder(trusted=True)({"__key__": "k", ext: data})[ext] == _Custom(3)
    monkeypatch.setenv("WDS_TRUSTED", "1")
    assert Decoder()({"pyd": data})["pyd"] == _Custom(3)
    assert Decoder(trusted=False)({"pyd": pickle.dumps([1])})["pyd"] == [1]
    with pytest.raises(UnsafeInputError):
        Decoder(trusted=False)({"pyd": data})


def test_gzipped_hostile_pickle_is_refused_naming_the_member(capsys) -> None:
    data = gzip.compress(pickle.dumps(_RunsCode()))
    with pytest.raises(UnsafeInputError, match="builtins.print") as info:
        Decoder()({"__key__": "k", "__url__": "u.tar", "x.pyd.gz": data})
    assert info.value.member == "k.x.pyd.gz"
    assert "pwned" not in capsys.readouterr().out


def test_pth_loads_weights_only_by_default() -> None:
    buf = io.BytesIO()
    torch.save({"c": _Custom(1), "t": torch.ones(1)}, buf)
    with pytest.raises(UnsafeInputError, match="weights_only=True") as info:
        Decoder()({"__key__": "k", "__url__": "u.tar", "pth": buf.getvalue()})
    assert info.value.member == "k.pth"
    assert make_decoder(trusted=True)({"pth": buf.getvalue()})["pth"]["c"] == _Custom(1)


def test_user_decoder_for_pickles_is_called_without_trusted() -> None:
    seen = []

    def mine(data: bytes) -> str:
        seen.append(data)
        return "mine"

    original = basic_module.decoders["pyd"]
    register_decoder("pyd", mine, clobber=True)
    try:
        assert Decoder(trusted=True)({"pyd": b"x"})["pyd"] == "mine"
    finally:
        register_decoder("pyd", original, clobber=True)
    assert seen == [b"x"]
