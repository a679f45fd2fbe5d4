"""cloudwds.stages: every stage driven with plain iterables and a fixed World."""

from __future__ import annotations

import io
import json
import pickle
import random

import numpy as np
import pytest
import torch
from conftest import image_array, jpeg_bytes, png_bytes
from PIL import Image

import cloudwds as wds
from cloudwds import stages as st
from cloudwds.errors import DecodingError, MissingKeyError
from cloudwds.world import World


def run(stage, src, world=None):
    return list(stage.apply(iter(src), world or World()))


class Counting:
    """An iterator that records how many items were pulled from it."""

    def __init__(self, n: int):
        self.n = n
        self.pulled = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.pulled >= self.n:
            raise StopIteration
        self.pulled += 1
        return self.pulled - 1


# -- shuffle ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,bufsize,initial", [(0, 10, 5), (1, 10, 5), (7, 10, 20), (1000, 50, 10)])
def test_shuffle_is_a_permutation(n, bufsize, initial):
    out = run(st.shuffle(bufsize, initial), range(n))
    assert sorted(out) == list(range(n))


def test_shuffle_holds_initial_samples_before_the_first_yield():
    src = Counting(1000)
    it = st.shuffle(500, initial=100).apply(src, World(seed=3))
    next(it)
    assert src.pulled >= 100


def test_shuffle_buffer_grows_to_bufsize():
    src = Counting(5000)
    it = st.shuffle(1000, initial=10).apply(src, World(seed=3))
    for _ in range(1500):
        next(it)
    # the buffer holds pulled - yielded samples: full, not stuck at `initial`
    assert src.pulled - 1500 == 1000
    rest = list(it)
    assert len(rest) == 5000 - 1500


def test_shuffle_mixes_across_the_whole_buffer():
    out = run(st.shuffle(1000, initial=100), range(1000), World(seed=1))
    displacement = np.mean([abs(pos - value) for pos, value in enumerate(out)])
    assert displacement > 200  # a 100-sample window could move items ~50 places on average


def test_shuffle_is_deterministic_per_seed_and_epoch():
    stage = st.shuffle(100, initial=10)
    a = run(stage, range(500), World(seed=5, epoch=0))
    b = run(stage, range(500), World(seed=5, epoch=0))
    c = run(stage, range(500), World(seed=5, epoch=1))
    d = run(stage, range(500), World(seed=6, epoch=0))
    assert a == b
    assert a != c and a != d and c != d
    assert a != list(range(500))
    # an explicit seed on the stage replaces the pipeline's seed
    e = run(st.shuffle(100, initial=10, seed=6), range(500), World(seed=5, epoch=0))
    assert e == d
    # ranks and workers get different orders
    assert run(stage, range(500), World(seed=5, rank=1, world_size=2)) != a
    assert run(stage, range(500), World(seed=5, worker=1, num_workers=2)) != a


def test_shuffle_with_rng_and_noop_buffer():
    a = run(st.shuffle(50, rng=random.Random(4)), range(200))
    b = run(st.shuffle(50, rng=random.Random(4)), range(200))
    assert a == b and sorted(a) == list(range(200))
    assert run(st.shuffle(1), range(20)) == list(range(20))
    assert run(st.shuffle(0), range(20)) == list(range(20))


# -- per-sample stages ---------------------------------------------------------------------------


def test_map_drops_none_and_keeps_key():
    samples = [{"__key__": f"k{i}", "x": i} for i in range(6)]
    out = run(st.map(lambda s: {"y": s["x"] * 10} if s["x"] % 2 else None), samples)
    assert out == [
        {"y": 10, "__key__": "k1"},
        {"y": 30, "__key__": "k3"},
        {"y": 50, "__key__": "k5"},
    ]
    assert run(st.map(lambda x: x + 1), range(3)) == [1, 2, 3]


