"""cloudwds.gopen: webdataset's gopen over cloudwds's storage layer."""

from __future__ import annotations

import importlib
import io

import pytest

# ``cloudwds.gopen`` is the function (as ``webdataset.gopen`` is); the module is reached by path
g = importlib.import_module("cloudwds.gopen")


def test_local_file_and_pipe_round_trip(tmp_path):
    with g.gopen(f"{tmp_path}/t1", "wb") as stream:
        stream.write(b"abc")
    with g.gopen(f"{tmp_path}/t1", "rb") as stream:
        assert stream.read() == b"abc"
    with g.gopen(f"pipe:cat > {tmp_path}/t2", "wb") as stream:
        stream.write(b"xyz")
    with g.gopen(f"pipe:cat {tmp_path}/t2") as stream:
        assert stream.read() == b"xyz"
    assert g.reader(f"file://{tmp_path}/t1").read() == b"abc"


def test_write_is_atomic_and_abort_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), g.gopen(str(target), "wb") as stream:
        stream.write(b"partial")
        raise RuntimeError("boom")
    assert not target.exists()


def test_errors_and_modes(tmp_path):
    with pytest.raises(FileNotFoundError):
        g.gopen(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="mode"):
        g.gopen(str(tmp_path / "x"), "ab")


def test_rewrites_apply(tmp_path, monkeypatch):
    (tmp_path / "real.bin").write_bytes(b"r")
    monkeypatch.setenv("WDS_REWRITE", f"^virtual://=file://{tmp_path}/")
    assert g.rewrite_url("virtual://real.bin") == f"file://{tmp_path}/real.bin"
    assert g.gopen("virtual://real.bin").read() == b"r"


def test_scheme_handlers_take_a_scheme_over():
    g.gopen_schemes["mem"] = lambda url, mode, bufsize, **kw: io.BytesIO(url.encode())
    try:
        assert g.gopen("mem://abc").read() == b"mem://abc"
    finally:
        del g.gopen_schemes["mem"]


def test_secure_mode_refuses_local_files_pipes_and_env_rewrites(tmp_path, monkeypatch):
    from cloudwds import security

    (tmp_path / "f").write_bytes(b"x")
    security.set_secure(True)
    try:
        with pytest.raises(ValueError, match="cannot open local files"):
            g.gopen(str(tmp_path / "f"))
        with pytest.raises(ValueError, match="cannot open local files"):
            g.gopen(f"file://{tmp_path}/f")
        with pytest.raises(ValueError, match="cannot open pipe URLs"):
            g.gopen("pipe:echo hi")
        monkeypatch.setenv("GOPEN_REWRITE", "a=b")
        with pytest.raises(ValueError, match="cannot rewrite URLs"):
            g.rewrite_url("a")
    finally:
        security.set_secure(None)
