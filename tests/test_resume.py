"""Checkpoint and resume: WebLoader, dataset-level states, StatefulDataLoader, elastic resume."""

from __future__ import annotations

import json
import warnings

import pytest
from dist_support import batch_keys, flat_keys, uneven_shards
from resume_check import check_resume

import cloudwds as wds

pytestmark = [
    pytest.mark.filterwarnings("ignore:'set_vital' is deprecated"),
    pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes"),
]


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for var in ("RANK", "WORLD_SIZE", "WDS_SEED"):
        monkeypatch.delenv(var, raising=False)
    return uneven_shards(tmp_path)


def default_mode(data, **kw):
    """Default mode, no shuffle buffer (a buffer's content is not part of the state)."""
    return wds.WebDataset(data.paths, shardshuffle=True, seed=11, **kw)


def exact_mode(data, **kw):
    return wds.WebDataset(data.paths, exact_epoch=True, seed=11, **kw).shuffle(16)


MODES = {"default": default_mode, "exact": exact_mode}


def take(it, k):
    out = []
    for _ in range(k):
        out += batch_keys(next(it))
    return out


def assert_small(state):
    assert len(json.dumps(state)) < 4096


def assert_full_epoch(keys, data):
    dups = sorted(k for k in set(keys) if keys.count(k) > 1)
    assert not dups, f"delivered twice: {dups[:10]}"
    missing = sorted(set(data.keys) - set(keys))
    assert not missing, f"never delivered: {missing[:10]}"
    assert len(keys) == data.total


# -- WebLoader, same topology -----------------------------------------------------------------
def _webloader_stop_resume(make, k, workers_before=2, workers_after=2, gathered=False):
    loader = wds.WebLoader(make(), num_workers=workers_before, batch_size=4)
    it = iter(loader)
    got = take(it, k)
    state = loader.state_dict()
    del it
    assert_small(state)
    state = json.loads(json.dumps(state))  # a checkpoint goes through JSON/pickle
    resumed = wds.WebLoader(make(), num_workers=workers_after, batch_size=4)
    resumed.load_state_dict([state] if gathered else state)
    return got, flat_keys(resumed), resumed


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("k", [0, 1, 4, 9, 12])
def test_webloader_resume_delivers_exactly_the_rest(data, mode, k):
    got, rest, _ = _webloader_stop_resume(lambda: MODES[mode](data), k)
    assert len(got) <= 4 * k
    assert_full_epoch(got + rest, data)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_webloader_next_epoch_after_resume_is_the_following_one(data, mode):
    reference = wds.WebLoader(MODES[mode](data), num_workers=2, batch_size=4)
    epoch0, epoch1 = flat_keys(reference), flat_keys(reference)
    got, rest, resumed = _webloader_stop_resume(lambda: MODES[mode](data), 5)
    assert got == epoch0[: len(got)]
    assert flat_keys(resumed) == epoch1
    assert resumed.state_dict()["epoch"] == 1


def test_webloader_resume_from_a_later_epoch(data):
    reference = wds.WebLoader(exact_mode(data), num_workers=2, batch_size=4)
    epochs = [flat_keys(reference) for _ in range(3)]
    loader = wds.WebLoader(exact_mode(data), num_workers=2, batch_size=4)
    loader.set_epoch(2)
    it = iter(loader)
    got = take(it, 6)
    state = loader.state_dict()
    del it
    assert state["epoch"] == 2 and got == epochs[2][: len(got)]
    resumed = wds.WebLoader(exact_mode(data), num_workers=2, batch_size=4)
    resumed.load_state_dict(state)
    rest = flat_keys(resumed)
    assert_full_epoch(got + rest, data)
    assert resumed.state_dict()["epoch"] == 2


# -- elastic: other worker counts, other world sizes ----------------------------------------------
@pytest.mark.parametrize("before,after", [(2, 3), (3, 1)])
@pytest.mark.parametrize("k", [1, 7, 11])
def test_elastic_resume_on_other_worker_counts(data, before, after, k):
    got, rest, _ = _webloader_stop_resume(
        lambda: exact_mode(data), k, workers_before=before, workers_after=after, gathered=True
    )
    assert_full_epoch(got + rest, data)


