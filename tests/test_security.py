"""The trust policy (cloudwds.security): allow-listing unpickler, weights-only torch, opt-ins,
WDS_SECURE, and the pipe: checks every loader of URLs from data uses.

Every hostile payload here would create ``marker`` if it ran; each test checks it did not.
"""

from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import fractions
import io
import json
import logging
import os
import pickle
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import cloudwds as wds
from cloudwds import security
from cloudwds.codecs import Decoder, make_decoder
from cloudwds.codecs.basic import decode_pickle, decode_torch, torch_loads, unpickle_loads
from cloudwds.errors import UnsafeInputError
from cloudwds.index import Manifest, load_index
from cloudwds.urls import Rewrite, apply_rewrites, parse_rewrites

URL = "http://example.com/shard-000000.tar"
MEMBER = "sample000000.pyd"


@pytest.fixture(autouse=True)
def clean_policy(monkeypatch):
    """Every test starts from the defaults: not secure, not trusted, no rewrites."""
    for name in ("WDS_SECURE", "WDS_TRUSTED", "WDS_REWRITE", "GOPEN_REWRITE"):
        monkeypatch.delenv(name, raising=False)
    security.set_secure(None)
    security.set_trusted(None)
    yield
    security.set_secure(None)
    security.set_trusted(None)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "marker"
    yield path
    assert not path.exists(), "a hostile payload ran code"


class Reduces:
    """An object that pickles as ``func(*args)``: the shape of every pickle exploit."""

    def __init__(self, func, *args):
        self.func = func
        self.args = args

    def __reduce__(self):
        return (self.func, self.args)


@dataclass
class Point:
    """A user's own class: round-trips only when the data is trusted."""

    x: int
    y: int


def hostile_pickles(marker: Path) -> dict[str, bytes]:
    cmd = f"touch {marker}"
    legacy = io.BytesIO()
    torch.save(Reduces(os.system, cmd), legacy, _use_new_zipfile_serialization=False)
    return {
        "os.system": pickle.dumps(Reduces(os.system, cmd)),
        "subprocess.Popen": pickle.dumps(Reduces(subprocess.Popen, cmd, -1, None, None, None)),
        "subprocess.call": pickle.dumps(Reduces(subprocess.call, ["touch", str(marker)])),
        "builtins.eval": pickle.dumps(Reduces(eval, f"__import__('os').system({cmd!r})")),
        "builtins.exec": pickle.dumps(Reduces(exec, f"import os; os.system({cmd!r})")),
        "builtins.getattr": pickle.dumps(Reduces(getattr, collections.OrderedDict, "fromkeys")),
        "builtins.__import__": pickle.dumps(Reduces(builtins.__import__, "os")),
        "nested in a dict": pickle.dumps({"ok": [1, 2], "bad": [Reduces(os.system, cmd)]}),
        "object array item": pickle.dumps(np.array([1, Reduces(os.system, cmd)], dtype=object)),
        "numpy scalar of object": pickle.dumps(
            Reduces(np._core.multiarray.scalar, np.dtype("O"), Reduces(os.system, cmd))
        ),
        "defaultdict factory": pickle.dumps(Reduces(collections.defaultdict, os.system)),
        "torch storage bytes": pickle.dumps(
            Reduces(torch.storage._load_from_bytes, legacy.getvalue())
        ),
        # a dotted name would let find_class walk attributes of an allowed class
        "dotted global": b"ccollections\nOrderedDict.fromkeys\n(S'x'\ntR.",
        "user class": pickle.dumps(Point(1, 2)),
    }


def assert_refusal(exn: UnsafeInputError, url: str | None = URL, member: str | None = MEMBER):
    text = str(exn)
    assert isinstance(exn, ValueError)
    assert exn.url == url and exn.member == member
    if url is not None:
        assert repr(url) in text
    if member is not None:
        assert repr(member) in text
    assert "trusted=True" in text and "WDS_TRUSTED=1" in text


# ---------------------------------------------------------------------------------- pickles


