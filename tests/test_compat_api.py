"""webdataset 1.0.2's public API on cloudwds: every top-level name, its call signature, behaviour.

The signature test compares with the installed webdataset 1.0.2 at test time: for each name, the
positional parameters webdataset accepts must be accepted by cloudwds at the same positions (a
``*args`` covers them), and its keyword-only parameters by name (or ``**kw``). webdataset's
curried stages (``RestCurried``) are compared without their first, stream, parameter.
"""

from __future__ import annotations

import inspect
import io
import os
import pickle
import types

import numpy as np
import pytest
from conftest import make_shards, write_tar

import cloudwds as wds

webdataset = pytest.importorskip("webdataset")

P = inspect.Parameter
POSITIONAL = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)

# Names whose signature differs on purpose (see docs/migration.md).
SIGNATURE_DIFFERENCES = {
    # cloudwds's DecodingError is the one error class of the codec layer: (message, url, member)
    "DecodingError",
}


def _params(obj: object) -> list[inspect.Parameter]:
    """Parameters of a callable; curried stages without their stream argument."""
    f = getattr(obj, "f", None)
    if type(obj).__name__ == "RestCurried" and f is not None:
        return list(inspect.signature(f).parameters.values())[1:]
    return list(inspect.signature(obj).parameters.values())  # type: ignore[arg-type]


def _incompatibilities(theirs: object, ours: object, names_too: bool = True) -> list[str]:
    try:
        tp = _params(theirs)
    except (TypeError, ValueError):  # a builtin without a signature (itertools.islice)
        return []
    op = _params(ours)
    opos = [p for p in op if p.kind in POSITIONAL]
    ovar = any(p.kind == P.VAR_POSITIONAL for p in op)
    okw = any(p.kind == P.VAR_KEYWORD for p in op)
    names = {p.name for p in op}
    problems = []
    for i, p in enumerate(p for p in tp if p.kind in POSITIONAL):
        if ovar and (i >= len(opos) or opos[i].name != p.name):
            continue  # *args takes it
        if i >= len(opos):
            problems.append(f"positional {p.name} missing")
        elif opos[i].name != p.name and names_too:
            problems.append(f"position {i} is {opos[i].name}, webdataset has {p.name}")
    for p in tp:
        if p.kind == P.VAR_POSITIONAL and not ovar:
            problems.append("no *args")
        if p.kind == P.KEYWORD_ONLY and p.name not in names and not okw:
            problems.append(f"keyword {p.name} missing")
    return problems


def _public(module: types.ModuleType) -> list[str]:
    return sorted(n for n in dir(module) if not n.startswith("_"))


def test_every_webdataset_name_exists():
    names = _public(webdataset)
    assert len(names) == 83
    assert [n for n in names if not hasattr(wds, n)] == []


@pytest.mark.parametrize("name", _public(webdataset))
def test_signature_accepts_webdataset_arguments(name):
    theirs, ours = getattr(webdataset, name), getattr(wds, name)
    if isinstance(theirs, types.ModuleType):
        assert isinstance(ours, types.ModuleType)
        assert ours.__name__ == f"cloudwds.{name}"
    elif not callable(theirs):
        assert type(ours) is type(theirs)
    elif name not in SIGNATURE_DIFFERENCES:
        assert _incompatibilities(theirs, ours) == []


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "tariterators",
            "base_plus_ext url_opener tar_file_expander tar_file_iterator valid_sample "
            "group_by_keys tarfile_samples tarfile_to_samples",
        ),
        (
            "filters",
            "_shuffle pipelinefilter getfirst FilterFunction RestCurried shuffle map "
            "select decode to_tuple batched detshuffle xdecode extract_keys Cached LMDBCached",
        ),
        (
            "shardlists",
            "expand_urls SimpleShardList ResampledShards split_by_node split_by_worker "
            "single_node_only DirectoryShardList non_empty resampled shardspec envsubst",
        ),
        ("utils", "pytorch_worker_seed pytorch_worker_info PipelineStage repeatedly make_seed"),
        ("gopen", "gopen gopen_schemes rewrite_url reader"),
        (
            "autodecode",
            "Decoder Continue gzfilter decoders torch_loads unpickle_loads imagehandler",
        ),
        ("writer", "TarWriter ShardWriter numpy_dumps torch_dumps tenbin_dumps imageencoder"),
        ("mix", "RoundRobin RandomMix"),
        ("tenbin", "encode_buffer decode_buffer save load"),
        ("compat", "WebDataset FluidInterface FluidWrapper WebLoader"),
        ("extradatasets", "MockDataset repeatedly with_epoch with_length"),
        ("pytorch", "DataLoader IterableDataset Dataset"),
        ("cache", "LRUCleanup pipe_cleaner url_to_cache_name FileCache StreamingOpen"),
        ("handlers", "reraise_exception warn_and_continue ignore_and_continue"),
        ("pipeline", "DataPipeline"),
    ],
)
def test_submodules_have_the_names_clients_import(module, names):
    import importlib

    mod = importlib.import_module(f"cloudwds.{module}")
    assert [n for n in names.split() if not hasattr(mod, n)] == []
    theirs = importlib.import_module(f"webdataset.{module}")
    for n in names.split():
        if hasattr(theirs, n) and callable(getattr(theirs, n)):
            # positions must line up; parameter names may differ (webdataset's ``l``, ``f``...)
            assert _incompatibilities(getattr(theirs, n), getattr(mod, n), False) == [], n