def test_elastic_resume_balances_the_rest(data):
    ds = exact_mode(data)
    got, rest, _ = _webloader_stop_resume(lambda: ds.map(_tag), 5, 2, 3, gathered=True)
    assert_full_epoch(got + rest, data)


def _tag(sample):
    return sample


def test_elastic_resume_needs_exact_epochs(data):
    # resumed in the main process: a DataLoader whose workers raised takes 5 s per worker to
    # shut down
    with pytest.raises(ValueError, match="exact_epoch"):
        _webloader_stop_resume(lambda: default_mode(data), 3, 2, 0, gathered=True)


def _run_ranks(make, world_size, monkeypatch, stop=None, states=None, num_workers=2):
    """Each rank in turn (RANK/WORLD_SIZE), ``num_workers`` workers; optionally stop after
    ``stop`` batches and return every rank's state."""
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    keys, out_states, nbatches = [], [], []
    for rank in range(world_size):
        monkeypatch.setenv("RANK", str(rank))
        loader = wds.WebLoader(make(), num_workers=num_workers, batch_size=4)
        if states is not None:
            loader.load_state_dict(states)
        it = iter(loader)
        n = 0
        for batch in it:
            keys += batch_keys(batch)
            n += 1
            if stop is not None and n == stop:
                break
        nbatches.append(n)
        out_states.append(loader.state_dict())
        del it
    return keys, json.loads(json.dumps(out_states)), nbatches


@pytest.mark.parametrize("before,after", [(3, 2), (2, 3), (2, 1)])
def test_elastic_resume_on_other_world_sizes(data, monkeypatch, before, after):
    got, states, _ = _run_ranks(lambda: exact_mode(data), before, monkeypatch, stop=3)
    assert all(len(json.dumps(s)) < 4096 for s in states)
    rest, _, nbatches = _run_ranks(lambda: exact_mode(data), after, monkeypatch, states=states)
    assert_full_epoch(got + rest, data)
    assert len(set(nbatches)) == 1  # the rest is balanced over the new ranks too


def test_elastic_resume_needs_every_rank(data, monkeypatch):
    _, states, _ = _run_ranks(lambda: exact_mode(data), 2, monkeypatch, stop=2)
    with pytest.raises(ValueError, match="all 2 ranks"):
        _run_ranks(lambda: exact_mode(data), 3, monkeypatch, states=states[:1], num_workers=0)


def test_elastic_resume_twice(data, monkeypatch):
    got, states, _ = _run_ranks(lambda: exact_mode(data), 2, monkeypatch, stop=3)
    more, states, _ = _run_ranks(lambda: exact_mode(data), 3, monkeypatch, stop=1, states=states)
    rest, _, _ = _run_ranks(lambda: exact_mode(data), 1, monkeypatch, states=states)
    assert_full_epoch(got + more + rest, data)


def test_same_topology_resume_after_an_elastic_one(data):
    """Checkpoint shortly after an elastic resume, when some workers have delivered nothing yet.

    A worker without a delivered item since the resume must still start at 0 in the resumed
    epoch's universe (the unseen samples), not plan the whole epoch on its own.
    """
    loader = wds.WebLoader(exact_mode(data), num_workers=2, batch_size=4)
    it = iter(loader)
    got = take(it, 3)
    first_state = loader.state_dict()
    del it
    resumed = wds.WebLoader(exact_mode(data), num_workers=3, batch_size=4)
    resumed.load_state_dict([first_state])  # elastic: 2 -> 3 workers
    it = iter(resumed)
    got += take(it, 1)  # only worker 0 of 3 has delivered since the elastic resume
    state = resumed.state_dict()
    del it
    again = wds.WebLoader(exact_mode(data), num_workers=3, batch_size=4)
    again.load_state_dict(state)
    assert_full_epoch(got + flat_keys(again), data)


def test_set_epoch_of_the_checkpoint_after_load_still_resumes(data):
    loader = wds.WebLoader(exact_mode(data), num_workers=2, batch_size=4)
    it = iter(loader)
    got = take(it, 4)
    state = loader.state_dict()
    del it
    resumed = wds.WebLoader(exact_mode(data), num_workers=2, batch_size=4)
    resumed.load_state_dict(state)
    resumed.set_epoch(0)  # the usual training loop: set_epoch(epoch) before every pass
    assert_full_epoch(got + flat_keys(resumed), data)


