"""cloudwds.filters: webdataset's curried and uncurried stage functions over cloudwds stages."""

from __future__ import annotations

import pickle
import random

import pytest

import cloudwds as wds
from cloudwds import filters as f

SAMPLES = [{"__key__": f"k{i}", "txt": f"t{i}".encode(), "cls": str(i).encode()} for i in range(6)]


def test_uncurried_forms_apply_at_once():
    assert [s["__key__"] for s in f._select(iter(SAMPLES), lambda s: s["cls"] > b"3")] == [
        "k4",
        "k5",
    ]
    assert list(f._to_tuple(iter(SAMPLES[:2]), "txt", "cls")) == [(b"t0", b"0"), (b"t1", b"1")]
    assert list(f._map_tuple(iter([(1, 2)]), str, None)) == [("1", 2)]
    renamed = next(f._rename(iter(SAMPLES), text="txt", keep=False))
    assert renamed == {"text": b"t0"}
    decoded = next(f._decode(iter(SAMPLES)))
    assert decoded["txt"] == "t0" and decoded["cls"] == 0
    assert list(f._batched(iter(range(5)), 2, collation_fn=None)) == [[0, 1], [2, 3], [4]]
    assert list(f._unbatched(iter([([1, 2], ["a", "b"])]))) == [(1, "a"), (2, "b")]
    assert list(f._slice(iter(range(10)), 2, 6, 2)) == [2, 4]
    assert list(f._map(iter([1, 2]), lambda x: x * 3)) == [3, 6]
    assert list(f._map_dict(iter(SAMPLES[:1]), cls=int))[0]["cls"] == 0
    assert len(list(f._rsample(iter(range(1000)), 0.5))) in range(400, 600)


def test_missing_fields_are_value_errors():
    with pytest.raises(ValueError):
        list(f._to_tuple(iter(SAMPLES), "foo"))
    with pytest.raises(ValueError):
        list(f._rename(iter(SAMPLES), x="foo"))
    assert list(f._to_tuple(iter(SAMPLES[:1]), "foo", missing_is_error=False)) == [(None,)]


def test_curried_stages_pickle_and_run_in_a_pipeline():
    stage = f.extract_keys("*.txt")
    clone = pickle.loads(pickle.dumps(stage))
    assert list(wds.DataPipeline(lambda: iter(SAMPLES[:2]), clone)) == [(b"t0",), (b"t1",)]
    assert f.pipeline(iter([1, 2]), lambda s: (x + 1 for x in s)) is not None
    assert list(f.compose(lambda s: (x + 1 for x in s), lambda s: (x * 2 for x in s))([1])) == [4]


def test_shuffle_with_seed_is_repeatable_and_complete():
    one = list(f._shuffle(iter(range(100)), 20, 5, seed=3))
    assert sorted(one) == list(range(100)) and one != list(range(100))
    assert one == list(f._shuffle(iter(range(100)), 20, 5, seed=3))
    theirs_style = list(f._shuffle(iter(range(100)), 20, 5, random.Random(3)))
    assert sorted(theirs_style) == list(range(100))


def test_log_keys_and_unlisted(tmp_path):
    log = tmp_path / "keys.log"
    assert len(list(f._log_keys(iter(SAMPLES[:2]), str(log)))) == 2
    assert [line.split("\t")[3] for line in log.read_text().splitlines()] == ["k0", "k1"]
    assert list(f.unlisted()([[1, 2], [3]])) == [1, 2, 3]
