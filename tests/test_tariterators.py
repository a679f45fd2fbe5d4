"""cloudwds.tariterators: webdataset's tar pipeline pieces, for both generations of clients."""

from __future__ import annotations

import pytest
from conftest import make_shards, write_tar

from cloudwds import tariterators as ti


def test_base_plus_ext_and_valid_sample():
    assert ti.base_plus_ext("dir/a.b.JPG") == ("dir/a", "b.JPG")
    assert ti.base_plus_ext("dir.x/a.jpg") == ("dir.x/a", "jpg")
    assert ti.base_plus_ext("noext") == (None, None)
    assert ti.base_plus_ext(".hidden") == (None, None)
    assert ti.valid_sample({"__key__": "a"}) and not ti.valid_sample({})
    assert not ti.valid_sample(None) and not ti.valid_sample({"__key__": "a", "__bad__": True})


def group_by_keys_02x(data, keys=ti.base_plus_ext, lcase=True, suffixes=None, handler=None):
    """A 0.2.x-era grouper as clients copied it: reads ``fname`` from every item."""
    current = None
    for filesample in data:
        fname, value = filesample["fname"], filesample["data"]
        prefix, suffix = keys(fname)
        if prefix is None:
            continue
        if lcase:
            suffix = suffix.lower()
        if current is None or prefix != current["__key__"] or suffix in current:
            if ti.valid_sample(current):
                yield current
            current = {"__key__": prefix, "__url__": filesample["__url__"]}
        if suffixes is None or suffix in suffixes:
            current[suffix] = value
    if ti.valid_sample(current):
        yield current


def test_both_generations_of_groupers_run_on_the_expander(tmp_path):
    shards = make_shards(tmp_path, 2, 3)
    items = [{"url": p} for p in shards.paths]

    def members():
        return ti.tar_file_expander(ti.url_opener(items))

    old = list(group_by_keys_02x(members()))  # would KeyError on a {} end-of-shard marker
    new = list(ti.group_by_keys(members()))
    assert [s["__key__"] for s in old] == [s["__key__"] for s in new] == shards.all_keys
    assert new[0]["txt"] == shards.values["s0-0000"]["txt"]
    assert new[0]["__url__"] == shards.paths[0]
    # webdataset 1.0's marker on request, and our grouper accepts it
    marked = list(ti.tar_file_expander(ti.url_opener(items), eof_value={}))
    assert sum(1 for m in marked if m == {}) == 2
    assert [s["__key__"] for s in ti.group_by_keys(iter(marked))] == shards.all_keys


def test_group_by_keys_splits_on_shard_change_and_refuses_duplicates(tmp_path):
    a = write_tar(tmp_path / "a.tar", [("k.txt", b"1")])
    b = write_tar(tmp_path / "b.tar", [("k.cls", b"2")])
    samples = list(ti.tarfile_samples([{"url": str(a)}, {"url": str(b)}]))
    assert [(s["__url__"], sorted(s)) for s in samples] == [
        (str(a), ["__key__", "__local_path__", "__url__", "txt"]),
        (str(b), ["__key__", "__local_path__", "__url__", "cls"]),
    ]
    dup = [
        {"fname": "k.txt", "data": b"1", "__url__": "u"},
        {"fname": "k.txt", "data": b"2", "__url__": "u"},
    ]
    with pytest.raises(ValueError, match="duplicate"):
        list(ti.group_by_keys(iter(dup)))
    assert list(ti.group_by_keys(iter(dup), handler=lambda exn: True)) == [
        {"__key__": "k", "__url__": "u", "txt": b"1"}
    ]


def test_tar_file_iterator_select_rename_and_meta(tmp_path):
    path = write_tar(tmp_path / "m.tar", [("__meta__", b"m"), ("a.txt", b"x"), ("a.cls", b"1")])
    with open(path, "rb") as stream:
        names = [m["fname"] for m in ti.tar_file_iterator(stream)]
    assert names == ["a.txt", "a.cls"]
    with open(path, "rb") as stream:
        out = list(
            ti.tar_file_iterator(
                stream,
                rename_files=lambda n: n.replace(".txt", ".text"),
                select_files=lambda n: not n.endswith(".cls"),
            )
        )
    assert out == [{"fname": "a.text", "data": b"x"}]


def test_url_opener_errors_go_to_the_handler(tmp_path):
    missing = {"url": str(tmp_path / "missing.tar")}
    with pytest.raises(FileNotFoundError):
        list(ti.url_opener([missing]))
    seen = []
    assert list(ti.url_opener([missing], handler=lambda exn: seen.append(exn) or True)) == []
    assert isinstance(seen[0], FileNotFoundError) and seen[0].args[-1] == missing["url"]


def test_truncated_member_goes_to_the_handler(tmp_path):
    whole = write_tar(tmp_path / "w.tar", [("a.txt", b"x" * 3000), ("b.txt", b"y")])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(open(whole, "rb").read()[:2000])
    import tarfile

    with pytest.raises(tarfile.ReadError):
        list(ti.tarfile_samples([{"url": str(cut)}]))
    assert list(ti.tarfile_samples([{"url": str(cut)}], handler=lambda exn: False)) == []


def test_shardlist_expands_braces():
    assert [d["url"] for d in ti.shardlist("s-{0..2}.tar")] == ["s-0.tar", "s-1.tar", "s-2.tar"]
    assert sorted(d["url"] for d in ti.shardlist(["b", "a"], shuffle=True)) == ["a", "b"]