# -- behaviour of the names that were missing ------------------------------------------------


def test_pipeline_stage_run_is_called_by_datapipeline():
    class Doubler(wds.PipelineStage):
        def run(self, src):
            for x in src:
                yield 2 * x

    class Source(wds.PipelineStage):
        def run(self):
            return iter([1, 2, 3])

    assert list(wds.DataPipeline(range(1, 4), Doubler())) == [2, 4, 6]
    assert list(wds.DataPipeline(Source(), Doubler())) == [2, 4, 6]


def test_pipelinefilter_curries_every_argument_but_the_stream():
    @wds.pipelinefilter
    def add(data, n, scale=1):
        for x in data:
            yield (x + n) * scale

    stage = add(10, scale=2)
    assert isinstance(stage, wds.filters.FilterFunction)
    assert list(wds.DataPipeline(range(1, 3), stage)) == [22, 24]
    assert list(pickle.loads(pickle.dumps(wds.info(n=0)))([{"a": 1}])) == [{"a": 1}]


def test_processor_and_decoder_apply_to_a_whole_dataset(shards):
    def upper(sample):
        return {**sample, "txt": sample["txt"].upper()}

    ds = wds.WebDataset(shards.spec, shardshuffle=False)
    processed = wds.Processor(wds.map, upper)(ds)
    assert next(iter(processed))["txt"] == b"TEXT OF S0-0000"
    decoded = wds.Decoder(wds.handle_extension("txt", lambda b: b.decode() + "!"))(ds)
    first = next(iter(decoded))
    assert first["txt"] == "text of s0-0000!" and first["cls"] == 0
    plain = wds.Decoder([])(iter([{"__key__": "k", "cls": b"7"}]))
    assert list(plain) == [{"__key__": "k", "cls": 7}]


def test_decoder_webdataset_positional_form_and_continue():
    def shout(key, data):
        return data.decode().upper() if key.endswith(".txt") else None

    def rename_tx(key, data):
        return wds.Continue(key[:-3] + ".txt", data) if key.endswith(".tx") else None

    decoder = wds.Decoder([shout], [rename_tx], None, "tx cls", False)
    out = decoder({"__key__": "k", "tx": b"hi", "cls": b"3", "json": b"{}"})
    assert out == {"__key__": "k", "tx": "HI", "cls": 3, "json": b"{}"}  # json not in only
    gz = wds.Decoder([], [wds.gzfilter])({"x.txt.gz": __import__("gzip").compress(b"zip")})
    assert gz == {"x.txt.gz": "zip"}


def test_detshuffle_same_order_everywhere_and_new_order_per_epoch():
    ds = wds.DataPipeline(range(50), wds.detshuffle(10, seed=3))
    first, second = list(ds), list(ds)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert second != first and ds.stage(1).epoch == 1
    again = wds.DataPipeline(range(50), wds.detshuffle(10, seed=3))
    assert list(again) == first


def test_getfirst_transform_with_extract_keys_associate_xdecode():
    sample = {"__key__": "k", "jpg": b"J", "txt": b"t", "a.cls": b"1"}
    assert wds.getfirst(sample, "png;jpg") == b"J"
    assert wds.getfirst(sample, ["gif"], default=5, missing_is_error=False) == 5
    with pytest.raises(ValueError, match="didn't find"):
        wds.getfirst(sample, "gif")
    assert wds.transform_with([1, 2, 3], [str, None]) == ["1", 2, 3]
    assert list(wds.extract_keys("*.jpg", "*.cls")([sample])) == [(b"J", b"1")]
    with pytest.raises(ValueError):
        list(wds.extract_keys("*.png")([sample]))
    assert list(wds.associate({"k": {"extra": 1}})([sample]))[0]["extra"] == 1
    assert list(wds.associate(lambda key: {"len": len(key)})([sample]))[0]["len"] == 1
    decoded = next(iter(wds.xdecode(must_decode=False)([sample])))
    assert decoded["txt"] == "t" and decoded["jpg"] == b"J"
    with pytest.raises(ValueError, match="No decoder"):
        list(wds.xdecode()([sample]))


