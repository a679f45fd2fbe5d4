"""cloudwds.utils: webdataset's utils module (worker info, seeds, repeats, enforce_security)."""

from __future__ import annotations

import pytest

from cloudwds import security, utils


def test_repeatedly_counts():
    assert len(list(utils.repeatedly(range(3), nepochs=7))) == 21
    assert len(list(utils.repeatedly(range(3), nbatches=10))) == 10
    assert len(list(utils.repeatedly([[[1, 1], [2, 2]]] * 3, nsamples=10))) == 5
    assert list(utils.repeatedly([], nepochs=None)) == []  # an empty source does not spin
    assert list(utils.repeatedly0([1, 2, 3], nepochs=2, nbatches=2)) == [1, 2, 1, 2]


def test_worker_info_from_the_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("WORKER", "3")
    monkeypatch.setenv("NUM_WORKERS", "4")
    assert utils.pytorch_worker_info() == (1, 2, 3, 4)
    assert utils.pytorch_worker_seed() == 1003


def test_make_seed_is_stable_and_31_bits():
    assert utils.make_seed("a", 1) == utils.make_seed("a", 1) != utils.make_seed("a", 2)
    assert 0 <= utils.make_seed("x") < 2**31


def test_enforce_security_property_follows_secure_mode():
    assert utils.enforce_security is False
    utils.enforce_security = True
    try:
        assert security.is_secure() is True and utils.enforce_security is True
    finally:
        utils.enforce_security = False
    assert security.is_secure() is False


def test_obsolete_and_braces(tmp_path, monkeypatch):
    @utils.obsolete(reason="gone")
    def old():
        return 1

    with pytest.raises(utils.ObsoleteException, match="gone"):
        old()
    monkeypatch.setenv("ALLOW_OBSOLETE", "1")
    assert old() == 1
    (tmp_path / "a.tar").touch()
    (tmp_path / "b.tgz").touch()
    assert sorted(
        p.rsplit("/", 1)[1] for p in utils.glob_with_braces(f"{tmp_path}/*.{{tar,tgz}}")
    ) == [
        "a.tar",
        "b.tgz",
    ]
    assert utils.fnmatch_with_braces("x.tgz", "*.{tar,tgz}")