def test_map_handler():
    def f(x):
        if x == 2:
            raise ValueError("two")
        return x

    with pytest.raises(ValueError, match="two"):
        run(st.map(f), range(5))
    assert run(st.map(f, handler=wds.ignore_and_continue), range(5)) == [0, 1, 3, 4]
    assert run(st.map(f, handler=wds.ignore_and_stop), range(5)) == [0, 1]


def test_select():
    assert run(st.select(lambda x: x % 3 == 0), range(10)) == [0, 3, 6, 9]


def test_decode_images_and_basic_types():
    png_img = image_array(6, 9, seed=1)
    sample = {
        "__key__": "k",
        "__url__": "u.tar",
        "png": png_bytes(png_img),
        "jpg": jpeg_bytes(image_array(16, 16, seed=2), quality=95),
        "json": json.dumps({"a": [1, 2]}).encode(),
        "cls": b"7",
        "txt": b"hello",
        "bin": b"\x00\x01",
    }
    (rgb8,) = run(st.decode("rgb8"), [sample])
    assert np.array_equal(rgb8["png"], png_img)  # PNG is lossless: exact pixels
    assert rgb8["jpg"].shape == (16, 16, 3) and rgb8["jpg"].dtype == np.uint8
    expected_jpg = np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))
    assert np.array_equal(rgb8["jpg"], expected_jpg)
    assert rgb8["json"] == {"a": [1, 2]} and rgb8["cls"] == 7 and rgb8["txt"] == "hello"
    assert rgb8["bin"] == b"\x00\x01" and rgb8["__key__"] == "k"
    (rgb,) = run(st.decode("rgb"), [sample])
    assert rgb["png"].dtype == np.float32
    assert np.allclose(rgb["png"], png_img / 255.0)
    (trgb,) = run(st.decode("torchrgb"), [sample])
    assert isinstance(trgb["png"], torch.Tensor) and trgb["png"].shape == (3, 6, 9)
    (pil,) = run(st.decode("pil"), [sample])
    assert isinstance(pil["png"], Image.Image) and pil["png"].size == (9, 6)
    (raw,) = run(st.decode(), [sample])
    assert raw["png"] == sample["png"] and raw["cls"] == 7  # no spec: images stay bytes


def test_decode_error_names_url_and_member():
    bad = {"__key__": "k9", "__url__": "/d/s.tar", "jpg": b"\xff\xd8not a jpeg"}
    with pytest.raises(DecodingError) as info:
        run(st.decode("rgb"), [bad])
    assert info.value.url == "/d/s.tar" and info.value.member == "k9.jpg"
    assert "/d/s.tar" in str(info.value) and "k9.jpg" in str(info.value)
    good = {"__key__": "k1", "__url__": "/d/s.tar", "jpg": jpeg_bytes(image_array(4, 4))}
    out = run(st.decode("rgb", handler=wds.ignore_and_continue), [good, bad, good])
    assert [s["__key__"] for s in out] == ["k1", "k1"]


def test_decode_pickles_and_keeps_working():
    stage = pickle.loads(pickle.dumps(st.decode("rgb8")))
    (out,) = run(stage, [{"__key__": "k", "png": png_bytes(image_array(3, 3))}])
    assert np.array_equal(out["png"], image_array(3, 3))


SAMPLES = [
    {"__key__": "a", "__url__": "u", "jpg": 1, "cls": 10, "json": {"n": 1}},
    {"__key__": "b", "__url__": "u", "png": 2, "cls": 20, "json": {"n": 2}},
]


def test_to_tuple_alternatives_and_metadata():
    assert run(st.to_tuple("jpg;png", "cls"), SAMPLES) == [(1, 10), (2, 20)]
    assert run(st.to_tuple("__key__", "jpg;png"), SAMPLES) == [("a", 1), ("b", 2)]
    # one string with spaces is a list of fields
    assert run(st.to_tuple("__key__ jpg;png json"), SAMPLES) == [
        ("a", 1, {"n": 1}),
        ("b", 2, {"n": 2}),
    ]
    assert run(st.to_tuple("cls"), SAMPLES) == [(10,), (20,)]


