"""cloudwds.spec: YAML/JSON dataset specs, validation errors, and the resumable sample mix."""

from __future__ import annotations

import itertools
import json
import os
import pickle
from collections import Counter

import pytest
from conftest import make_shards

import cloudwds as wds
from cloudwds.errors import UnsafeInputError
from cloudwds.index import build_index
from cloudwds.spec import (
    MixedSource,
    SpecError,
    UnsafeSpecError,
    is_spec_url,
    load_spec,
    parse_spec,
)
from cloudwds.storage import StorageConfig
from cloudwds.urls import parse_rewrites
from cloudwds.world import World

# Mixing tolerance: with weights 3:1 the share of the first collection over N draws has a
# standard deviation of sqrt(.75 * .25 / N) = 0.68 percentage points at N = 4000, so +-3 points
# is more than 4 sigma (and the draws are deterministic from the seed anyway).
TOLERANCE = 0.03


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    """Two collections: ``a`` (4 shards x 1000 samples, txt+cls) and ``b`` (same, txt+json)."""
    root = tmp_path_factory.mktemp("spec")
    for name, fields in (("a", ("txt", "cls")), ("b", ("txt", "json"))):
        os.makedirs(root / name)
        make_shards(root / name, 4, 1000, fields=fields, prefix=name)
    return root


def write_spec(directory, text: str, name: str = "train.yaml") -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def mix(source: MixedSource, n: int | None = None, world: World | None = None) -> list[dict]:
    return list(itertools.islice(source.apply((), world or World(seed=1)), n))


def shares(samples: list[dict]) -> dict[str, float]:
    counts = Counter(s["__source__"] for s in samples)
    return {k: v / len(samples) for k, v in counts.items()}


TWO = """
dataset:
  - shards: a/a-{000000..000003}.tar
    weight: 3
  - shards: b/b-{000000..000003}.tar
    weight: 1
"""


def test_weights_set_the_proportions(collections):
    path = write_spec(collections, TWO)
    samples = mix(MixedSource(path), 4000)
    got = shares(samples)
    assert abs(got["a"] - 0.75) <= TOLERANCE, got
    assert abs(got["b"] - 0.25) <= TOLERANCE, got
    # Deterministic from the seed; another seed gives another order.
    assert [s["__key__"] for s in mix(MixedSource(path), 4000)] == [s["__key__"] for s in samples]
    other = mix(MixedSource(path), 4000, World(seed=2))
    assert [s["__source__"] for s in other] != [s["__source__"] for s in samples]
    # Samples of one collection keep their shard order (no shuffling was asked for).
    a_keys = [s["__key__"] for s in samples if s["__source__"] == "a"]
    assert a_keys == [f"s{j // 1000}-{j % 1000:04d}" for j in range(len(a_keys))]


def test_default_weight_is_the_number_of_shards(collections):
    path = write_spec(
        collections,
        """
dataset:
  - shards: a/a-{000000..000002}.tar
  - shards: b/b-000000.tar
""",
    )
    got = shares(mix(MixedSource(path), 2000))
    assert abs(got["a"] - 0.75) <= TOLERANCE, got


def test_an_epoch_reads_every_sample_once(collections):
    path = write_spec(collections, TWO)
    samples = mix(MixedSource(path))
    assert len(samples) == 8000
    assert len({(s["__source__"], s["__key__"]) for s in samples}) == 8000


def test_scaleprob_subsamples_a_collection(collections):
    path = write_spec(
        collections,
        """
dataset:
  - shards: a/a-{000000..000003}.tar
  - shards: b/b-{000000..000003}.tar
    scaleprob: 0.5
""",
    )
    source = MixedSource(path)
    assert source.effective_weights(World()) == {"a": 4.0, "b": 2.0}
    samples = mix(source)
    counts = Counter(s["__source__"] for s in samples)
    assert counts["a"] == 4000  # every sample of a
    assert abs(counts["b"] - 2000) <= 0.03 * 4000, counts  # half of b's
    first = samples[:3000]  # while both run: shares 4 : 2
    assert abs(shares(first)["a"] - 2 / 3) <= TOLERANCE


