"""Random access on real endpoints: byte-exact samples, one Range GET per sample, coalesced
neighbours, and a cache that serves the second epoch without any request."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cloudwds
from cloudwds.index import build_index
from cloudwds.indexed import IndexedWebDataset, ShardOffsets
from cloudwds.storage import StorageConfig

from .servers import Endpoint
from .shards import make_shards
from .storage_support import (
    DIRECT,
    ROUTED,
    Backend,
    assert_same,
    clean_wds_env,  # noqa: F401 - fixture
    expected_rows,
    make_backend,
    rows,
)

pytestmark = pytest.mark.usefixtures("clean_wds_env")

SHARDS = make_shards(3, [6, 4, 5], bin_size=3000, seed=5)


@pytest.fixture(params=DIRECT + ROUTED)
def backend(request: pytest.FixtureRequest) -> Backend:
    return make_backend(request, request.param)


def upload_indexed(backend: Backend) -> tuple[str, str]:
    """Upload the shards and their offsets files; returns ``(base, pattern)``."""
    base = backend.upload(SHARDS)
    pattern = backend.pattern(SHARDS, base)
    if backend.name == "http" or backend.gateway is not None:
        # a static server takes no uploads, and AIStore routing is for reads (writes would go
        # to the real cloud): the offsets files are written beside the shards directly
        for name in SHARDS.names:
            url = backend.url(f"{base}/{name}")
            table = ShardOffsets.from_idx(_local_idx(SHARDS.data[name]), url)
            backend.server.write(f"{base}/{name[:-4]}.idx", table.to_idx())
    else:  # cloudwds index writes them next to the shards, on the store itself
        manifest = build_index(
            pattern, StorageConfig.resolve(**backend.kwargs), offsets=True, checksum=None
        )
        assert all(s.offsets and s.offsets.endswith(".idx") for s in manifest.shards)
    backend.reset_counts()
    return base, pattern


def _local_idx(data: bytes) -> bytes:
    import tempfile

    from cloudwds.index import scan_shard_offsets

    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        f.write(data)
        f.flush()
        _, table = scan_shard_offsets(f.name)
    assert table is not None
    return table.to_idx()


def data_gets(server: Endpoint, base: str) -> list[tuple[str, str | None]]:
    """``(object, Range header)`` of every data GET on the shards (not the .idx files)."""
    out = []
    for r in server.proxy.requests:
        obj = server.object_of(r)
        if obj is not None and obj.startswith(base) and obj.endswith(".tar"):
            out.append((obj, r.range))
    return out


def test_every_sample_by_index_is_exact(backend: Backend) -> None:
    base, pattern = upload_indexed(backend)
    ds = IndexedWebDataset(pattern, **backend.kwargs)
    assert len(ds) == 15
    got = rows(ds[i] for i in range(len(ds)))
    assert_same(got, expected_rows(SHARDS, backend.urls(SHARDS, base)))
    streamed = rows(cloudwds.WebDataset(pattern, shardshuffle=False, **backend.kwargs))
    assert got == streamed


def test_getitem_reads_only_the_samples_byte_range(backend: Backend) -> None:
    base, pattern = upload_indexed(backend)
    ds = IndexedWebDataset(pattern, **backend.kwargs)
    backend.reset_counts()
    for index in (7, 0, 14):
        shard, number = ds.locate(index)
        start, end = ds.tables[shard].span(number)
        before = len(data_gets(backend.server, base))
        sample = ds[index]
        gets = data_gets(backend.server, base)[before:]
        name = SHARDS.names[shard]
        assert gets == [(f"{base}/{name}", f"bytes={start}-{end - 1}")], gets
        assert sample["bin"] == SHARDS.per_shard[name][number].members["bin"]
    assert ds.reader.bytes_read == sum(
        ds.tables[s].span(n)[1] - ds.tables[s].span(n)[0] for s, n in map(ds.locate, (7, 0, 14))
    )


def test_neighbours_are_fetched_with_one_request(backend: Backend) -> None:
    base, pattern = upload_indexed(backend)
    ds = IndexedWebDataset(pattern, **backend.kwargs)
    ds[0]  # the per-shard size check is done; count the batch alone
    backend.reset_counts()
    batch = ds.__getitems__([1, 2, 3, 8])
    assert [s["__key__"] for s in batch] == [SHARDS.keys[i] for i in (1, 2, 3, 8)]
    gets = data_gets(backend.server, base)
    first, last = ds.tables[0].span(1)[0], ds.tables[0].span(3)[1]
    shard1 = ds.tables[1].span(2)
    assert sorted(gets) == sorted(
        [
            (f"{base}/{SHARDS.names[0]}", f"bytes={first}-{last - 1}"),
            (f"{base}/{SHARDS.names[1]}", f"bytes={shard1[0]}-{shard1[1] - 1}"),
        ]
    )


def test_cache_serves_the_second_epoch_without_requests(backend: Backend, tmp_path) -> None:
    base, pattern = upload_indexed(backend)
    cache = str(tmp_path / "cache")
    ds = IndexedWebDataset(pattern, cache_dir=cache, **backend.kwargs)
    order = list(range(len(ds)))
    random.Random(1).shuffle(order)
    first = {i: ds[i] for i in order}
    for name in SHARDS.names:  # each shard downloaded once, whole
        assert backend.get_count(f"{base}/{name}") == 1, name
    # a second epoch, in another process's dataset (fresh reader) and another order
    fresh = IndexedWebDataset(pattern, cache_dir=cache, **backend.kwargs)
    backend.reset_counts()
    random.Random(2).shuffle(order)
    second = {i: fresh[i] for i in order}
    assert backend.server.proxy.count() == 0  # no request of any kind
    assert second == first
    assert_same(
        rows(second[i] for i in range(len(ds))),
        expected_rows(SHARDS, backend.urls(SHARDS, base)),
    )


# ---------------------------------------------------------------------------------------------
# a global shuffle under torchrun: 2 ranks x 2 workers, resumed on 3 ranks
# ---------------------------------------------------------------------------------------------

SIZES = [9, 30, 4, 21, 16]  # 80 samples: 40 per rank on 2 ranks
SCRIPT = Path(__file__).with_name("indexed_train.py")


def torchrun(nproc: int, config: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    path = tmp / f"{config['run']}.json"
    path.write_text(json.dumps(config))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(SCRIPT.parent.parent), os.environ.get("PYTHONPATH")])
        ),
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(nproc), str(SCRIPT), str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return [
        json.loads((tmp / "out" / f"{config['run']}-rank{r}.json").read_text())
        for r in range(nproc)
    ]


def test_global_shuffle_under_torchrun_resumes_on_three_ranks(tmp_path: Path) -> None:
    shards = make_shards(len(SIZES), SIZES, bin_size=16)
    paths = [str(p) for p in shards.write_dir(tmp_path / "shards")]
    build_index(paths, offsets=True).save(str(tmp_path / "shards" / "cloudwds-index.json"))
    (tmp_path / "out").mkdir()
    state = str(tmp_path / "state.json")
    base = {"shards": paths, "seed": 3, "out": str(tmp_path / "out")}
    # 2 ranks: epoch 0 whole, then epoch 1 stopped after 3 batches (12 samples) per rank
    two = torchrun(
        2,
        {**base, "run": "two", "passes": [{"epoch": 0}, {"epoch": 1, "stop": 3, "save": state}]},
        tmp_path,
    )
    whole = [[k for b in r["passes"][0]["batches"] for k in b] for r in two]
    assert [len(r["passes"][0]["batches"]) for r in two] == [10, 10]  # equal batch counts
    assert sorted(whole[0] + whole[1]) == sorted(shards.keys)  # every sample once
    seen = [k for r in two for b in r["passes"][1]["batches"] for k in b]
    assert len(seen) == 24
    # 3 ranks resume epoch 1: exactly the 56 samples not yet seen, 19/19/19 with one repeat
    three = torchrun(
        3, {**base, "run": "three", "passes": [{"resume": state, "epoch": 1}]}, tmp_path
    )
    rest = [[k for b in r["passes"][0]["batches"] for k in b] for r in three]
    assert [len(r) for r in rest] == [19, 19, 19]
    assert [len(r["passes"][0]["batches"]) for r in three] == [5, 5, 5]
    flat = [k for r in rest for k in r]
    assert set(flat) == set(shards.keys) - set(seen)
    assert len(flat) - len(set(flat)) == 1  # the padding DistributedSampler also adds
