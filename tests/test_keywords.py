"""cloudwds.keywords: a misspelt keyword names the public function and the likely intended one."""

from __future__ import annotations

import pytest

import cloudwds as wds
from cloudwds.keywords import check_keywords, unexpected_keyword


def test_webdataset_typo_names_webdataset_and_suggests_the_parameter() -> None:
    with pytest.raises(TypeError) as info:
        wds.WebDataset("a.tar", shardshufle=True)
    assert str(info.value) == (
        "WebDataset() got an unexpected keyword argument 'shardshufle'; "
        "did you mean 'shardshuffle'?"
    )
    assert "StorageConfig" not in str(info.value)


def test_webdataset_typo_of_a_storage_keyword() -> None:
    with pytest.raises(TypeError, match=r"'retrys'; did you mean 'retries'\?"):
        wds.WebDataset("a.tar", retrys=3)


def test_no_suggestion_when_nothing_is_close() -> None:
    with pytest.raises(TypeError) as info:
        wds.WebDataset("a.tar", zzz=1)
    assert str(info.value) == "WebDataset() got an unexpected keyword argument 'zzz'"


def test_forwarded_storage_keywords_still_work() -> None:
    ds = wds.WebDataset("a.tar", retries=2, timeout=3.0, cache_dir=False)
    assert (ds.storage.retry.retries, ds.storage.retry.timeout) == (2, 3.0)


def test_check_keywords_excludes_names_the_owner_sets() -> None:
    def target(*, a: int = 0, b: int = 0) -> None: ...

    def public(x: int, *, color: int = 0, **kw: int) -> None: ...

    check_keywords("f", ["a"], target, public)
    with pytest.raises(TypeError, match=r"f\(\) got an unexpected keyword argument 'b'"):
        check_keywords("f", ["b"], target, public, exclude=["b"])
    with pytest.raises(TypeError, match="did you mean 'color'"):
        check_keywords("f", ["colour"], target, public)
    assert "did you mean 'alpha'" in str(unexpected_keyword("g", "alhpa", ["alpha", "beta"]))
