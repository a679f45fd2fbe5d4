"""cloudwds.offline.parts and the reshard plan: what makes per-shard jobs resumable (no Dask)."""

from __future__ import annotations

import os

from cloudwds.commands._dask import is_address
from cloudwds.commands.reshard import plan_outputs
from cloudwds.offline import PartStore, default_job_dir, identity_matches, part_key


def test_parts_are_published_whole_and_read_back(tmp_path):
    store = PartStore(str(tmp_path / "job"))
    assert store.load() == {}  # no directory yet
    store.write(part_key("s3://b/x.tar"), {"url": "s3://b/x.tar", "samples": 3})
    store.write(part_key("s3://b/y.tar"), {"url": "s3://b/y.tar", "samples": 4})
    (tmp_path / "job" / "torn.json").write_text("{not json")
    assert sorted(os.listdir(tmp_path / "job")) == sorted(
        [part_key("s3://b/x.tar") + ".json", part_key("s3://b/y.tar") + ".json", "torn.json"]
    )  # no temporary names left behind
    assert store.load() == {
        part_key("s3://b/x.tar"): {"url": "s3://b/x.tar", "samples": 3},
        part_key("s3://b/y.tar"): {"url": "s3://b/y.tar", "samples": 4},
    }
    assert list(store.load([part_key("s3://b/y.tar")])) == [part_key("s3://b/y.tar")]
    store.remove()
    assert not (tmp_path / "job").exists()


def test_identity_and_job_dir_rules(tmp_path, monkeypatch):
    recorded = {"url": "s3://b/x.tar", "size": 10, "etag": "a"}
    assert identity_matches(recorded, dict(recorded))
    assert not identity_matches(recorded, {**recorded, "etag": "b"})  # replaced since
    assert identity_matches(recorded, {"url": "s3://b/x.tar"})  # unlisted store: trusted
    assert not identity_matches(None, {"url": "s3://b/x.tar"})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a = default_job_dir("index", ["x.tar"], "sha256", True)
    assert a == default_job_dir("index", ["x.tar"], "sha256", True)
    assert a != default_job_dir("index", ["x.tar"], None, True)
    assert a.startswith(str(tmp_path / "cloudwds" / "jobs" / "index-"))


def test_reshard_plan_cuts_where_the_sequential_writer_cuts():
    plan = plan_outputs(["a", "b", "c"], [3, 0, 6], 4, "o-%d", start=7)
    assert plan == [
        ("o-7", [("a", 0, 3, 3), ("c", 0, 1, 6)]),
        ("o-8", [("c", 1, 5, 6)]),
        ("o-9", [("c", 5, 6, 6)]),
    ]
    assert plan_outputs(["a"], [0], 4, "o-%d") == []


def test_dask_address_or_shard_url():
    assert is_address("tcp://10.0.0.1:8786") and is_address("host:8786") and is_address("local")
    assert not is_address("s3://b/x-{0..3}.tar") and not is_address("x.tar")