def test_to_tuple_missing_key_names_url_and_key():
    with pytest.raises(MissingKeyError) as info:
        run(st.to_tuple("jpg", "cls"), SAMPLES)
    assert info.value.url == "u" and info.value.member == "b"
    text = str(info.value)
    assert "'jpg'" in text and "url='u'" in text and "member='b'" in text
    assert isinstance(info.value, KeyError)
    assert run(st.to_tuple("jpg", "cls", missing_is_error=False), SAMPLES) == [(1, 10), (None, 20)]
    assert run(st.to_tuple("jpg", "cls", handler=wds.ignore_and_continue), SAMPLES) == [(1, 10)]


def test_map_tuple_none_is_identity():
    data = [(1, "a", 2.0), (2, "b", 3.0)]
    out = run(st.map_tuple(lambda x: x * 10, None, str), data)
    assert out == [(10, "a", "2.0"), (20, "b", "3.0")]
    assert run(st.map_tuple(None, str.upper), data) == [(1, "A", 2.0), (2, "B", 3.0)]


def test_map_dict():
    out = run(st.map_dict(cls=lambda c: c + 1, json=lambda j: j["n"]), SAMPLES)
    assert [(s["cls"], s["json"], s["__key__"]) for s in out] == [(11, 1, "a"), (21, 2, "b")]
    assert SAMPLES[0]["cls"] == 10  # inputs are not modified
    with pytest.raises(MissingKeyError):
        run(st.map_dict(jpg=str), SAMPLES)


def test_rename_keep_true_and_false():
    out = run(st.rename(image="jpg;png", label="cls"), SAMPLES)
    assert out == [
        {"__key__": "a", "__url__": "u", "json": {"n": 1}, "image": 1, "label": 10},
        {"__key__": "b", "__url__": "u", "json": {"n": 2}, "image": 2, "label": 20},
    ]
    # keep=False keeps only the renamed fields, metadata included (as webdataset does)
    out = run(st.rename(image="jpg;png", keep=False), SAMPLES)
    assert out == [{"image": 1}, {"image": 2}]
    out = run(st.rename(image="jpg;png", __key__="__key__", keep=False), SAMPLES)
    assert out == [{"image": 1, "__key__": "a"}, {"image": 2, "__key__": "b"}]
    with pytest.raises(MissingKeyError):
        run(st.rename(image="gif"), SAMPLES)


def test_rename_keys_by_glob():
    samples = [{"__key__": "k", "big.jpg": 1, "seg.png": 2, "cls": 3}]
    out = run(st.rename_keys(("image", "*.jpg"), mask="*.png"), samples)
    assert out == [{"__key__": "k", "image": 1, "mask": 2}]
    out = run(st.rename_keys(image="*.jpg", keep_unselected=True), samples)
    assert out == [{"__key__": "k", "image": 1, "seg.png": 2, "cls": 3}]
    with pytest.raises(MissingKeyError):
        run(st.rename_keys(image="*.gif"), samples)
    with pytest.raises(ValueError, match="two fields"):
        run(st.rename_keys(x="*"), samples)


def test_slice_and_rsample():
    assert run(st.slice(3), range(10)) == [0, 1, 2]
    assert run(st.slice(2, 9, 3), range(10)) == [2, 5, 8]
    kept = run(st.rsample(0.5), range(2000), World(seed=1))
    assert kept == run(st.rsample(0.5), range(2000), World(seed=1))
    assert kept != run(st.rsample(0.5), range(2000), World(seed=1, epoch=1))
    assert 800 < len(kept) < 1200 and kept == sorted(set(kept))
    assert run(st.rsample(1.0), range(50)) == list(range(50))
    assert run(st.rsample(0.0), range(50)) == []


# -- batching -----------------------------------------------------------------------------------


def test_batched_partial_and_sizes():
    data = [(i, float(i)) for i in range(10)]
    batches = run(st.batched(4), data)
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert run(st.batched(4, partial=False), data)[-1][0].tolist() == [4, 5, 6, 7]
    assert len(run(st.batched(4, partial=False), data)) == 2
    assert len(run(st.batched(5, partial=False), data)) == 2
    with pytest.raises(ValueError):
        st.batched(0)


