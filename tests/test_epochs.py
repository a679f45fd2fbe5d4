"""Epoch numbers reaching DataLoader workers (re-created, persistent, spawned) and resampling."""

from __future__ import annotations

import collections
import pickle

import pytest
from dist_support import flat_keys, uneven_shards
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

import cloudwds as wds
from cloudwds.epochs import EpochCounter


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for var in ("RANK", "WORLD_SIZE", "WDS_SEED"):
        monkeypatch.delenv(var, raising=False)
    return uneven_shards(tmp_path)


def default_mode(data):
    return wds.WebDataset(data.paths, shardshuffle=True, seed=5).shuffle(20, initial=5)


def exact_mode(data):
    return wds.WebDataset(data.paths, exact_epoch=True, seed=5).shuffle(16)


MODES = {"default": default_mode, "exact": exact_mode}


def keys_of(loader):
    return flat_keys(loader)


# -- the counter ---------------------------------------------------------------------------------
def test_counter_take_advances_per_slot_and_set_resets_all():
    c = EpochCounter(3)
    assert c.peek() == 3 and c.take(0) == 3 and c.take(0) == 4 and c.peek(0) == 5
    assert c.take(1) == 3  # slots are independent
    c.set(10)
    assert [c.peek(w) for w in range(4)] == [10] * 4


def test_counter_pickle_is_an_independent_copy():
    c = EpochCounter(2)
    c.take(0)
    copy = pickle.loads(pickle.dumps(c))
    assert copy.peek(0) == 3 and copy.peek(1) == 2
    copy.take(0)
    assert c.peek(0) == 3  # the original did not move


class _CounterInWorker(IterableDataset):
    """Creates a counter inside each worker and reports what it holds."""

    def __iter__(self):
        counter = EpochCounter(5)
        counter.take(get_worker_info().id)
        counter.set(9)  # inside a worker: this worker's slot only
        yield get_worker_info().id, [counter.peek(w) for w in range(3)], counter.peek()


def test_counter_inside_a_worker():
    got = sorted(DataLoader(_CounterInWorker(), num_workers=2, batch_size=None))
    assert [(w, list(slots), int(own)) for w, slots, own in got] == [
        (0, [9, 5, 5], 9),
        (1, [5, 9, 5], 9),
    ]


# -- re-created workers: plain torch DataLoader -------------------------------------------------
@pytest.mark.parametrize("mode", sorted(MODES))
def test_plain_dataloader_epochs_advance_without_set_epoch(data, mode):
    ds = MODES[mode](data)
    loader = DataLoader(ds, num_workers=2, batch_size=4)
    epochs = [keys_of(loader) for _ in range(3)]
    for keys in epochs:
        assert sorted(keys) == sorted(data.keys)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]
    ds.set_epoch(1)
    assert keys_of(loader) == epochs[1]  # set_epoch replays an epoch exactly
    assert keys_of(loader) == epochs[2]  # ...and the next one follows
    fresh = MODES[mode](data)
    assert keys_of(DataLoader(fresh, num_workers=2, batch_size=4)) == epochs[0]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_persistent_workers_see_set_epoch(data, mode):
    reference = DataLoader(MODES[mode](data), num_workers=2, batch_size=4)
    expected = [keys_of(reference) for _ in range(3)]
    ds = MODES[mode](data)
    loader = DataLoader(ds, num_workers=2, batch_size=4, persistent_workers=True)
    assert [keys_of(loader) for _ in range(3)] == expected  # advance by themselves
    ds.set_epoch(1)
    assert keys_of(loader) == expected[1]  # set in the main process, seen by live workers
    ds.set_epoch(0)
    assert keys_of(loader) == expected[0]


def test_webloader_set_epoch_and_epoch_in_state(data):
    ds = exact_mode(data)
    loader = wds.WebLoader(ds, num_workers=2, batch_size=4)
    first, second = keys_of(loader), keys_of(loader)
    assert first != second and sorted(first) == sorted(second)
    assert loader.state_dict()["epoch"] == 1
    loader.set_epoch(0)
    assert keys_of(loader) == first
    assert loader.state_dict()["epoch"] == 0
    assert ds.epoch == 1  # the loader shares the dataset's counter


def test_spawned_workers_get_the_epoch(data):
    ds = exact_mode(data)
    ds.set_epoch(4)
    expected = keys_of(DataLoader(exact_mode(data), num_workers=0, batch_size=4))
    ds2 = exact_mode(data)
    ds2.set_epoch(4)
    forked_epoch4 = keys_of(DataLoader(ds2, num_workers=2, batch_size=4))
    assert sorted(expected) == sorted(forked_epoch4)
    loader = DataLoader(
        ds, num_workers=2, batch_size=4, multiprocessing_context="spawn", persistent_workers=True
    )
    assert keys_of(loader) == forked_epoch4
    assert keys_of(loader) != forked_epoch4  # epoch 5
    ds.set_epoch(4)
    assert keys_of(loader) == forked_epoch4


# -- resampling -----------------------------------------------------------------------------------
def _url_and_worker(item):
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return item["url"], -1 if info is None else info.id


def test_resampled_without_replacement_visits_every_shard_once_per_cycle(data):
    n = len(data.paths)
    source = wds.ResampledShards(data.paths, nshards=3 * n, replacement=False)
    ds = wds.DataPipeline(source, wds.map(_url_and_worker), seed=2)
    loader = DataLoader(ds, num_workers=2, batch_size=None)
    first = list(loader)
    per_worker = collections.defaultdict(list)
    for url, worker in first:
        per_worker[int(worker)].append(url)
    assert set(per_worker) == {0, 1}
    for urls in per_worker.values():
        assert len(urls) == 3 * n
        for cycle in range(3):
            assert sorted(urls[cycle * n : (cycle + 1) * n]) == sorted(data.paths)
        assert urls[:n] != urls[n : 2 * n]  # each cycle is a new permutation
    assert per_worker[0] != per_worker[1]  # workers draw their own streams
    assert list(loader) != first  # a new epoch draws anew


def test_resampled_with_epoch_counts_per_worker(data):
    ds = wds.WebDataset(data.paths, resampled=True, seed=1).with_epoch(30)
    loader = DataLoader(ds, num_workers=2, batch_size=None)
    first = [s["__key__"] for s in loader]
    assert len(first) == 60  # 30 per worker
    second = [s["__key__"] for s in loader]
    assert len(second) == 60 and second != first
