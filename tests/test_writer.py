"""cloudwds.writer: TarWriter and ShardWriter round trips, atomicity, and foreign readers."""

from __future__ import annotations

import gc
import gzip
import io
import os
import pickle
import subprocess
import tarfile

import numpy as np
import pytest
from conftest import image_array, png_bytes

import cloudwds as wds


def members_of(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path, "r:*") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]  # type: ignore[union-attr]


def read_back(path, *decode):
    return list(wds.WebDataset(str(path), shardshuffle=False).decode(*decode))


def sample(i: int) -> dict:
    return {
        "__key__": f"sample{i:04d}",
        "cls": i,
        "txt": f"text {i}",
        "json": {"i": i, "sq": [i, i * i]},
        "npy": np.arange(6, dtype=np.int32).reshape(2, 3) * i,
        "pyd": {"tuple": (i, "x"), "set": {i}},
        "png": image_array(5, 7, seed=i),
    }


def test_round_trip_with_default_encoder(tmp_path):
    path = tmp_path / "rt.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(5):
            sink.write(sample(i))
    assert sink.count == 5
    names = [n for n, _ in members_of(path)]
    assert names[:6] == [f"sample0000.{f}" for f in ("cls", "json", "npy", "png", "pyd", "txt")]
    got = read_back(path, "rgb8")
    assert [s["__key__"] for s in got] == [f"sample{i:04d}" for i in range(5)]
    for i, s in enumerate(got):
        assert s["cls"] == i and s["txt"] == f"text {i}"
        assert s["json"] == {"i": i, "sq": [i, i * i]}
        assert np.array_equal(s["npy"], np.arange(6).reshape(2, 3) * i)
        assert s["npy"].dtype == np.int32
        assert s["pyd"] == {"tuple": (i, "x"), "set": {i}}
        assert np.array_equal(s["png"], image_array(5, 7, seed=i))  # lossless


def test_encoder_false_needs_bytes_or_str(tmp_path):
    path = tmp_path / "raw.tar"
    png = png_bytes(image_array(4, 4))
    with wds.TarWriter(str(path), encoder=False) as sink:
        sink.write({"__key__": "a", "input.png": png, "target.cls": "3"})
        with pytest.raises(TypeError, match="target.cls"):
            sink.write({"__key__": "b", "input.png": png, "target.cls": 3})
    assert members_of(path) == [("a.input.png", png), ("a.target.cls", b"3")]


def test_encoder_dict_and_callable(tmp_path):
    path = tmp_path / "custom.tar"
    # bytes and str bypass encoders (as in webdataset); other values go by extension
    with wds.TarWriter(str(path), encoder={"rev": lambda xs: bytes(xs[::-1])}) as sink:
        sink.write({"__key__": "a", "rev": [1, 2, 3], "cls": 1})
        sink.write({"__key__": "b", "rev": "already text"})
    assert members_of(path) == [
        ("a.cls", b"1"),
        ("a.rev", b"\x03\x02\x01"),
        ("b.rev", b"already text"),
    ]

    def upper(sample):
        return {k: (v if k == "__key__" else v.upper()) for k, v in sample.items()}

    path = tmp_path / "callable.tar"
    with wds.TarWriter(str(path), encoder=upper) as sink:
        sink.write({"__key__": "k", "txt": "hello"})
    assert members_of(path) == [("k.txt", b"HELLO")]


@pytest.mark.parametrize("name,compress", [("c.tar", True), ("c.tar.gz", None), ("c.tgz", None)])
def test_compressed_output(tmp_path, name, compress):
    path = tmp_path / name
    with wds.TarWriter(str(path), compress=compress) as sink:
        for i in range(3):
            sink.write({"__key__": f"k{i}", "txt": f"t{i}"})
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    with tarfile.open(path, "r:gz") as tar:
        assert tar.getnames() == ["k0.txt", "k1.txt", "k2.txt"]
    assert [(s["__key__"], s["txt"]) for s in read_back(path)] == [
        (f"k{i}", f"t{i}") for i in range(3)
    ]