def test_collation_of_numbers_arrays_tensors_and_strings():
    data = [
        (i, float(i) / 2, np.full((2, 3), i, dtype=np.int16), torch.full((4,), i), f"s{i}")
        for i in range(5)
    ]
    (batch,) = run(st.batched(5), data)
    ints, floats, arrays, tensors, strings = batch
    assert isinstance(ints, np.ndarray) and ints.tolist() == [0, 1, 2, 3, 4]
    assert floats.dtype == np.float64 and floats.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert arrays.shape == (5, 2, 3) and arrays.dtype == np.int16 and arrays[3, 1, 2] == 3
    assert isinstance(tensors, torch.Tensor) and tensors.shape == (5, 4)
    assert tensors[4].tolist() == [4, 4, 4, 4]
    assert strings == ["s0", "s1", "s2", "s3", "s4"]


def test_collation_of_dicts_and_bare_samples():
    data = [{"__key__": f"k{i}", "x": i, "img": np.zeros((2, 2)) + i} for i in range(3)]
    (batch,) = run(st.batched(3), data)
    assert batch["__key__"] == ["k0", "k1", "k2"]
    assert batch["x"].tolist() == [0, 1, 2] and batch["img"].shape == (3, 2, 2)
    assert run(st.batched(3), range(5))[0].tolist() == [0, 1, 2]
    (stacked,) = run(st.batched(2), [torch.ones(3), torch.zeros(3)])
    assert stacked.shape == (2, 3)
    with pytest.raises(ValueError, match="different shapes"):
        run(st.batched(2), [(np.zeros(2),), (np.zeros(3),)])


def test_batched_without_collation():
    data = [("a", 1), ("b", 2), ("c", 3)]
    assert run(st.batched(2, collation_fn=None), data) == [[("a", 1), ("b", 2)], [("c", 3)]]
    assert run(st.batched(2, collation_fn=lambda b: len(b)), data) == [2, 1]


def test_unbatched_tuples_lists_dicts_and_arrays():
    data = [(i, np.full(2, i), f"s{i}") for i in range(7)]
    batches = run(st.batched(3), data)
    out = run(st.unbatched(), batches)
    assert len(out) == 7
    assert [(int(a), b.tolist(), c) for a, b, c in out] == [(i, [i, i], f"s{i}") for i in range(7)]
    # lists (what the DataLoader's default_convert makes of tuples) are columns too
    assert run(st.unbatched(), [[[1, 2], ["a", "b"]]]) == [(1, "a"), (2, "b")]
    assert run(st.unbatched(), [{"x": [1, 2], "y": ["a", "b"]}]) == [
        {"x": 1, "y": "a"},
        {"x": 2, "y": "b"},
    ]
    rows = run(st.unbatched(), [np.arange(6).reshape(3, 2)])
    assert [r.tolist() for r in rows] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError):
        run(st.unbatched(), [{"x": [1, 2], "y": [1]}])


def test_stages_pickle_and_print():
    stages = [
        st.shuffle(10, seed=1),
        st.map(abs),
        st.to_tuple("jpg;png", "cls"),
        st.batched(4, partial=False),
        st.rename(a="b"),
        st.slice(3),
        st.unbatched(),
    ]
    for stage in stages:
        copy = pickle.loads(pickle.dumps(stage))
        assert repr(copy) == repr(stage)
    assert repr(st.shuffle(10, seed=1)).startswith("shuffle(bufsize=10, initial=100, seed=1")
    assert repr(st.batched(4, partial=False)).startswith("batched(batchsize=4")


def test_calling_a_stage_directly_and_curried_names():
    out = list(wds.shuffle(5, seed=0)(iter(range(20))))
    assert sorted(out) == list(range(20))
    assert list(wds.map(str)(range(3))) == ["0", "1", "2"]