def test_scale_range_is_drawn_per_epoch_and_equal_on_all_ranks(collections):
    path = write_spec(
        collections,
        """
dataset:
  - shards: a/a-{000000..000003}.tar
    scale: [1.0, 3.0]
  - shards: b/b-{000000..000003}.tar
    scale: 2
""",
    )
    source = MixedSource(path)
    weights = [source.effective_weights(World(seed=7, epoch=e)) for e in range(10)]
    assert all(4.0 <= w["a"] <= 12.0 and w["b"] == 8.0 for w in weights)
    assert len({w["a"] for w in weights}) == 10  # a new draw each epoch
    for rank, worker in ((1, 0), (3, 2)):
        w = World(seed=7, epoch=4, rank=rank, world_size=4, worker=worker, num_workers=3)
        assert source.effective_weights(w) == weights[4]
    expected = weights[4]["a"] / (weights[4]["a"] + weights[4]["b"])
    got = shares(mix(source, 3000, World(seed=7, epoch=4)))
    assert abs(got["a"] - expected) <= TOLERANCE


def test_extensions_select_fields_with_alternatives(collections):
    path = write_spec(
        collections,
        """
dataset:
  - name: first
    shards: a/a-000000.tar
    extensions: txt cls;json
  - name: second
    shards: b/b-000000.tar
    extensions: [json;cls, txt]
  - name: none
    shards: b/b-000001.tar
    extensions: png
""",
    )
    samples = mix(MixedSource(path))
    fields = {s["__source__"]: {k for k in s if not k.startswith("__")} for s in samples}
    assert fields == {"first": {"txt", "cls"}, "second": {"json", "txt"}}  # 'none' has no png
    assert len(samples) == 2000
    assert all({"__key__", "__url__"} <= set(s) for s in samples)


def test_resume_continues_the_same_mix(collections):
    path = write_spec(
        collections,
        """
dataset:
  - shards: a/a-{000000..000003}.tar
    weight: 3
    scaleprob: 0.9
  - shards: b/b-{000000..000003}.tar
""",
    )
    world = World(seed=3, epoch=2)
    reference = [(s["__source__"], s["__key__"]) for s in mix(MixedSource(path), 6000, world)]

    source = MixedSource(path)
    it = source.apply((), world)
    head = [next(it) for _ in range(2500)]
    state = json.loads(json.dumps(source.state_dict()))  # JSON-serialisable
    it.close()
    assert state["yielded"] == 2500 and state["epoch"] == 2
    assert sum(c["yielded"] for c in state["collections"].values()) == 2500

    resumed = MixedSource(path)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state  # staged, not yet used
    tail = [(s["__source__"], s["__key__"]) for s in mix(resumed, 3500, world)]
    assert [(s["__source__"], s["__key__"]) for s in head] + tail == reference

    # Resuming once more from a later point also matches, and a fresh iteration starts over.
    state2 = resumed.state_dict()
    assert state2["yielded"] == 6000
    again = MixedSource(path)
    again.load_state_dict(state2)
    rest = [(s["__source__"], s["__key__"]) for s in mix(again, None, world)]
    full = [(s["__source__"], s["__key__"]) for s in mix(MixedSource(path), None, world)]
    assert reference + rest == full
    assert [(s["__source__"], s["__key__"]) for s in mix(again, 10, world)] == full[:10]


def test_resume_skips_whole_shards_with_a_manifest(collections, tmp_path):
    # Copy of the layout with an index next to each collection: resuming must give the same
    # samples whether shards are skipped by count or read and discarded.
    path = write_spec(collections, TWO)
    for name in ("a", "b"):
        build_index(str(collections / name / f"{name}-{{000000..000003}}.tar")).save()
    try:
        world = World(seed=5)
        source = MixedSource(path)
        it = source.apply((), world)
        for _ in range(3000):
            next(it)
        state = source.state_dict()
        reference = [s["__key__"] for s in itertools.islice(it, 500)]
        assert state["collections"]["a"]["consumed"] > 2000
        for use_index in (True, False):
            resumed = MixedSource(path, use_index=use_index)
            resumed.load_state_dict(state)
            assert [s["__key__"] for s in mix(resumed, 500, world)] == reference
        # Proof that whole shards are skipped unread: the first shard of 'a' can be gone.
        first = collections / "a" / "a-000000.tar"
        os.rename(first, tmp_path / "away.tar")
        try:
            resumed = MixedSource(path)
            resumed.load_state_dict(state)
            assert [s["__key__"] for s in mix(resumed, 500, world)] == reference
        finally:
            os.rename(tmp_path / "away.tar", first)
    finally:
        for name in ("a", "b"):
            os.unlink(collections / name / "cloudwds-index.json")


