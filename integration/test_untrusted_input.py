"""Untrusted data over real HTTP runs no code (issue 10, findings 1-3), end to end.

Each attack would create ``marker`` if it worked: a pickle reducing to ``os.system``, the same
inside a ``.pth`` file, a spec whose shard URL carries shell syntax into a ``WDS_REWRITE`` to
``pipe:curl``, and a served manifest listing a ``pipe:`` URL given to ``cloudwds verify``.
Each must leave no marker and fail with an error naming the URL (and member).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
import torch

import cloudwds as wds
from cloudwds.errors import UnsafeInputError
from cloudwds.spec import UnsafeSpecError

from .servers import HTTPEndpoint
from .storage_support import clean_wds_env  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("clean_wds_env")


class Reduces:
    """Pickles as ``func(*args)`` — the shape of every pickle exploit."""

    def __init__(self, func, *args):
        self.func = func
        self.args = args

    def __reduce__(self):
        return (self.func, self.args)


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def site(http_server: HTTPEndpoint) -> tuple[Path, str]:
    """A fresh directory served over HTTP: (local path, its http:// URL, no trailing slash)."""
    name = f"untrusted-{uuid.uuid4().hex[:8]}"
    root = http_server.root / name
    root.mkdir()
    return root, f"{http_server.endpoint}/{name}"


@pytest.fixture
def marker(tmp_path: Path):
    path = tmp_path / "marker"
    yield path
    assert not path.exists(), "the attack ran a command"


def test_malicious_pyd_over_http_runs_nothing(site, marker) -> None:
    root, base = site
    evil = pickle.dumps(Reduces(os.system, f"touch {marker}"))
    (root / "evil.tar").write_bytes(tar_bytes({"k.txt": b"hello", "k.pyd": evil}))
    url = f"{base}/evil.tar"
    with pytest.raises(UnsafeInputError) as info:
        list(wds.WebDataset(url, shardshuffle=False).decode())
    err = info.value
    assert (err.url, err.member) == (url, "k.pyd")
    assert "WDS_TRUSTED=1" in str(err) and "trusted=True" in str(err)
    # the same shard without the pickle field still reads: only the member is refused
    (sample,) = wds.WebDataset(url, shardshuffle=False).decode().to_tuple("txt")
    assert sample == ("hello",)


def test_malicious_pth_over_http_runs_nothing(site, marker) -> None:
    root, base = site
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2), "x": Reduces(os.system, f"touch {marker}")}, buf)
    (root / "evil-pth.tar").write_bytes(tar_bytes({"k.pth": buf.getvalue()}))
    url = f"{base}/evil-pth.tar"
    with pytest.raises(UnsafeInputError) as info:
        list(wds.WebDataset(url, shardshuffle=False).decode())
    assert (info.value.url, info.value.member) == (url, "k.pth")
    assert "weights_only=True" in str(info.value)


def test_honest_pickles_and_state_dicts_over_http_decode_by_default(site) -> None:
    root, base = site
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(2, 1).state_dict(), buf)
    members = {"k.pyd": pickle.dumps({"t": torch.arange(3), "n": [1, 2]}), "k.pth": buf.getvalue()}
    (root / "honest.tar").write_bytes(tar_bytes(members))
    (sample,) = wds.WebDataset(f"{base}/honest.tar", shardshuffle=False).decode()
    assert torch.equal(sample["pyd"]["t"], torch.arange(3)) and sample["pyd"]["n"] == [1, 2]
    assert set(sample["pth"]) == {"weight", "bias"}


def test_spec_with_shell_syntax_through_pipe_rewrite_runs_nothing(
    site, marker, monkeypatch
) -> None:
    root, base = site
    (root / "base.tar").write_bytes(tar_bytes({"a.txt": b"x", "b.txt": b"y"}))
    monkeypatch.setenv("WDS_REWRITE", f"{base}/=pipe:curl -s -f {base}/")
    # the rewrite itself is legitimate: an honest spec reads through curl
    (root / "good.yaml").write_text(f"dataset:\n  - shards: '{base}/base.tar'\n")
    assert len(list(wds.WebDataset(f"{base}/good.yaml", shardshuffle=False))) == 2

    attacks = {
        "absolute.yaml": f"{base}/base.tar;touch {marker};#",
        "relative.yaml": f"base.tar;touch {marker};#",
    }
    for name, shard in attacks.items():
        (root / name).write_text(f"dataset:\n  - shards: '{shard}'\n")
        spec_url = f"{base}/{name}"
        with pytest.raises(UnsafeSpecError) as info:
            list(wds.WebDataset(spec_url, shardshuffle=False))
        err = info.value
        assert isinstance(err, UnsafeInputError)
        assert err.url == f"{base}/base.tar;touch {marker};#"
        assert (err.file, err.entry, err.field) == (spec_url, 0, "shards")
        assert "shell syntax" in str(err) and "pipe:curl" in str(err)

    # a spec's own pipe: shard is refused with or without rewrites
    (root / "pipe.yaml").write_text(f"dataset:\n  - shards: 'pipe:touch {marker}'\n")
    with pytest.raises(UnsafeSpecError, match="allow_pipe=True"):
        list(wds.WebDataset(f"{base}/pipe.yaml", shardshuffle=False))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WDS_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cloudwds", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def manifest(*urls: str) -> str:
    doc = {
        "format": "cloudwds-index",
        "version": 1,
        "shards": [{"url": u, "samples": 2, "bytes": 10240} for u in urls],
    }
    return json.dumps(doc)


def test_verify_with_served_manifest_listing_pipe_runs_nothing(site, marker) -> None:
    root, base = site
    (root / "base.tar").write_bytes(tar_bytes({"a.txt": b"x", "b.txt": b"y"}))
    (root / "cloudwds-index.json").write_text(manifest(f"pipe:touch {marker}; cat base.tar"))
    index = f"{base}/cloudwds-index.json"
    result = run_cli("verify", "--manifest", index)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("cloudwds verify: error: refused a pipe: URL read from")
    assert f"manifest {index} shards[0]" in result.stderr
    assert f"pipe:touch {marker}; cat base.tar" in result.stderr


def test_verify_with_served_manifest_and_pipe_rewrite_runs_nothing(site, marker) -> None:
    root, base = site
    (root / "base.tar").write_bytes(tar_bytes({"a.txt": b"x", "b.txt": b"y"}))
    (root / "cloudwds-index.json").write_text(manifest(f"base.tar;touch {marker};#"))
    index = f"{base}/cloudwds-index.json"
    rewrite = {"WDS_REWRITE": f"{base}/=pipe:curl -s -f {base}/"}
    result = run_cli("verify", "--manifest", index, env=rewrite)
    assert result.returncode == 1, result.stderr
    assert "shell syntax" in result.stderr and f"manifest {index} shards[0]" in result.stderr
    # an honest manifest through the same rewrite verifies (and runs curl, as the user asked)
    (root / "cloudwds-index.json").write_text(manifest("base.tar"))
    result = run_cli("verify", "--manifest", index, env=rewrite)
    assert result.returncode == 0, result.stderr
    assert "verified 1 shards, 2 samples: ok" in result.stderr
