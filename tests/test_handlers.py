"""Error policies at open, tar, decode and map time, end to end through WebDataset."""

from __future__ import annotations

import logging
import os
import tarfile

import pytest
from conftest import image_array, jpeg_bytes, make_shards, write_tar

import cloudwds as wds


@pytest.fixture
def broken(tmp_path):
    """Shards 0-3 of 6 samples (jpg + cls); shard 1 has a corrupt jpg in sample 2, shard 2 is
    cut inside sample 4's jpg, and one URL names a missing shard."""
    shards = make_shards(tmp_path, 4, 6, fields=("jpg", "cls"))
    # corrupt image: valid tar, bad JPEG bytes
    members = []
    for key in shards.keys[1]:
        jpg = b"\xff\xd8 not really a jpeg" if key == "s1-0002" else shards.values[key]["jpg"]
        members += [(f"{key}.cls", shards.values[key]["cls"]), (f"{key}.jpg", jpg)]
    write_tar(shards.paths[1], members)
    # truncated: cut in the middle of sample 4's jpg data
    with tarfile.open(shards.paths[2]) as tar:
        cut_member = tar.getmember("s2-0004.jpg")
        cut = cut_member.offset_data + cut_member.size // 2
    with open(shards.paths[2], "rb") as f:
        data = f.read(cut)
    with open(shards.paths[2], "wb") as f:
        f.write(data)
    missing = os.path.join(tmp_path, "shard-missing.tar")
    urls = [shards.paths[0], missing, shards.paths[1], shards.paths[2], shards.paths[3]]
    return shards, urls


def build(urls, handler):
    return (
        wds.WebDataset(urls, shardshuffle=False, handler=handler)
        .decode("rgb8", handler=handler)
        .to_tuple("__key__", "jpg", "cls", handler=handler)
    )


def test_warn_and_continue_skips_exactly_the_broken_items(broken, caplog, recwarn):
    shards, urls = broken
    with caplog.at_level(logging.WARNING, "cloudwds"):
        got = list(build(urls, wds.warn_and_continue))
    expected = (
        shards.keys[0]
        + [k for k in shards.keys[1] if k != "s1-0002"]
        + shards.keys[2][:4]  # samples before the cut (sample 3 is complete, so it is kept)
        + shards.keys[3]
    )
    assert [k for k, _, _ in got] == expected
    assert len(got) == 6 + 5 + 4 + 6
    assert all(img.shape == (8, 10, 3) for _, img, _ in got)
    messages = [r.getMessage() for r in caplog.records if r.name == "cloudwds"]
    assert any("shard-missing.tar" in m for m in messages)
    assert any("s1-0002.jpg" in m and shards.paths[1] in m for m in messages)
    assert any("s2-0004.jpg" in m and "Truncated" in m for m in messages)
    assert len(messages) == 3  # each error reported once ...
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # ... and only once


def test_ignore_and_continue_is_silent(broken, recwarn):
    shards, urls = broken
    got = list(build(urls, wds.ignore_and_continue))
    assert len(got) == 21
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_ignore_and_stop_ends_at_the_first_error(broken):
    shards, urls = broken
    got = list(build(urls, wds.ignore_and_stop))
    assert [k for k, _, _ in got] == shards.keys[0]  # the missing shard ends the stream
    got = list(build(urls[2:], wds.ignore_and_stop))
    assert [k for k, _, _ in got] == ["s1-0000", "s1-0001"]  # the bad image ends the stream


def test_warn_and_stop(broken, caplog):
    shards, urls = broken
    with caplog.at_level(logging.WARNING, "cloudwds"):
        got = list(build(urls, wds.warn_and_stop))
    assert (
        [r.getMessage() for r in caplog.records if r.name == "cloudwds"]
        == [r.getMessage() for r in caplog.records if "shard-missing" in r.getMessage()]
        != []
    )
    assert [k for k, _, _ in got] == shards.keys[0]


def test_reraise_is_the_default_and_errors_are_typed(broken):
    shards, urls = broken
    with pytest.raises(wds.StorageError) as info:
        list(build(urls, wds.reraise_exception))
    assert "shard-missing.tar" in str(info.value)
    with pytest.raises(wds.DecodingError) as info:
        list(wds.WebDataset(shards.paths[1], shardshuffle=False).decode("rgb8"))
    assert info.value.url == shards.paths[1] and info.value.member == "s1-0002.jpg"
    assert shards.paths[1] in str(info.value) and "s1-0002.jpg" in str(info.value)
    ds = wds.WebDataset(shards.paths[2], shardshuffle=False)
    with pytest.raises(wds.TruncatedShardError) as info:
        list(ds)
    assert info.value.url == shards.paths[2] and info.value.member == "s2-0004.jpg"
    assert shards.paths[2] in str(info.value) and "s2-0004.jpg" in str(info.value)


def test_map_handler_through_the_fluent_interface(shards, caplog):
    def fail_on_three(sample):
        if sample["__key__"].endswith("3"):
            raise ValueError(f"bad {sample['__key__']}")
        return sample

    ds = wds.WebDataset(shards.spec, shardshuffle=False)
    with pytest.raises(ValueError, match="bad s0-0003"):
        list(ds.map(fail_on_three))
    with caplog.at_level(logging.WARNING, "cloudwds"):
        got = list(ds.map(fail_on_three, handler=wds.warn_and_continue))
    assert sum("ValueError: bad s" in r.getMessage() for r in caplog.records) == 4
    assert len(got) == 40 - 4


def test_missing_to_tuple_key_names_url_and_key(shards):
    ds = wds.WebDataset(shards.paths[0], shardshuffle=False).to_tuple("txt", "jpg")
    with pytest.raises(wds.MissingKeyError) as info:
        list(ds)
    assert info.value.url == shards.paths[0] and info.value.member == "s0-0000"
    assert shards.paths[0] in str(info.value) and "s0-0000" in str(info.value)
    assert "'jpg'" in str(info.value)


def test_duplicate_member_with_handlers(tmp_path):
    img = jpeg_bytes(image_array(4, 4))
    path = write_tar(
        tmp_path / "dup.tar",
        [("a.jpg", img), ("b.jpg", img), ("b.jpg", img), ("c.jpg", img)],
    )
    with pytest.raises(wds.DuplicateMemberError) as info:
        list(wds.WebDataset(path, shardshuffle=False))
    assert info.value.member == "b.jpg" and path in str(info.value)
    got = list(wds.WebDataset(path, shardshuffle=False, handler=wds.ignore_and_continue))
    assert [s["__key__"] for s in got] == ["a"]  # the rest of the shard is skipped