def test_resume_refuses_another_epoch(collections):
    source = MixedSource(write_spec(collections, TWO))
    it = source.apply((), World(seed=1, epoch=0))
    next(it)
    state = source.state_dict()
    source.load_state_dict(state)
    with pytest.raises(ValueError, match="epoch"):
        next(source.apply((), World(seed=1, epoch=1)))
    other = parse_spec({"dataset": [{"shards": "x.tar", "name": "x"}]}, "other.yaml")
    with pytest.raises(ValueError, match="collections"):
        MixedSource(other).load_state_dict(state)


def test_resampled_collections_never_end(collections):
    path = write_spec(
        collections,
        """
resampled: true
dataset:
  - shards: a/a-{000000..000003}.tar
  - shards: b/b-000000.tar
    weight: 4
""",
    )
    samples = mix(MixedSource(path), 12000)  # more than the 5000 samples there are
    assert len(samples) == 12000
    assert abs(shares(samples)["a"] - 0.5) <= TOLERANCE


def test_webdataset_style_pipeline_and_pickling(collections):
    path = write_spec(collections, TWO)
    source = pickle.loads(pickle.dumps(MixedSource(path)))
    pipeline = wds.DataPipeline(source, wds.to_tuple("txt", "__source__"), seed=1)
    first = list(itertools.islice(iter(pipeline), 5))
    assert all(isinstance(t, bytes) and s in ("a", "b") for t, s in first)


def test_json_spec_and_shards_relative_to_the_spec(collections):
    spec = {"dataset": [{"shards": ["a/a-000000.tar", "a/a-000001.tar"], "name": "j"}]}
    path = write_spec(collections, json.dumps(spec), "train.json")
    loaded = load_spec(path)
    assert loaded.collection("j").shards == (
        str(collections / "a" / "a-000000.tar"),
        str(collections / "a" / "a-000001.tar"),
    )
    assert loaded.collection("j").weight == 2
    remote = parse_spec(
        {"dataset": [{"shards": "part-{0..2}.tar"}, {"shards": "gs://other/x.tar"}]},
        "s3://bucket/specs/train.yaml",
        base="s3://bucket/specs",
    )
    assert remote.urls() == [
        "s3://bucket/specs/part-0.tar",
        "s3://bucket/specs/part-1.tar",
        "s3://bucket/specs/part-2.tar",
        "gs://other/x.tar",
    ]
    assert [c.name for c in remote.collections] == ["part", "x"]


def test_is_spec_url():
    assert is_spec_url("train.yaml") and is_spec_url("s3://b/x.YML") and is_spec_url("a.json")
    assert not is_spec_url("a-{0..3}.tar") and not is_spec_url(["a.yaml"])