def test_info_prints_samples(capsys):
    out = io.StringIO()
    assert list(wds.info(n=1, stream=out, name="x")([{"a": 1}, {"a": 2}])) == [{"a": 1}, {"a": 2}]
    assert out.getvalue() == "--- x\na 1\n"


def test_non_empty_resampled_repeatedly():
    assert list(wds.non_empty(iter([1]))) == [1]
    with pytest.raises(ValueError, match="no data"):
        list(wds.non_empty(iter([])))
    drawn = list(wds.resampled(n=20)([1, 2, 3]))
    assert len(drawn) == 20 and set(drawn) <= {1, 2, 3}
    assert list(wds.repeatedly([1, 2], nepochs=3)) == [1, 2] * 3
    assert list(wds.repeatedly([1, 2], nbatches=3)) == [1, 2, 1]
    assert len(list(wds.repeatedly([[[1, 1], [2, 2]]] * 3, nsamples=10))) == 5


def test_mock_with_epoch_with_length():
    assert list(wds.MockDataset("x", 3)) == ["x", "x", "x"]
    epochs = wds.with_epoch(list(range(5)), 3)
    assert list(epochs) == [0, 1, 2] and list(epochs) == [3, 4, 0] and len(epochs) == 3
    assert len(wds.with_length([1, 2], 10)) == 10 and list(wds.with_length([1, 2], 10)) == [1, 2]


def test_cached_replays_the_first_complete_pass():
    pulled = []

    def source():
        for x in (1, 2, 3):
            pulled.append(x)
            yield x

    ds = wds.DataPipeline(source, wds.Cached())
    assert list(ds) == [1, 2, 3] and list(ds) == [1, 2, 3]
    assert pulled == [1, 2, 3]  # the second pass came from the cache


def test_lmdb_cached_round_trip(tmp_path):
    pytest.importorskip("lmdb")
    dest = str(tmp_path / "c.lmdb")
    samples = [{"__key__": f"k{i}", "x": np.arange(i)} for i in range(4)]
    with wds.DataPipeline(lambda: iter(samples), wds.LMDBCached(dest)) as ds:
        assert [s["__key__"] for s in ds] == ["k0", "k1", "k2", "k3"]
    with wds.DataPipeline(lambda: iter([]), wds.LMDBCached(dest)) as replay:  # from the cache
        again = list(replay)
    assert [s["__key__"] for s in again] == ["k0", "k1", "k2", "k3"]
    assert np.array_equal(again[3]["x"], np.arange(3))


def test_multishard_sample_is_refused_with_what_to_use():
    with pytest.raises(NotImplementedError, match="load_spec"):
        wds.MultiShardSample("x.yaml")
    with pytest.raises(NotImplementedError, match="spec"):
        wds.shardspec("x.yaml")
    assert [i["url"] for i in wds.shardspec("a-{0..1}.tar")] == ["a-0.tar", "a-1.tar"]


def test_round_robin_and_random_mix():
    rr = wds.RoundRobin([[1, 1], [2], [3, 3, 3]], longest=True)
    assert list(rr) == [1, 2, 3, 1, 3, 3]
    assert list(wds.RoundRobin([[1, 1], [2], [3, 3, 3]])) == [1, 2, 3, 1]
    mixed = list(wds.RandomMix([[1] * 5, [2] * 5], longest=True))
    assert sorted(mixed) == [1] * 5 + [2] * 5
    assert list(wds.FluidWrapper(wds.RoundRobin([[1], [2]])).map(lambda x: x * 10)) == [10, 20]


def test_tarfile_samples_and_select_rename_files(shards):
    samples = list(wds.tarfile_samples([{"url": shards.paths[0]}]))
    assert [s["__key__"] for s in samples] == shards.keys[0]
    only_txt = wds.tarfile_to_samples(select_files=lambda name: name.endswith(".txt"))
    assert set(next(iter(only_txt([shards.paths[0]])))) == {
        "__key__",
        "__url__",
        "__local_path__",
        "txt",
    }
    renamed = wds.tarfile_to_samples(rename_files=lambda name: name.replace(".txt", ".text"))
    first = next(iter(renamed([shards.paths[0]])))
    assert first["text"] == b"text of s0-0000" and "txt" not in first
    ds = wds.WebDataset(shards.spec, shardshuffle=False, select_files=lambda n: n.endswith(".cls"))
    assert set(next(iter(ds))) == {"__key__", "__url__", "__local_path__", "cls"}


