"""Offline shard jobs on a Dask LocalCluster: bucket to bucket on the moto S3 endpoint.

Dask workers are separate processes: the storage options travel explicitly, and the sample
functions are module-level (pickled by reference, imported by the workers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

import cloudwds as wds
from cloudwds.offline import ShardResult, map_shards

from .servers import S3Endpoint
from .shards import ShardSet, make_shards

SIZES = [3, 12, 7, 1, 9]
FAILING = "shard-000002.tar"


def shout(sample: dict[str, Any]) -> dict[str, Any]:
    """The job: upper-case the text, keep the rest."""
    return {
        "__key__": sample["__key__"],
        "txt": sample["txt"].upper(),
        "cls": sample["cls"],
        "bin": sample["bin"],
    }


def shout_but_fail_on_one_shard(sample: dict[str, Any]) -> dict[str, Any]:
    """The job with a bug hitting one shard midway (after its first sample was written)."""
    if sample["__url__"].endswith(FAILING) and sample["__key__"] != FIRST_OF_FAILING:
        raise RuntimeError(f"cannot process {sample['__key__']}")
    return shout(sample)


FIRST_OF_FAILING = f"sample{sum(SIZES[:2]):06d}"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


class Job:
    def __init__(self, server: S3Endpoint):
        self.server = server
        self.shards: ShardSet = make_shards(len(SIZES), SIZES, bin_size=64)
        self.src, self.dst = server.new_bucket("src"), server.new_bucket("dst")
        self.shards.upload(server.fs, f"{self.src}/in")
        self.inputs = self.shards.pattern(server.url(f"{self.src}/in"))
        self.outputs = self.shards.pattern(server.url(f"{self.dst}/out"))
        self.opts = {
            "storage_options": server.storage_options,
            "output_storage_options": server.storage_options,
        }

    def run(self, fn: Any, client: Any) -> list[ShardResult]:
        return map_shards(fn, self.inputs, self.outputs, client=client, progress=False, **self.opts)

    def written(self) -> list[str]:
        """Every object in the output bucket (temporary or partial ones included)."""
        self.server.fs.invalidate_cache()
        return sorted(p.rsplit("/", 1)[1] for p in self.server.fs.find(self.dst))

    def read_back(self) -> dict[str, dict[str, Any]]:
        ds = wds.WebDataset(
            self.shards.urls(self.server.url(f"{self.dst}/out")),
            storage_options=self.server.storage_options,
        )
        return {s["__key__"]: s for s in ds}


@pytest.fixture
def job(s3_server: S3Endpoint) -> Job:
    return Job(s3_server)


def test_bucket_to_bucket_then_rerun_skips_everything(job: Job, client: Any) -> None:
    results = job.run(shout, client)
    assert [r.input.rsplit("/", 1)[1] for r in results] == job.shards.names  # input order
    assert [(r.samples_in, r.samples_out, r.skipped) for r in results] == [
        (n, n, False) for n in SIZES
    ]
    assert job.written() == job.shards.names
    out = job.read_back()
    assert sorted(out) == sorted(job.shards.keys)  # the same samples
    for sample in job.shards.samples:
        got = out[sample.key]
        assert got["txt"] == sample.members["txt"].upper()
        assert got["cls"] == sample.members["cls"] and got["bin"] == sample.members["bin"]

    info = {n: job.server.fs.info(f"{job.dst}/out/{n}")["ETag"] for n in job.shards.names}
    assert all(job.server.get_count(f"{job.src}/in/{n}") > 0 for n in job.shards.names)
    job.server.reset_counts()
    again = job.run(shout, client)
    assert all(r.skipped for r in again) and len(again) == len(SIZES)
    assert [job.server.get_count(f"{job.src}/in/{n}") for n in job.shards.names] == [0] * len(
        SIZES
    )  # no input was read again
    job.server.fs.invalidate_cache()
    assert {n: job.server.fs.info(f"{job.dst}/out/{n}")["ETag"] for n in job.shards.names} == info


def test_a_failing_shard_leaves_no_output_and_a_rerun_completes_it(job: Job, client: Any) -> None:
    with pytest.raises(RuntimeError, match="cannot process") as raised:
        job.run(shout_but_fail_on_one_shard, client)
    assert any("1 of 5 shards failed" in note for note in raised.value.__notes__)
    expected = [n for n in job.shards.names if n != FAILING]
    assert job.written() == expected  # the others are complete, the failed one is absent
    results = job.run(shout, client)
    assert [r.skipped for r in results] == [n != FAILING for n in job.shards.names]
    redone = results[job.shards.names.index(FAILING)]
    assert redone.samples_in == redone.samples_out == SIZES[2]
    assert job.written() == job.shards.names
    assert sorted(job.read_back()) == sorted(job.shards.keys)


def test_own_local_cluster(job: Job) -> None:
    """Without a client, map_shards starts (and stops) a LocalCluster for the job."""
    results = map_shards(
        shout, job.inputs, job.outputs, progress=False, overwrite=False, **job.opts
    )
    assert sum(r.samples_out for r in results) == sum(SIZES)
    assert job.written() == job.shards.names


# -- index on Dask: the same manifest as the threaded build, resumable per shard ----------------


def _manifest_doc(manifest: Any, base: str) -> dict[str, Any]:
    return manifest.to_json(base)


def test_index_on_dask_equals_the_single_machine_index(tmp_path: Any, client: Any) -> None:
    from cloudwds.index import build_index
    from cloudwds.offline import index_shards

    shards = make_shards(len(SIZES), SIZES, bin_size=64)
    shards.write_dir(tmp_path / "data")
    pattern = shards.pattern(str(tmp_path / "data"))
    single = build_index(pattern, offsets=True, workers=2)
    idx = {p.name: p.read_bytes() for p in (tmp_path / "data").glob("*.idx")}
    for p in (tmp_path / "data").glob("*.idx"):
        p.unlink()
    job = tmp_path / "job"
    on_dask = build_index(pattern, offsets=True, client=client, job_dir=str(job))
    assert on_dask == single  # every entry: counts, sizes, sha256, offsets URL
    base = str(tmp_path / "data")
    assert _manifest_doc(on_dask, base) == _manifest_doc(single, base)
    assert {p.name: p.read_bytes() for p in (tmp_path / "data").glob("*.idx")} == idx
    assert not job.exists()  # parts removed once the manifest is complete
    # the standalone entry point (its own LocalCluster) saves the manifest where it is told
    out = index_shards(pattern, offsets=True, workers=1, output=str(tmp_path / "m.json"))
    assert out == single
    assert json.loads((tmp_path / "m.json").read_text())["total_samples"] == sum(SIZES)


def test_index_on_dask_rerun_reads_only_the_shards_left(
    s3_server: S3Endpoint, client: Any, tmp_path: Any
) -> None:
    """A truncated shard fails the first run; the others are recorded. After the shard is
    replaced and one part deleted, the re-run reads exactly those two shards (request log)."""
    from cloudwds.errors import TruncatedShardError
    from cloudwds.index import build_index
    from cloudwds.offline import PartStore, part_key
    from cloudwds.storage import StorageConfig

    shards = make_shards(len(SIZES), SIZES, bin_size=64)
    bucket = s3_server.new_bucket("idx")
    shards.upload(s3_server.fs, f"{bucket}/d")
    urls = shards.urls(s3_server.url(f"{bucket}/d"))
    storage = StorageConfig.resolve(
        storage_options=s3_server.storage_options, cache_dir=False, rewrites=""
    )
    single = build_index(urls, storage, offsets=True)
    broken = shards.names[2]
    s3_server.fs.pipe_file(
        f"{bucket}/d/{broken}", shards.data[broken][: len(shards.data[broken]) // 2 + 100]
    )
    job = str(tmp_path / "job")
    with pytest.raises(TruncatedShardError) as raised:
        build_index(urls, storage, offsets=True, client=client, job_dir=job)
    assert any("1 of 5 shards failed: " + urls[2] in n for n in raised.value.__notes__)
    parts = PartStore(job, storage)
    assert set(parts.load()) == {part_key(u) for u in urls if u != urls[2]}

    s3_server.fs.pipe_file(f"{bucket}/d/{broken}", shards.data[broken])  # repaired
    os.remove(parts.url_of(part_key(urls[0])))  # as if the driver died before recording it
    s3_server.reset_counts()
    again = build_index(urls, storage, offsets=True, client=client, job_dir=job)
    reads = [s3_server.get_count(f"{bucket}/d/{n}") for n in shards.names]
    assert [r > 0 for r in reads] == [True, False, True, False, False]
    assert again == single
    assert not os.path.exists(job)


# -- the commands with --dask ADDRESS (the module's cluster) give the single-machine results ----


def _cli(argv: list[str], capsys: Any) -> tuple[int, str]:
    from cloudwds.cli import main

    code = main(argv)
    return code, capsys.readouterr().out


def test_cli_verify_on_dask_reports_what_the_threaded_verify_reports(
    tmp_path: Any, client: Any, capsys: Any
) -> None:
    shards = make_shards(len(SIZES), SIZES, bin_size=64)
    shards.write_dir(tmp_path / "d")
    pattern = shards.pattern(str(tmp_path / "d"))
    address = client.scheduler.address
    assert _cli(["-q", "index", pattern, "-o", str(tmp_path / "single.json")], capsys)[0] == 0
    assert _cli(["-q", "index", "--dask", address, pattern], capsys)[0] == 0
    written = (tmp_path / "d" / "cloudwds-index.json").read_text()
    assert written == (tmp_path / "single.json").read_text().replace('"d/', '"')
    cut = tmp_path / "d" / shards.names[1]
    cut.write_bytes(shards.data[shards.names[1]][:3000])
    grown = tmp_path / "d" / shards.names[3]
    grown.write_bytes(shards.data[shards.names[3]] + bytes(512))  # still reads, but changed
    single = _cli(["-q", "verify", "--manifest", "--", pattern], capsys)
    job = str(tmp_path / "job")
    on_dask = _cli(
        ["-q", "verify", pattern, "--manifest", "--dask", address, "--job-dir", job], capsys
    )
    assert single == on_dask
    assert single[0] == 1 and f"FAIL {cut}: TruncatedShardError" in single[1]
    assert [line.split(": ")[1] for line in single[1].splitlines()] == [
        "TruncatedShardError",
        "sha256 mismatch",
        "size mismatch",
    ]
    assert os.path.exists(job)  # problems: kept, so that a re-run re-verifies only those


def test_cli_verify_on_dask_rerun_reads_only_the_shards_with_problems(
    s3_server: S3Endpoint, client: Any, tmp_path: Any, capsys: Any
) -> None:
    shards = make_shards(len(SIZES), SIZES, bin_size=64)
    bucket = s3_server.new_bucket("ver")
    shards.upload(s3_server.fs, f"{bucket}/d")
    pattern = shards.pattern(s3_server.url(f"{bucket}/d"))
    broken = shards.names[2]
    s3_server.fs.pipe_file(f"{bucket}/d/{broken}", shards.data[broken][:3000])
    opts = ["-q", "--storage-options", json.dumps(s3_server.storage_options)]
    job = str(tmp_path / "job")
    argv = [*opts, "verify", pattern, "--dask", client.scheduler.address, "--job-dir", job]
    code, out = _cli(argv, capsys)
    assert code == 1 and out.startswith(f"FAIL {s3_server.url(f'{bucket}/d/{broken}')}: ")
    assert len(out.splitlines()) == 1
    s3_server.fs.pipe_file(f"{bucket}/d/{broken}", shards.data[broken])  # repaired
    s3_server.reset_counts()
    assert _cli(argv, capsys) == (0, "")
    reads = [s3_server.get_count(f"{bucket}/d/{n}") for n in shards.names]
    assert [r > 0 for r in reads] == [False, False, True, False, False]
    assert not os.path.exists(job)  # all clean: the next run is a full check again


def test_cli_reshard_on_dask_writes_the_single_machine_outputs(
    tmp_path: Any, client: Any, capsys: Any
) -> None:
    shards = make_shards(len(SIZES), SIZES, bin_size=64)
    shards.write_dir(tmp_path / "d")
    pattern = shards.pattern(str(tmp_path / "d"))
    address = client.scheduler.address
    one = str(tmp_path / "one-%04d.tar")
    two = str(tmp_path / "two-%04d.tar")
    code, single = _cli(["-q", "reshard", pattern, "-o", one, "--maxcount", "5"], capsys)
    assert code == 0
    argv = ["-q", "reshard", pattern, "-o", two, "--maxcount", "5", "--dask", address]
    code, on_dask = _cli(argv, capsys)  # no manifest: a counting pass first
    assert code == 0
    assert on_dask.replace("two-", "one-") == single
    assert [line.split("\t")[1] for line in single.splitlines()] == ["5"] * 6 + ["2"]

    def samples(path: str) -> list[list[tuple[str, bytes]]]:
        out = []
        for line in path.splitlines():
            ds = wds.WebDataset(line.split("\t")[0])
            out.append([(s["__key__"], s["bin"]) for s in ds])
        return out

    assert samples(on_dask) == samples(single)
    # with a manifest and offsets: no counting pass, and pieces inside a shard are seeked to
    assert _cli(["-q", "index", pattern], capsys)[0] == 0
    argv3 = [*argv[:4], str(tmp_path / "three-%04d.tar"), *argv[5:]]
    code, seeked = _cli(argv3, capsys)
    assert code == 0 and samples(seeked) == samples(single)
    # a re-run after losing two outputs writes only those two
    os.remove(str(tmp_path / "two-0001.tar"))
    os.remove(str(tmp_path / "two-0006.tar"))
    before = {p: os.stat(p).st_mtime_ns for p in map(str, tmp_path.glob("two-*.tar"))}
    assert _cli(argv, capsys)[1] == on_dask
    after = {p: os.stat(p).st_mtime_ns for p in map(str, tmp_path.glob("two-*.tar"))}
    assert {p: t for p, t in after.items() if p in before} == before
    assert sorted(set(after) - set(before)) == [
        str(tmp_path / "two-0001.tar"),
        str(tmp_path / "two-0006.tar"),
    ]