def test_pipe_refused_unless_allowed(collections):
    shard = collections / "a" / "a-000000.tar"
    path = write_spec(collections, f"dataset:\n  - shards: 'pipe:cat {shard}'\n", "pipe.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert (err.file, err.entry, err.field) == (path, 0, "shards")
    assert "allow_pipe=True" in str(err)
    assert isinstance(err, UnsafeSpecError) and isinstance(err, UnsafeInputError)
    assert err.url == f"pipe:cat {shard}" and f"spec {path} dataset[0]" in str(err)
    with pytest.raises(SpecError):
        MixedSource(path)
    samples = mix(MixedSource(path, allow_pipe=True))
    assert len(samples) == 1000


BAD_SPECS = [
    # (spec text, entry, field, part of the message)
    ("- shards: x.tar\n", None, None, "mapping"),
    ("dataset: []\n", None, "dataset", "non-empty"),
    ("dataset:\n  - weight: 1\n", 0, "shards", "missing"),
    ("dataset:\n  - shards: x.tar\n  - shards: y.tar\n    scale: [3, 1]\n", 1, "scale", "lo <= hi"),
    ("dataset:\n  - shards: x.tar\n    scale: [1, 2, 3]\n", 0, "scale", "[lo, hi]"),
    ("dataset:\n  - shards: x.tar\n    scaleprob: 1.5\n", 0, "scaleprob", "[0, 1]"),
    ("dataset:\n  - shards: x.tar\n    weight: -1\n", 0, "weight", ">= 0"),
    ("dataset:\n  - shards: x.tar\n    weight: yes\n", 0, "weight", "number"),
    ("dataset:\n  - shards: x.tar\n    scaleprop: 0.5\n", 0, "scaleprop", "unknown key"),
    ("dataset:\n  - shards: x.tar\n    extensions: {a: 1}\n", 0, "extensions", "string"),
    ("dataset:\n  - shards: x.tar\n    extensions: ';'\n", 0, "extensions", "no fields"),
    ("dataset:\n  - shards: [x.tar, 3]\n", 0, "shards", "pattern"),
    ("dataset:\n  - shards: x.tar\n    resampled: maybe\n", 0, "resampled", "true or false"),
    (
        "dataset:\n  - shards: x.tar\n    name: n\n  - shards: y.tar\n    name: n\n",
        1,
        "name",
        "unique",
    ),
    ("dataset:\n  - shards: x.tar\n    weight: 0\n", None, "dataset", "weight 0"),
    ("shards: x.tar\ndataset: [{shards: x.tar}]\n", None, "shards", "unknown key"),
    ("dataset:\n  - shards: x.tar\n   bad: indent\n", None, None, "invalid YAML"),
]


@pytest.mark.parametrize("text,entry,field,message", BAD_SPECS)
def test_invalid_specs_name_file_entry_and_field(tmp_path, text, entry, field, message):
    path = write_spec(tmp_path, text, "bad.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert (err.file, err.entry, err.field) == (path, entry, field)
    assert message in str(err)
    assert str(err).startswith(path + ": ")
    if entry is not None:
        assert f"dataset[{entry}]" in str(err)


def test_error_names_the_entry_by_name_too(tmp_path):
    path = write_spec(tmp_path, "dataset:\n  - name: books\n    shards: x.tar\n    scale: -1\n")
    with pytest.raises(SpecError, match=r"dataset\[0\] \('books'\): field 'scale'"):
        load_spec(path)


def test_invalid_json_spec(tmp_path):
    path = write_spec(tmp_path, '{"dataset": [', "bad.json")
    with pytest.raises(SpecError, match="invalid JSON") as info:
        load_spec(path)
    assert info.value.file == path


def test_shell_syntax_for_a_pipe_rewrite_is_refused_at_load(collections, tmp_path):
    marker = tmp_path / "marker"
    shard = collections / "a" / "a-000000.tar"
    path = write_spec(
        collections, f"dataset:\n  - shards: 'a/a-000000.tar;touch {marker};#'\n", "evil.yaml"
    )
    rewrite = f"^{collections}/=pipe:cat {collections}/"
    # without a rewrite to pipe: the odd name is just a (missing) file name: nothing to refuse
    assert load_spec(path).urls() == [f"{shard};touch {marker};#"]
    storage = StorageConfig.resolve(rewrites=rewrite)
    for allow_pipe in (False, True):  # allow_pipe trusts pipe: shards, never pasted shell syntax
        with pytest.raises(UnsafeSpecError) as info:
            load_spec(path, allow_pipe=allow_pipe, storage=storage)
        err = info.value
        assert (err.file, err.entry, err.field, err.url) == (
            path,
            0,
            "shards",
            f"{shard};touch {marker};#",
        )
        assert "shell syntax" in str(err)
    with pytest.raises(UnsafeSpecError):
        MixedSource(path, storage=storage)
    # a clean shard name through the same rewrite is fine, and reads through the pipe
    good = write_spec(collections, "dataset:\n  - shards: a/a-000000.tar\n", "good.yaml")
    assert len(mix(MixedSource(good, storage=storage))) == 1000
    assert not marker.exists()


def test_parse_spec_checks_urls_against_the_given_rewrites():
    doc = {"dataset": [{"shards": "http://h/x-{0..1}.tar;id"}]}
    assert len(parse_spec(doc).urls()) == 2
    rules = parse_rewrites("http://h/=pipe:curl -s http://h/")
    with pytest.raises(UnsafeSpecError, match="shell syntax") as info:
        parse_spec(doc, "s.json", rewrites=rules)
    assert info.value.url == "http://h/x-0.tar;id"


def test_unsafe_spec_error_pickles():
    err = UnsafeSpecError("s.yaml", 2, "shards", "refused", "train", "pipe:id")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.file, copy.entry, copy.field, copy.name, copy.url) == (
        "s.yaml",
        2,
        "shards",
        "train",
        "pipe:id",
    )
    assert str(copy) == str(err) == "s.yaml: dataset[2] ('train'): field 'shards': refused"
