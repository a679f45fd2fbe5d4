"""cloudwds.tenbin: the .ten format, checked byte for byte against webdataset's implementation."""

from __future__ import annotations

import io

import numpy as np
import pytest

from cloudwds import tenbin

ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array([-1, 2, 3], dtype=np.int64),
    np.zeros((2, 0, 5), dtype=np.uint8),
    np.array(7, dtype=np.uint32),  # 0-d, and a dtype webdataset's table misspells
    np.ones((2, 2), dtype=np.float16),
]


def test_round_trip_with_infos():
    buf = tenbin.encode_buffer(ARRAYS, infos=["a", "b", "c", "d", "e"])
    assert len(buf) % 16 == 0  # 16-byte chunk headers, payloads padded to 64 bytes
    arrays, infos = tenbin.decode_buffer(buf, infos=True)
    assert infos == ["a", "b", "c", "d", "e"]
    for got, want in zip(arrays, ARRAYS, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


def test_same_bytes_as_webdataset():
    reference = pytest.importorskip("webdataset.tenbin")
    supported = [a for a in ARRAYS if a.dtype != np.uint32]
    assert tenbin.encode_buffer(supported) == bytes(reference.encode_buffer(supported))
    decoded = reference.decode_buffer(tenbin.encode_buffer(supported))
    assert all(np.array_equal(x, y) for x, y in zip(decoded, supported, strict=True))


def test_streams_and_files(tmp_path):
    stream = io.BytesIO()
    tenbin.write(stream, ARRAYS[:2])
    stream.seek(0)
    assert [a.tolist() for a in tenbin.read(stream)] == [a.tolist() for a in ARRAYS[:2]]
    path = str(tmp_path / "x.ten")
    tenbin.save(path, *ARRAYS[:2])
    assert [a.tolist() for a in tenbin.load(path)] == [a.tolist() for a in ARRAYS[:2]]
    with pytest.raises(ValueError, match=r"\.ten"):
        tenbin.save(str(tmp_path / "x.bin"), ARRAYS[0])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="magic"):
        tenbin.decode_buffer(b"x" * 64)
    with pytest.raises(ValueError, match="dtype"):
        tenbin.encode_buffer([np.array(["s"])])
    buf = tenbin.encode_buffer([ARRAYS[0]])
    with pytest.raises(ValueError, match="length"):
        tenbin.decode_buffer(buf[:100])
    with pytest.raises(ValueError, match="list"):
        tenbin.encode_buffer(ARRAYS[0])  # type: ignore[arg-type]


def test_mutated_ten_members_decode_or_fail_typed_naming_url_and_member():
    """Hostile .ten members (seeded byte flips, huge/negative shape and length fields, cuts):
    each one decodes to arrays that fit in its own bytes, or raises a DecodingError naming the
    shard and the member; nothing allocates beyond the member or hangs."""
    import random

    import cloudwds as wds
    from cloudwds.errors import DecodingError

    good = tenbin.encode_buffer(ARRAYS)
    rng = random.Random(1234)
    mutants: list[bytes] = []
    for _ in range(150):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        mutants.append(bytes(b))
    for _ in range(50):
        b = bytearray(good)
        pos = rng.randrange(0, len(b) - 8)
        b[pos : pos + 8] = rng.choice([2**62, -1, -(2**40), 2**31]).to_bytes(
            8, "little", signed=True
        )
        mutants.append(bytes(b))
    mutants += [good[: rng.randrange(len(good))] for _ in range(50)]
    decoder = wds.Decoder([])
    failed = 0
    for data in mutants:
        sample = {"__key__": "k", "__url__": "http://h/s.tar", "ten": data}
        try:
            out = decoder(sample)["ten"]
        except DecodingError as exn:
            failed += 1
            assert exn.url == "http://h/s.tar" and exn.member is not None
            continue
        assert sum(a.nbytes for a in out) <= len(data)
    assert failed > 100  # most mutants are refused, each with a typed error