def test_set_epoch_of_another_epoch_after_load_starts_it_whole(data):
    """A checkpoint taken at the end of epoch 0, resumed with ``set_epoch(1)``.

    Bug (pipeline.py, ``DataPipeline._apply_resume``): the staged positions of epoch 0 are
    applied to epoch 1 (whose plan differs), so epoch 1 skips what epoch 0 had delivered —
    here all of it. A staged state must only resume its own epoch (``world.epoch ==
    state["epoch"]``); ``set_epoch`` to another epoch should drop it.
    """
    reference = wds.WebLoader(exact_mode(data), num_workers=2, batch_size=4)
    flat_keys(reference)
    epoch1 = flat_keys(reference)
    loader = wds.WebLoader(exact_mode(data), num_workers=2, batch_size=4)
    flat_keys(loader)
    state = loader.state_dict()  # end of epoch 0
    resumed = wds.WebLoader(exact_mode(data), num_workers=2, batch_size=4)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert flat_keys(resumed) == epoch1


def test_after_an_elastic_resume_the_next_epoch_is_whole_again(data):
    """The resumed epoch's universe (its unseen samples) must not leak into the next epoch."""
    got, rest, resumed = _webloader_stop_resume(lambda: exact_mode(data), 5, 2, 0, gathered=True)
    assert_full_epoch(got + rest, data)
    nxt = flat_keys(resumed)
    assert_full_epoch(nxt, data)


# -- dataset-level states (what StatefulDataLoader calls inside the workers) -----------------------
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("k", [0, 1, 17, 60, 109])
def test_dataset_state_in_one_process(data, mode, k):
    ds = MODES[mode](data)
    it = iter(ds)
    got = [next(it)["__key__"] for _ in range(k)]
    state = ds.state_dict()
    assert_small(state)
    again = MODES[mode](data)
    again.load_state_dict(json.loads(json.dumps(state)))
    rest = [s["__key__"] for s in again]
    assert_full_epoch(got + rest, data)


# -- torchdata StatefulDataLoader -----------------------------------------------------------------
def stateful_loader(ds, num_workers=2):
    from torchdata.stateful_dataloader import StatefulDataLoader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StatefulDataLoader(ds, num_workers=num_workers, batch_size=4)


def stateful_exact(data):
    return exact_mode(data, batch_size=4)  # the DataLoader batches: tell the plan


def stateful_default(data):
    return default_mode(data)


STATEFUL = {"default": stateful_default, "exact": stateful_exact}


def _stateful_stop_resume(make, k, num_workers=2):
    loader = stateful_loader(make(), num_workers)
    it = iter(loader)
    got = take(it, k)
    state = loader.state_dict()
    del it
    assert_small(state)
    resumed = stateful_loader(make(), num_workers)
    resumed.load_state_dict(state)
    return got, resumed


@pytest.mark.parametrize("mode", sorted(STATEFUL))
@pytest.mark.parametrize("k", [1, 6, 11])
def test_stateful_dataloader_resume(data, mode, k):
    got, resumed = _stateful_stop_resume(lambda: STATEFUL[mode](data), k)
    rest = flat_keys(resumed)
    assert_full_epoch(got + rest, data)


@pytest.mark.parametrize("mode", sorted(STATEFUL))
def test_stateful_dataloader_next_epoch_after_resume(data, mode):
    """Every worker of the resumed loader must move on to the same next epoch."""
    reference = stateful_loader(STATEFUL[mode](data))
    flat_keys(reference)
    epoch1 = flat_keys(reference)
    got, resumed = _stateful_stop_resume(lambda: STATEFUL[mode](data), 3)
    flat_keys(resumed)
    assert flat_keys(resumed) == epoch1


@pytest.mark.parametrize(
    "mode",
    ["exact", "default"],
)
def test_stateful_dataloader_resume_twice(data, mode):
    """A checkpoint taken right after a resume, before every worker delivered, is still exact.

    torchdata snapshots each worker's ``dataset.state_dict()`` right after ``iter(dataset)``;
    until a worker yields, that must report the position just loaded. Bug (default mode,
    sources.py, ``_ShardExpander.load_state_dict``): it stages the position but
    ``state_dict()`` keeps reporting ``_position`` (0, 0) until the first sample, so a
    checkpoint then rewinds that worker to the start of the epoch. Fix: also set
    ``self._position = self._resume`` there.
    """
    got, resumed = _stateful_stop_resume(lambda: STATEFUL[mode](data), 3)
    it = iter(resumed)
    got += take(it, 1)  # only worker 0 has delivered since the resume
    state = resumed.state_dict()
    del it
    again = stateful_loader(STATEFUL[mode](data))
    again.load_state_dict(state)
    assert_full_epoch(got + flat_keys(again), data)


