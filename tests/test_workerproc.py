"""cloudwds.workerproc: DataLoader workers freeze their inherited heap; nothing imports per epoch."""

from __future__ import annotations

import gc
import sys

import pytest
import torch  # noqa: F401  (DataLoader workers: the forked ones this module is about)
from conftest import make_shards

import cloudwds as wds
from cloudwds.workerproc import in_dataloader_worker, settle_worker

_AT_START: set[str] = set()


def _remember_modules(_worker_id: int) -> None:
    _AT_START.clear()
    _AT_START.update(sys.modules)


def _probe(sample: dict) -> tuple:
    """What this process looks like while it makes the sample."""
    new = sorted(set(sys.modules) - _AT_START)
    return gc.get_freeze_count(), in_dataloader_worker(), new, sample["jpg"].shape


@pytest.fixture
def jpegs(tmp_path):
    return make_shards(tmp_path, 2, 6, fields=("jpg", "cls")).spec


def probes(spec, num_workers, **kw):
    ds = wds.WebDataset(spec, shardshuffle=False).decode("rgb8").map(_probe)
    loader = wds.WebLoader(
        ds, num_workers=num_workers, batch_size=None, worker_init_fn=_remember_modules, **kw
    )
    return list(loader)


def test_workers_freeze_the_heap_they_inherit(jpegs):
    assert gc.get_freeze_count() == 0
    found = probes(jpegs, 2)
    assert len(found) == 12
    for frozen, in_worker, _new, shape in found:
        assert in_worker and list(shape) == [8, 10, 3]
        assert frozen > 10_000  # the parent's objects (torch is imported): out of the GC's walk
    assert gc.get_freeze_count() == 0  # the main process is left alone


def test_freeze_can_be_turned_off(jpegs, monkeypatch):
    monkeypatch.setenv("WDS_GC_FREEZE", "0")
    assert {frozen for frozen, *_ in probes(jpegs, 2)} == {0}


def test_not_a_worker_no_freeze():
    settle_worker()
    assert not in_dataloader_worker() and gc.get_freeze_count() == 0


def test_a_worker_imports_nothing_for_its_first_images(jpegs):
    # the storage layer, the prefetcher and the image decoders are imported where the dataset
    # is built, so forked workers inherit them instead of importing them every epoch
    for _ in range(2):
        found = probes(jpegs, 2)
        assert len(found) == 12
        assert [new for _f, _w, new, _s in found] == [[]] * 12


def _frozen(_sample: dict) -> int:
    return gc.get_freeze_count()


def test_indexed_dataset_workers_freeze_too(tmp_path):
    from torch.utils.data import DataLoader

    from cloudwds.index import build_index
    from cloudwds.indexed import IndexedWebDataset

    shards = make_shards(tmp_path, 2, 5, fields=("cls",))
    build_index(shards.spec, offsets=True).save()
    ds = IndexedWebDataset(shards.spec).map(_frozen)
    counts = [int(c) for c in DataLoader(ds, batch_size=None, num_workers=2)]
    assert len(counts) == 10 and min(counts) > 10_000
    assert [int(c) for c in DataLoader(ds, batch_size=None)] == [0] * 10  # in this process