def test_output_is_read_by_gnu_tar_and_webdataset(tmp_path):
    import webdataset

    path = tmp_path / "foreign.tar"
    long_key = "d/" + "x" * 120
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "a", "cls": 1, "txt": "one"})
        sink.write({"__key__": long_key, "cls": 2, "txt": "two"})
    listing = subprocess.run(["tar", "tf", str(path)], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == ["a.cls", "a.txt", f"{long_key}.cls", f"{long_key}.txt"]
    extracted = tmp_path / "x"
    extracted.mkdir()
    subprocess.run(["tar", "xf", str(path), "-C", str(extracted)], check=True)
    assert (extracted / f"{long_key}.txt").read_bytes() == b"two"
    ds = webdataset.DataPipeline(
        webdataset.SimpleShardList(str(path)),
        webdataset.tarfile_to_samples(),
        webdataset.decode(),
    )
    got = [(s["__key__"], s["cls"], s["txt"]) for s in ds]
    assert got == [("a", 1, "one"), (long_key, 2, "two")]


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_exception_inside_with_leaves_nothing(tmp_path):
    for name in ("atomic.tar", "atomic.tar.gz"):
        path = tmp_path / name
        with pytest.raises(RuntimeError, match="boom"), wds.TarWriter(str(path)) as sink:
            sink.write({"__key__": "a", "txt": "x" * 100_000})
            raise RuntimeError("boom")
        assert os.listdir(tmp_path) == []  # neither the shard nor a temp file
        del sink
        gc.collect()  # an aborted gzip writer must not write into its closed file later


def test_file_appears_only_on_close(tmp_path):
    path = tmp_path / "late.tar"
    sink = wds.TarWriter(str(path))
    sink.write({"__key__": "a", "txt": "x"})
    assert not path.exists()
    sink.close()
    assert path.exists() and os.listdir(tmp_path) == ["late.tar"]
    with pytest.raises(ValueError, match="closed"):
        sink.write({"__key__": "b", "txt": "y"})


def test_keys_are_validated_and_samples_written_whole(tmp_path):
    path = tmp_path / "keys.tar"
    with wds.TarWriter(path) as sink:  # a PathLike works too
        with pytest.raises(ValueError, match="dot"):
            sink.write({"__key__": "a.b", "txt": "x"})
        with pytest.raises(ValueError, match="__key__"):
            sink.write({"txt": "x"})
        with pytest.raises(wds.codecs.EncodingError):
            sink.write({"__key__": "half", "txt": "fine", "zzz": object()})
        sink.write({"__key__": "dir.v1/ok", "txt": "y"})  # dots in directories are fine
    assert members_of(path) == [("dir.v1/ok.txt", b"y")]
    assert [s["__key__"] for s in read_back(path)] == ["dir.v1/ok"]


def test_writing_to_a_stream_and_fixed_mtime():
    out = io.BytesIO()
    with wds.TarWriter(out, mtime=1_234_567_890) as sink:
        sink.write({"__key__": "k", "txt": "v"})
    assert not out.closed
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        (info,) = tar.getmembers()
        assert info.name == "k.txt" and info.mtime == 1_234_567_890 and info.uname == "bigdata"
    gz = io.BytesIO()
    with wds.TarWriter(gz, compress=True) as sink:
        sink.write({"__key__": "k", "txt": "v"})
    assert tarfile.open(fileobj=io.BytesIO(gzip.decompress(gz.getvalue()))).getnames() == ["k.txt"]


def test_shard_writer_maxcount_start_shard_and_post(tmp_path):
    posted = []
    pattern = str(tmp_path / "out-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=4, start_shard=3, post=posted.append) as sink:
        for i in range(10):
            sink.write({"__key__": f"k{i:02d}", "cls": i})
    expected = [pattern % n for n in (3, 4, 5)]
    assert sink.shards == expected and posted == expected
    assert sorted(os.listdir(tmp_path)) == ["out-000003.tar", "out-000004.tar", "out-000005.tar"]
    counts = [len(read_back(p)) for p in expected]
    assert counts == [4, 4, 2]
    assert [s["cls"] for p in expected for s in read_back(p)] == list(range(10))
    assert sink.total == 10


def test_shard_writer_maxsize(tmp_path):
    pattern = str(tmp_path / "size-%03d.tar")
    payload = "x" * 10_000  # each sample: 512 header + 10240 data
    with wds.ShardWriter(pattern, maxsize=25_000) as sink:
        for i in range(7):
            sink.write({"__key__": f"k{i}", "txt": payload})
    counts = [len(members_of(p)) for p in sink.shards]
    assert counts == [3, 3, 1]  # a shard is closed once it holds >= maxsize bytes
    assert all(os.path.getsize(p) < 25_000 + 11_000 + 10_240 for p in sink.shards)


def test_shard_writer_never_leaves_empty_shards(tmp_path):
    posted = []
    with wds.ShardWriter(str(tmp_path / "e-%d.tar"), post=posted.append) as sink:
        pass
    assert sink.shards == [] and posted == [] and os.listdir(tmp_path) == []
    with wds.ShardWriter(str(tmp_path / "f-%d.tar"), post=posted.append) as sink:
        with pytest.raises(ValueError):
            sink.write({"__key__": "bad.key", "txt": "x"})
        sink.write({"__key__": "good", "txt": "x"})
    assert sink.shards == [str(tmp_path / "f-0.tar")] == posted
    assert os.listdir(tmp_path) == ["f-0.tar"]
    assert members_of(tmp_path / "f-0.tar") == [("good.txt", b"x")]
    # a shard whose only write failed is not published, and its number is reused
    with wds.ShardWriter(str(tmp_path / "h-%d.tar"), maxcount=1, post=posted.append) as sink:
        sink.write({"__key__": "one", "txt": "1"})
        with pytest.raises(ValueError):
            sink.write({"__key__": "bad.key", "txt": "x"})
    assert sink.shards == [str(tmp_path / "h-0.tar")]
    with wds.ShardWriter(str(tmp_path / "h-%d.tar"), maxcount=1, start_shard=1) as sink:
        with pytest.raises(ValueError):
            sink.write({"__key__": "bad.key", "txt": "x"})
        sink.write({"__key__": "two", "txt": "2"})
    assert sorted(os.listdir(tmp_path)) == ["f-0.tar", "h-0.tar", "h-1.tar"]
    assert members_of(tmp_path / "h-1.tar") == [("two.txt", b"2")]
    with wds.ShardWriter(str(tmp_path / "i-%d.tar")) as sink, pytest.raises(ValueError):
        sink.write({"__key__": "bad.key", "txt": "x"})
    assert sink.shards == [] and not os.path.exists(tmp_path / "i-0.tar")


def test_shard_writer_exception_keeps_finished_shards_only(tmp_path):
    pattern = str(tmp_path / "x-%d.tar")
    with pytest.raises(RuntimeError), wds.ShardWriter(pattern, maxcount=2) as sink:
        for i in range(3):
            sink.write({"__key__": f"k{i}", "txt": "v"})
        raise RuntimeError("stop")
    assert os.listdir(tmp_path) == ["x-0.tar"]
    assert len(members_of(tmp_path / "x-0.tar")) == 2


def test_shard_writer_pattern_and_options(tmp_path):
    with pytest.raises(ValueError, match="%d"):
        wds.ShardWriter(str(tmp_path / "nopattern.tar"))
    with pytest.raises(ValueError):
        wds.ShardWriter(str(tmp_path / "x-%d.tar"), maxcount=0)
    with wds.ShardWriter(str(tmp_path / "g-%d.tar.gz"), maxcount=1, encoder=False) as sink:
        sink.write({"__key__": "a", "txt": b"raw"})
        sink.write({"__key__": "b", "txt": b"raw2"})
    assert sink.shards == [str(tmp_path / "g-0.tar.gz"), str(tmp_path / "g-1.tar.gz")]
    assert members_of(tmp_path / "g-1.tar.gz") == [("b.txt", b"raw2")]


def test_tar_writer_pickle_payloads_stay_lossless(tmp_path):
    path = tmp_path / "p.tar"
    value = {"a": np.float64(1.5), "b": [1, (2, 3)], "c": b"\x00"}
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "p", "pickle": value, "pyd": value})
    (s,) = read_back(path)
    assert s["pickle"] == value and s["pyd"] == value
    assert pickle.loads(dict(members_of(path))["p.pyd"]) == value