def test_empty_check_warns_by_default_and_raises_when_asked(tmp_path, caplog):
    path = write_tar(tmp_path / "empty.tar", [])
    assert list(wds.WebDataset(str(path), shardshuffle=False)) == []
    with pytest.raises(ValueError, match="No samples found"):
        list(wds.WebDataset(str(path), shardshuffle=False, empty_check=True))
    assert list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False)) == []


def test_webdataset_positional_order_and_mode(shards):
    ds = wds.WebDataset(shards.spec, wds.reraise_exception, "resampled")
    assert len(list(ds.with_epoch(7))) == 7
    with pytest.raises(ValueError, match="mode"):
        wds.WebDataset(shards.spec, wds.reraise_exception, "unknown")


def test_datasets_are_context_managers_and_stages_are_addressable(shards):
    with wds.WebDataset(shards.spec, shardshuffle=False).map(lambda s: s["__key__"]) as ds:
        assert ds.stage(0).urls == shards.paths
        assert next(iter(ds)) == "s0-0000"
    ds.append(wds.select(lambda k: k.endswith("1")))  # webdataset: append modifies in place
    assert list(ds)[:2] == ["s0-0001", "s1-0001"]


def test_webloader_repeat(shards):
    ds = wds.WebDataset(shards.spec, shardshuffle=False).to_tuple("cls")
    loader = wds.WebLoader(ds, num_workers=0, batch_size=4).repeat(nepochs=2)
    assert len(list(loader)) == 2 * 10  # 4 shards x 10 samples, batches of 4, twice
    assert len(list(loader.repeat(nepochs=3, nbatches=7))) == 7


def test_ten_members_decode_and_encode(tmp_path):
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64)]
    path = str(tmp_path / "t.tar")
    with wds.TarWriter(path) as sink:
        sink.write({"__key__": "a", "ten": arrays, "tb": arrays[0]})
    sample = next(iter(wds.WebDataset(path, shardshuffle=False).decode()))
    assert [a.tolist() for a in sample["ten"]] == [a.tolist() for a in arrays]
    assert sample["tb"][0].dtype == np.float32 and sample["tb"][0].shape == (2, 3)


def test_writer_dumps_and_tar_writer_positional_order(tmp_path):
    assert np.load(io.BytesIO(wds.numpy_dumps(np.arange(3)))).tolist() == [0, 1, 2]
    torch = pytest.importorskip("torch")
    assert torch.equal(wds.torch_loads(wds.torch_dumps(torch.ones(2))), torch.ones(2))
    path = str(tmp_path / "w.tar.gz")
    with wds.TarWriter(path, "me", "us", 0o444, True) as sink:  # user, group, mode, compress
        sink.write({"__key__": "a", "txt": "x"})
    with open(path, "rb") as stream:
        assert stream.read(2) == b"\x1f\x8b"


def test_gopen_reads_and_writes_and_honours_scheme_handlers(tmp_path):
    target = str(tmp_path / "g.bin")
    with wds.gopen(target, "wb") as out:
        out.write(b"hello")
    with wds.gopen(target) as stream:
        assert stream.read() == b"hello"
    with wds.gopen(f"pipe:cat {target}") as stream:
        assert stream.read() == b"hello"
    with pytest.raises(FileNotFoundError):
        wds.gopen(str(tmp_path / "missing.bin"))
    wds.gopen_schemes["memtest"] = lambda url, mode, bufsize, **kw: io.BytesIO(url.encode())
    try:
        assert wds.gopen("memtest://x").read() == b"memtest://x"
    finally:
        del wds.gopen_schemes["memtest"]


def test_enforce_security_is_a_live_view_of_secure_mode(tmp_path):
    from cloudwds import security

    assert wds.utils.enforce_security is security.is_secure() is False
    wds.utils.enforce_security = True
    try:
        assert security.is_secure() is True
        with pytest.raises(ValueError, match="cannot open local files"):
            wds.gopen(str(tmp_path / "x"))
        with pytest.raises(ValueError, match="Unpickling is not allowed"):
            wds.autodecode.decoders["pyd"](pickle.dumps(1))
    finally:
        wds.utils.enforce_security = False
    assert security.is_secure() is False