def plain_values() -> dict[str, object]:
    return {
        "int": 7,
        "big": 2**100,
        "float": 1.5,
        "complex": 1 + 2j,
        "bool": True,
        "none": None,
        "str": "héllo",
        "bytes": b"\x00\xff",
        "bytearray": bytearray(b"ab"),
        "list": [1, [2, (3,)]],
        "tuple": (1, "x"),
        "set": {1, 2},
        "frozenset": frozenset({3}),
        "slice": slice(1, 9, 2),
        "range": range(2, 10, 3),
        "ordered": collections.OrderedDict(b=1, a=2),
        "defaultdict": collections.defaultdict(list, {"a": [1]}),
        "deque": collections.deque([1, 2], maxlen=5),
        "counter": collections.Counter("abca"),
        "datetime": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
        "date": datetime.date(2024, 1, 2),
        "time": datetime.time(3, 4),
        "timedelta": datetime.timedelta(days=2, seconds=5),
        "decimal": decimal.Decimal("3.14"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "fraction": fractions.Fraction(2, 3),
    }


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_values_round_trip_at_every_protocol(protocol):
    values = plain_values()
    got = security.load_pickle(pickle.dumps(values, protocol=protocol))
    assert got == values
    assert type(got["ordered"]) is collections.OrderedDict
    assert got["defaultdict"]["new"] == []  # the factory came back as list
    assert got["deque"].maxlen == 5


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_values_round_trip(protocol):
    values = {
        "ints": np.arange(12, dtype=np.int64).reshape(3, 4),
        "fortran": np.asfortranarray(np.ones((2, 3), dtype=np.float32)),
        "strided": np.arange(10.0)[::3],
        "record": np.array([(1, 2.5)], dtype=[("a", "i4"), ("b", "f8")]),
        "strings": np.array(["a", "bc"]),
        "objects": np.array([1, "x", None, [2]], dtype=object),
        "scalar": np.float32(2.5),
        "dtype": np.dtype("<u2"),
        "datetime": np.datetime64("2024-01-02"),
    }
    got = security.load_pickle(pickle.dumps(values, protocol=protocol))
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            assert got[name].dtype == value.dtype and got[name].shape == value.shape
            assert got[name].tolist() == value.tolist()
        else:
            assert got[name] == value and type(got[name]) is type(value)
    assert got["fortran"].flags.f_contiguous


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_torch_values_round_trip(protocol):
    values = {
        "float": torch.arange(6.0).reshape(2, 3),
        "view": torch.arange(12.0).reshape(3, 4)[:, 1],
        "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "bool": torch.tensor([True, False]),
        "complex": torch.tensor([1 + 2j]),
        "grad": torch.ones(2, requires_grad=True),
        "param": torch.nn.Parameter(torch.full((2,), 3.0)),
        "size": torch.Size([2, 3]),
        "dtype": torch.float16,
    }
    got = security.load_pickle(pickle.dumps(values, protocol=protocol))
    for name in ("float", "view", "bf16", "bool", "complex", "grad", "param"):
        assert got[name].dtype == values[name].dtype
        assert torch.equal(got[name].detach(), values[name].detach())
    assert got["grad"].requires_grad
    assert isinstance(got["param"], torch.nn.Parameter)
    assert got["size"] == torch.Size([2, 3]) and got["dtype"] is torch.float16


def test_readme_tar_writer_pyd_round_trip_decodes_by_default(tmp_path):
    """The reference README's TarWriter example (tensors as .pyd) works without any opt-in."""
    data = [(torch.arange(6.0).reshape(2, 3) * i, np.arange(3) + i, {"i": i}) for i in range(3)]
    path = tmp_path / "dest.tar"
    with wds.TarWriter(str(path)) as sink:
        for i, (tensor, array, meta) in enumerate(data):
            sink.write(
                {"__key__": f"s{i}", "input.pyd": tensor, "output.pyd": array, "m.pkl": meta}
            )
    got = list(wds.WebDataset(str(path), shardshuffle=False).decode())
    assert len(got) == 3
    for (tensor, array, meta), s in zip(data, got):
        assert torch.equal(s["input.pyd"], tensor)
        assert np.array_equal(s["output.pyd"], array)
        assert s["m.pkl"] == meta


@pytest.mark.parametrize("name", list(hostile_pickles(Path("/nonexistent/marker"))))
def test_hostile_pickles_are_refused_naming_url_member_and_opt_in(name, marker):
    data = hostile_pickles(marker)[name]
    with pytest.raises(UnsafeInputError) as info:
        security.load_pickle(data, url=URL, member=MEMBER)
    assert_refusal(info.value)
    assert "refused to unpickle" in str(info.value)


def test_refusal_names_the_global():
    with pytest.raises(UnsafeInputError, match=r"posix\.system|os\.system"):
        security.load_pickle(pickle.dumps(Reduces(os.system, "true")))
    with pytest.raises(UnsafeInputError, match=r"builtins\.getattr"):
        security.load_pickle(pickle.dumps(Reduces(getattr, int, "mro")))


def test_allocation_tricks_are_refused_not_allocated():
    for kind in (bytes, bytearray):
        data = pickle.dumps(Reduces(kind, 10**15))
        with pytest.raises(UnsafeInputError, match="allocation"):
            security.load_pickle(data, url=URL, member=MEMBER)


def test_trusted_argument_env_and_setter_allow_full_pickle(monkeypatch):
    data = pickle.dumps({"p": Point(1, 2)})
    with pytest.raises(UnsafeInputError):
        security.load_pickle(data)
    assert security.load_pickle(data, trusted=True) == {"p": Point(1, 2)}
    monkeypatch.setenv("WDS_TRUSTED", "1")
    assert security.is_trusted()
    assert security.load_pickle(data) == {"p": Point(1, 2)}
    assert decode_pickle(data) == {"p": Point(1, 2)}
    with pytest.raises(UnsafeInputError):  # an explicit False wins over the environment
        security.load_pickle(data, trusted=False)
    monkeypatch.delenv("WDS_TRUSTED")
    security.set_trusted(True)
    assert security.load_pickle(data) == {"p": Point(1, 2)}
    security.set_trusted(None)
    assert not security.is_trusted()


# ---------------------------------------------------------------------------------- torch


def torch_bytes(obj, **kw) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def test_torch_state_dict_loads_weights_only():
    model = torch.nn.Linear(3, 2)
    got = security.load_torch(torch_bytes(model.state_dict()))
    assert set(got) == {"weight", "bias"}
    assert torch.equal(got["weight"], model.state_dict()["weight"])
    legacy = security.load_torch(
        torch_bytes({"t": torch.ones(2)}, _use_new_zipfile_serialization=False)
    )
    assert torch.equal(legacy["t"], torch.ones(2))


def test_hostile_torch_file_is_refused(marker):
    data = torch_bytes({"x": Reduces(os.system, f"touch {marker}")})
    with pytest.raises(UnsafeInputError) as info:
        security.load_torch(data, url=URL, member="sample000000.pth")
    assert_refusal(info.value, member="sample000000.pth")
    assert "weights_only=True" in str(info.value) and "system" in str(info.value)
    with pytest.raises(UnsafeInputError):
        decode_torch(data)


def test_torch_trusted_loads_full_objects(monkeypatch):
    data = torch_bytes({"p": Point(3, 4), "t": torch.zeros(1)})
    with pytest.raises(UnsafeInputError):
        security.load_torch(data)
    assert security.load_torch(data, trusted=True)["p"] == Point(3, 4)
    monkeypatch.setenv("WDS_TRUSTED", "yes")
    assert decode_torch(data)["p"] == Point(3, 4)


# ---------------------------------------------------------------------------------- decoder


def write_raw_shard(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_decoder_refusal_names_shard_and_member(tmp_path, marker):
    url = write_raw_shard(
        tmp_path / "evil.tar",
        {
            "a.txt": b"fine",
            "a.pyd": pickle.dumps(Reduces(os.system, f"touch {marker}")),
        },
    )
    with pytest.raises(UnsafeInputError) as info:
        list(wds.WebDataset(url, shardshuffle=False).decode())
    assert_refusal(info.value, url=url, member="a.pyd")


def test_decoder_trusted_opt_in_reaches_pickles_and_torch(tmp_path):
    url = write_raw_shard(
        tmp_path / "own.tar",
        {
            "a.pyd": pickle.dumps(Point(1, 2)),
            "a.pth": torch_bytes({"p": Point(5, 6)}),
            "a.cls": b"3",
        },
    )
    with pytest.raises(UnsafeInputError):
        list(wds.WebDataset(url, shardshuffle=False).decode())
    (s,) = list(wds.WebDataset(url, shardshuffle=False).decode(trusted=True))
    assert s["pyd"] == Point(1, 2) and s["pth"]["p"] == Point(5, 6) and s["cls"] == 3
    # to_tuple narrows the decode stage to the fields it needs; the opt-in survives that.
    pipeline = wds.WebDataset(url, shardshuffle=False).decode(trusted=True).to_tuple("pyd cls")
    assert list(pipeline) == [(Point(1, 2), 3)]
    assert Decoder(trusted=True).trusted is True and make_decoder(trusted=False).trusted is False
    assert Decoder(trusted=True)({"__key__": "a", "pyd": pickle.dumps(Point(0, 0))})["pyd"] == (
        Point(0, 0)
    )
    assert "trusted=True" in repr(Decoder(trusted=True))


def test_decoder_pickles_and_keeps_trust():
    copy = pickle.loads(pickle.dumps(Decoder(trusted=True)))
    assert copy.trusted is True
    stage = pickle.loads(pickle.dumps(wds.decode(trusted=True)))
    assert stage.trusted is True and stage._decoder.trusted is True


# ---------------------------------------------------------------------------------- WDS_SECURE


def test_secure_refuses_full_pickle_and_torch_even_when_trusted(monkeypatch):
    monkeypatch.setenv("WDS_SECURE", "1")
    assert security.is_secure()
    with pytest.raises(UnsafeInputError, match=security.SECURE_PICKLE) as info:
        security.load_pickle(pickle.dumps(Point(1, 2)), trusted=True, url=URL, member=MEMBER)
    assert info.value.url == URL and info.value.member == MEMBER
    assert "unset WDS_SECURE" in str(info.value)
    with pytest.raises(UnsafeInputError, match=security.SECURE_TORCH):
        security.load_torch(torch_bytes({"p": Point(1, 2)}), trusted=True)
    # the allow-listed unpickler and weights-only torch are safe, so they still work
    assert security.load_pickle(pickle.dumps([1, np.arange(2)]))[0] == 1
    assert torch.equal(security.load_torch(torch_bytes(torch.ones(2))), torch.ones(2))


def test_secure_webdataset_compatible_names(monkeypatch):
    data = pickle.dumps([1, 2])
    assert unpickle_loads(data) == [1, 2]
    assert torch.equal(torch_loads(torch_bytes(torch.ones(1))), torch.ones(1))
    security.set_secure(True)
    with pytest.raises(ValueError) as info:
        unpickle_loads(data)
    assert "Unpickling is not allowed for security reasons when enforce_security is set" in str(
        info.value
    )
    with pytest.raises(ValueError) as info:
        torch_loads(torch_bytes(torch.ones(1)))
    assert "torch.loads is not allowed for security reasons when enforce_security is set" in str(
        info.value
    )
    security.set_secure(False)
    monkeypatch.setenv("WDS_SECURE", "1")
    assert not security.is_secure()  # the setter wins over the environment
    security.set_secure(None)
    assert security.is_secure()


def test_secure_refuses_pipe_urls_even_from_user_code(tmp_path, monkeypatch, marker):
    shard = write_raw_shard(tmp_path / "a.tar", {"a.txt": b"x"})
    assert len(list(wds.WebDataset(f"pipe:cat {shard}", shardshuffle=False))) == 1
    monkeypatch.setenv("WDS_SECURE", "1")
    with pytest.raises(ValueError, match="cannot open pipe URLs"):
        list(wds.WebDataset(f"pipe:cat {shard}; touch {marker}", shardshuffle=False))
    with pytest.raises(ValueError, match="cannot open pipe URLs"):
        wds.TarWriter(f"pipe:cat > {tmp_path}/out.tar; touch {marker}")
    with pytest.raises(ValueError, match="cannot open pipe URLs"):
        security.check_pipe_allowed("pipe:true", origin=security.USER)
    assert len(list(wds.WebDataset(shard, shardshuffle=False))) == 1  # plain files still fine


# ---------------------------------------------------------------------------------- pipe: policy


@pytest.mark.parametrize(
    "url",
    [
        "http://h/base.tar;touch M;#",
        "http://h/a.tar|sh",
        "http://h/a.tar&&id",
        "http://h/$(id).tar",
        "http://h/`id`.tar",
        "http://h/a b.tar",
        "http://h/a.tar\nid",
        "http://h/a'.tar",
        'http://h/a".tar',
        "http://h/a\\.tar",
        "http://h/a>.tar",
        "http://h/{a,b}.tar",
        "http://h/a*.tar",
        "http://h/a.tar?x=1&y=2",
        "-o/tmp/owned",
    ],
)
def test_shell_syntax_is_detected(url):
    assert security.has_shell_syntax(url)


@pytest.mark.parametrize(
    "url",
    ["http://h/base-000001.tar", "s3://b/dir/a_b.c+d=e,f@g:h%20~i.tar", "gs://b/x.tar.gz", ""],
)
def test_inert_urls_are_plain_words(url):
    assert not security.has_shell_syntax(url)


def test_pipe_from_data_is_refused_naming_origin():
    security.check_pipe_allowed("pipe:cat a.tar", origin=security.USER)
    security.check_pipe_allowed("http://h/a.tar;x", origin="spec s.yaml dataset[0]")
    with pytest.raises(UnsafeInputError) as info:
        security.check_pipe_allowed("pipe:touch M", origin="spec s.yaml dataset[0]")
    assert info.value.url == "pipe:touch M" and "spec s.yaml dataset[0]" in str(info.value)


def test_rewrite_never_pastes_shell_syntax_into_pipe():
    rules = parse_rewrites("http://h/=pipe:curl -s -f http://h/")
    assert apply_rewrites("http://h/base.tar", rules) == "pipe:curl -s -f http://h/base.tar"
    with pytest.raises(UnsafeInputError) as info:
        apply_rewrites("http://h/base.tar;touch M;#", rules)
    assert info.value.url == "http://h/base.tar;touch M;#"
    assert "pipe:curl -s -f http://h/base.tar;touch M;#" in str(info.value)
    # rewrites that do not produce a command, and pipe: URLs written as such, are unaffected
    assert apply_rewrites("http://h/a b.tar", parse_rewrites("http://h/=/data/")) == "/data/a b.tar"
    assert apply_rewrites("pipe:cat a;b", rules) == "pipe:cat a;b"


def test_rewrite_never_turns_url_text_into_an_option():
    rules = parse_rewrites("^/d/=pipe:curl -s -f ")  # the rest of the URL becomes its own word
    assert apply_rewrites("/d/http://h/a.tar", rules) == "pipe:curl -s -f http://h/a.tar"
    with pytest.raises(UnsafeInputError, match="option '-K/tmp/x'") as info:
        apply_rewrites("/d/-K/tmp/x", rules)
    assert info.value.url == "/d/-K/tmp/x"
    with pytest.raises(UnsafeInputError, match="option"):
        security.check_data_url("/d/-o/etc/x", origin="spec s.yaml dataset[0]", rewrites=rules)
    # the rule's own options are fine, and so are URLs glued to a word of the template
    glued = parse_rewrites("http://h/=pipe:curl -s -f http://h/")
    assert apply_rewrites("http://h/-x.tar", glued) == "pipe:curl -s -f http://h/-x.tar"


def test_rewrite_to_pipe_runs_nothing_when_opening(tmp_path, monkeypatch, marker):
    shard = write_raw_shard(tmp_path / "base.tar", {"a.txt": b"x"})
    monkeypatch.setenv("WDS_REWRITE", f"^/base/=pipe:cat {tmp_path}/")
    assert len(list(wds.WebDataset("/base/base.tar", shardshuffle=False))) == 1
    with pytest.raises(UnsafeInputError):
        list(wds.WebDataset(f"/base/base.tar;touch {marker};#", shardshuffle=False))
    assert Path(shard).exists()


def test_refused_rewrite_is_a_per_shard_error_also_with_cache_prefetch(
    tmp_path, monkeypatch, marker, caplog
):
    write_raw_shard(tmp_path / "a.tar", {"a.txt": b"x"})
    monkeypatch.setenv("WDS_REWRITE", f"^/base/=pipe:cat {tmp_path}/")
    urls = ["/base/a.tar", f"/base/b.tar;touch {marker}", "/base/a.tar"]  # bad one prefetched
    ds = wds.WebDataset(
        urls,
        shardshuffle=False,
        cache_dir=str(tmp_path / "cache"),
        prefetch=1,
        handler=wds.warn_and_continue,
    )
    with caplog.at_level(logging.WARNING, "cloudwds"):  # warn_ policies log once
        assert [s["__key__"] for s in ds] == ["a", "a"]
    assert "shell syntax" in caplog.text


def test_check_data_url_applies_the_rewrites():
    rules = (Rewrite("^http://h/", "pipe:curl -s http://h/"),)
    security.check_data_url("http://h/a.tar", origin="manifest m.json shards[0]", rewrites=rules)
    security.check_data_url("http://other/a;b.tar", origin="manifest m.json", rewrites=rules)
    with pytest.raises(UnsafeInputError, match=r"read from manifest m\.json shards\[0\]"):
        security.check_data_url(
            "http://h/a.tar;id", origin="manifest m.json shards[0]", rewrites=rules
        )
    with pytest.raises(UnsafeInputError, match="never from data"):
        security.check_data_url("pipe:id", origin="manifest m.json shards[0]")


# ---------------------------------------------------------------------------------- manifests


def manifest_doc(*urls: str) -> dict:
    return {
        "format": "cloudwds-index",
        "version": 1,
        "shards": [{"url": u, "samples": 1, "bytes": 10240} for u in urls],
    }


def test_manifest_with_pipe_entry_is_refused(tmp_path):
    path = tmp_path / "cloudwds-index.json"
    path.write_text(json.dumps(manifest_doc("a.tar", "pipe:touch M; cat base.tar")))
    with pytest.raises(UnsafeInputError) as info:
        load_index(str(path))
    assert info.value.url == "pipe:touch M; cat base.tar"
    assert f"manifest {path} shards[1]" in str(info.value)
    assert "allow_pipe=True" in str(info.value)
    assert load_index(str(path), allow_pipe=True).shards[1].url == "pipe:touch M; cat base.tar"
    with pytest.raises(UnsafeInputError, match="<document>"):
        Manifest.from_json(manifest_doc("pipe:id"))


def test_manifest_with_shell_syntax_for_a_pipe_rewrite_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "cloudwds-index.json"
    path.write_text(json.dumps(manifest_doc("a.tar;touch M;#")))
    assert load_index(str(path)).shards[0].url.endswith("a.tar;touch M;#")  # no rewrite: inert
    monkeypatch.setenv("WDS_REWRITE", f"^{tmp_path}/=pipe:cat {tmp_path}/")
    with pytest.raises(UnsafeInputError, match="shell syntax"):
        load_index(str(path))