# ---------------------------------------------------------------- file modes follow the umask
@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    """Run the test under a given umask (pytest runs tests in one thread, so this is safe here)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode_of(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_tar_writer_and_shard_writer_files_follow_the_umask(tmp_path, umask):
    expected = 0o666 & ~umask
    with wds.TarWriter(str(tmp_path / "one.tar")) as sink:
        sink.write(sample(0))
    with wds.ShardWriter(str(tmp_path / "many-%03d.tar"), maxcount=2) as sink:
        for i in range(5):
            sink.write(sample(i))
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["many-000.tar", "many-001.tar", "many-002.tar", "one.tar"]
    assert {p.name: mode_of(p) for p in tmp_path.iterdir()} == dict.fromkeys(written, expected)


def test_cli_outputs_follow_the_umask(tmp_path, umask, capsys):
    from cloudwds.cli import main

    expected = 0o666 & ~umask
    with wds.ShardWriter(str(tmp_path / "src-%03d.tar"), maxcount=3) as sink:
        for i in range(6):
            sink.write(sample(i))
    spec = str(tmp_path / "src-{000..001}.tar")
    out = tmp_path / "out"
    assert main(["-q", "reshard", spec, "-o", str(out / "re-%03d.tar"), "--maxcount", "4"]) == 0
    assert main(["-q", "index", spec, "-o", str(out / "index.json")]) == 0
    assert main(["head", spec, "--field", "txt", "-o", str(out / "first.txt")]) == 0
    capsys.readouterr()
    assert (out / "first.txt").read_text() == "text 0"
    modes = {p.name: mode_of(p) for p in out.iterdir()}
    assert modes == dict.fromkeys(["re-000.tar", "re-001.tar", "index.json", "first.txt"], expected)


def test_a_failed_write_still_leaves_nothing_behind(tmp_path, umask):
    with pytest.raises(RuntimeError), wds.TarWriter(str(tmp_path / "x.tar")) as sink:
        sink.write(sample(0))
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