def test_pytorch_worker_info_and_seed(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert wds.utils.pytorch_worker_info() == (2, 4, 0, 1)
    assert wds.utils.pytorch_worker_seed() == 2000


def test_cache_names(tmp_path):
    assert wds.pipe_cleaner("pipe:curl -s https://x/a.tar") == "https://x/a.tar"
    assert wds.cache.url_to_cache_name("s3://b/p/q/a.tar", ndir=1) == "q/a.tar"
    for i in range(4):
        (tmp_path / f"f{i}").write_bytes(b"x" * 100)
        os.utime(tmp_path / f"f{i}", (i, i))
    cleanup = wds.LRUCleanup(tmp_path, cache_size=250, keyfn=os.path.getmtime, interval=None)
    cleanup.cleanup()
    assert sorted(os.listdir(tmp_path)) == ["f2", "f3"]


def test_directory_url_reads_the_shards_inside_sorted_and_leaves_them_alone(tmp_path):
    # webdataset makes "dir/" a DirectoryShardList work queue that renames the shards; cloudwds
    # reads the shards in place (issue 13); the queue stays available as DirectoryShardList
    (tmp_path / "d").mkdir()
    shards = make_shards(tmp_path / "d", 2, 3)
    ds = wds.WebDataset(os.path.dirname(shards.paths[0]) + "/", shardshuffle=False)
    assert [s["__key__"] for s in ds] == shards.all_keys
    assert sorted(os.listdir(tmp_path / "d")) == ["shard-000000.tar", "shard-000001.tar"]


def test_shuffle_with_a_callers_rng_gives_webdatasets_order():
    import random

    from webdataset.filters import _shuffle as reference

    for bufsize, initial in ((50, 10), (500, 100), (1, 1)):
        ours = list(wds.filters._shuffle(iter(range(300)), bufsize, initial, random.Random(7)))
        theirs = list(reference(iter(range(300)), bufsize, initial, random.Random(7)))
        assert ours == theirs
    staged = wds.DataPipeline(range(100), wds.shuffle(20, 5, rng=random.Random(3)))
    assert list(staged) == list(reference(iter(range(100)), 20, 5, random.Random(3)))


def test_a_swallowed_truncation_hands_out_the_fields_read(tmp_path):
    whole = tmp_path / "whole.tar"
    write_tar(whole, [("a.cls", b"1"), ("a.bin", b"x" * 5000), ("b.cls", b"2")])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:3000])  # inside a.bin
    stopped = list(wds.tarfile_to_samples(handler=wds.ignore_and_stop)([str(cut)]))
    assert [(s["__key__"], sorted(k for k in s if not k.startswith("__"))) for s in stopped] == [
        ("a", ["cls"])
    ]
    with pytest.raises(wds.TruncatedShardError):
        list(wds.tarfile_to_samples()([str(cut)]))


def test_remaining_fluent_methods_and_loader_context(shards, tmp_path):
    ds = wds.WebDataset(shards.spec, shardshuffle=False)
    assert [len(b) for b in ds.listed(15)] == [15, 15, 10]
    assert len(list(ds.listed(15).unlisted())) == 40
    assert next(iter(ds.extract_keys("*.txt"))) == (b"text of s0-0000",)
    assert next(iter(ds.xdecode(must_decode=False)))["txt"] == "text of s0-0000"
    cached = ds.map(lambda s: s["__key__"]).mcached()
    assert list(cached) == list(cached) == shards.all_keys
    log = tmp_path / "keys.log"
    assert len(list(ds.log_keys(str(log)))) == 40 and len(log.read_text().splitlines()) == 40
    with wds.WebLoader(ds.to_tuple("cls"), batch_size=None, num_workers=0) as loader:
        assert len(list(loader)) == 40


def test_filters_helpers():
    import random

    buf = [1, 2, 3]
    picked = wds.filters.pick(buf, random.Random(0))
    assert sorted(buf + [picked]) == [1, 2, 3] and len(buf) == 2
    assert wds.filters.combine_values([1, 2]).tolist() == [1, 2]
    assert wds.filters.dict2tuple(wds.filters.tuple2dict(("a", "b"))) == ("a", "b")
    ds = wds.pipeline.add_length_method(wds.MockDataset(1, 3))
    ds.size = 3
    assert len(ds) == 3 and list(ds) == [1, 1, 1]


def test_writer_extension_tables():
    handlers = wds.writer.make_handlers()
    wds.writer.add_handlers(handlers, "double twice", lambda x: str(2 * x).encode())
    out = wds.writer.encode_based_on_extension({"__key__": "a", "cls": 3, "twice": 21}, handlers)
    assert out == {"__key__": "a", "cls": b"3", "twice": b"42"}
    assert wds.writer.encode_based_on_extension1(7, "x.cls", handlers) == b"7"