@pytest.mark.parametrize("mode", sorted(STATEFUL))
def test_stateful_dataloader_state_at_the_start_of_an_epoch(data, mode):
    """In one process, a state taken right after ``iter()`` of epoch 1 resumes all of epoch 1.

    Bug (pipeline.py, ``DataPipeline.__iter__``): the stateful source's position is only reset
    when the source generator first runs, so between ``iter()`` and the first item
    ``state_dict()`` pairs the new epoch number with the previous epoch's end position (and a
    resume delivers nothing). Fix: when no resume is staged, reset the source eagerly in
    ``__iter__`` (e.g. ``source.load_state_dict({})``, with the sources.py fix above so the
    reported position follows).
    """
    loader = stateful_loader(STATEFUL[mode](data), num_workers=0)
    flat_keys(loader)
    it = iter(loader)
    state = loader.state_dict()
    epoch1 = flat_keys(it)
    resumed = stateful_loader(STATEFUL[mode](data), num_workers=0)
    resumed.load_state_dict(state)
    assert flat_keys(resumed) == epoch1


def test_webloader_state_records_the_dataset_seed(data):
    """Bug (loader.py, ``WebLoader.state_dict``): it records the loader's own ``seed`` argument
    (0 here) instead of the dataset's (11), whose orders the positions refer to."""
    loader = wds.WebLoader(exact_mode(data), num_workers=0, batch_size=4)
    next(iter(loader))
    assert loader.state_dict()["seed"] == 11


# -- check_resume over every stateful stage and source, every stop point ------------------------
SMALL = (2, 3, 1, 4)  # ten samples in four shards: two per DataLoader worker


def _small_pipelines(root):
    small = uneven_shards(root, SMALL)
    spec = root / "mix.yaml"
    spec.write_text(
        "dataset:\n"
        "  - shards: sh-{00..01}.tar\n"
        "    weight: 1\n"
        "  - shards: sh-{02..03}.tar\n"
        "    weight: 2\n"
    )
    return small, {
        "tar": lambda: wds.WebDataset(small.paths, shardshuffle=True, seed=3),
        "exact": lambda: wds.WebDataset(small.paths, exact_epoch=True, seed=3),
        "exact-shuffle-window": lambda: wds.WebDataset(
            small.paths, exact_epoch=True, seed=3
        ).shuffle(3),
        "resampled": lambda: wds.WebDataset(small.paths, resampled=True, seed=3).with_epoch(7),
        "mixed-spec": lambda: wds.WebDataset(str(spec), seed=3),
        "mixed-spec-resampled": lambda: wds.WebDataset(
            str(spec), resampled=True, seed=3
        ).with_epoch(9),
        "exact-with_epoch": lambda: wds.WebDataset(
            small.paths, exact_epoch=True, seed=3
        ).with_epoch(13),
        "with_epoch": lambda: wds.WebDataset(small.paths, shardshuffle=True, seed=3).with_epoch(13),
        "repeat": lambda: wds.WebDataset(small.paths, seed=3).repeat(2).map(_tag),
    }


SMALL_MODES = [
    "tar",
    "exact",
    "exact-shuffle-window",
    "resampled",
    "mixed-spec",
    "mixed-spec-resampled",
    "exact-with_epoch",
    "with_epoch",
    "repeat",
]


@pytest.mark.parametrize("mode", SMALL_MODES)
def test_check_resume_in_one_process(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _, pipelines = _small_pipelines(tmp_path)
    reference = check_resume(pipelines[mode], [0])
    check_resume(pipelines[mode], range(1, len(reference) + 1))


@pytest.mark.parametrize("mode", SMALL_MODES)
def test_check_resume_with_two_workers(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _, pipelines = _small_pipelines(tmp_path)
    make = pipelines[mode]
    reference = check_resume(make, [0], num_workers=2)
    check_resume(make, range(1, len(reference) + 1), num_workers=2)
