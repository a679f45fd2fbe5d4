"""Recipe and run: each iteration owns its position; checkpoints are validated by resume.py."""

from __future__ import annotations

import json
import logging
import os

import pytest
from dist_support import uneven_shards

import cloudwds as wds
from cloudwds.stagebase import StatefulStage


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for var in ("RANK", "WORLD_SIZE", "WDS_SEED"):
        monkeypatch.delenv(var, raising=False)
    return uneven_shards(tmp_path)


def default_mode(data, seed=5):
    return wds.WebDataset(data.paths, shardshuffle=True, seed=seed)


def exact_mode(data, seed=5):
    return wds.WebDataset(data.paths, exact_epoch=True, seed=seed).shuffle(8)


def spec_mode(data, seed=5):
    """A dataset spec mixing two collections (its MixedSource run owns the mixing position)."""
    spec = os.path.join(os.path.dirname(data.paths[0]), "mix.yaml")
    with open(spec, "w") as f:
        f.write(
            "dataset:\n"
            "  - shards: sh-{00..03}.tar\n"
            "    weight: 1\n"
            "  - shards: sh-{04..07}.tar\n"
            "    weight: 2\n"
        )
    return wds.WebDataset(spec, seed=seed)


def resampled_mode(data, seed=5):
    return wds.WebDataset(data.paths, resampled=True, seed=seed).with_epoch(60)


MODES = {
    "default": default_mode,
    "exact": exact_mode,
    "mixed-spec": spec_mode,
    "resampled": resampled_mode,
}


def keys(samples):
    return [s["__key__"] for s in samples]


def take(it, k):
    return [next(it)["__key__"] for _ in range(k)]


def resume_rest(make, state):
    ds = make()
    ds.load_state_dict(json.loads(json.dumps(state)))
    return keys(ds)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_two_live_iterators_of_one_dataset_report_their_own_state(data, mode):
    def make():
        return MODES[mode](data)

    epoch0 = keys(make())
    ds = make()
    first = iter(ds)
    ds.set_epoch(0)  # the second iterator reads the same epoch
    second = iter(ds)
    got1 = take(first, 7)
    got2 = take(second, 30)
    got1 += take(first, 2)
    assert got1 == epoch0[:9] and got2 == epoch0[:30]
    s1, s2 = first.state_dict(), second.state_dict()
    assert s1 != s2
    # the dataset reports the most recently created run
    assert ds.state_dict() == s2
    assert got1 + resume_rest(make, s1) == epoch0
    assert got2 + resume_rest(make, s2) == epoch0


@pytest.mark.parametrize("mode", sorted(MODES))
def test_map_copies_do_not_share_positions(data, mode):
    def make():
        return MODES[mode](data)

    epoch0 = keys(make())
    base = make()
    a = base.map(lambda s: {**s, "a": 1})
    b = base.map(lambda s: {**s, "b": 1})
    ita, itb = iter(a), iter(b)
    got_a = take(ita, 3)
    got_b = take(itb, 50)
    assert a.state_dict() == ita.state_dict() and b.state_dict() == itb.state_dict()
    assert a.state_dict() != b.state_dict()
    assert got_a + resume_rest(make, a.state_dict()) == epoch0
    assert got_b + resume_rest(make, b.state_dict()) == epoch0
    # the original never iterated: it reports the start of its next epoch
    assert got_a + resume_rest(make, ita.state_dict()) == epoch0
    assert base.state_dict()["source"] == base.stateful_source().fresh_state()


def test_copies_hold_their_own_stateful_stage(data):
    base = default_mode(data)
    copy = base.map(lambda s: s)
    stage = base.stateful_source()
    assert isinstance(stage, StatefulStage)
    assert copy.stateful_source() is not stage
    assert "_last_run" not in vars(stage)  # the recipe holds no position


def test_state_right_after_iter_is_the_loaded_position(data):
    def make():
        return default_mode(data)

    epoch0 = keys(make())
    ds = make()
    it = iter(ds)
    got = take(it, 20)
    state = it.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state  # staged: reported before the next iteration
    it2 = iter(resumed)
    assert it2.state_dict() == state  # and by the run until it moves on
    assert got + keys(it2) == epoch0


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_checkpoint_with_another_seed_is_refused(data, mode):
    ds = MODES[mode](data, seed=5)
    it = iter(ds)
    take(it, 4)
    state = ds.state_dict()
    assert state["seed"] == 5 and state["format"] == 2
    other = MODES[mode](data, seed=6)
    with pytest.raises(ValueError, match="saved with seed 5.*seed is 6"):
        other.load_state_dict(state)


def test_an_unknown_checkpoint_format_is_refused(data):
    ds = default_mode(data)
    state = {**ds.state_dict(), "format": 99}
    with pytest.raises(ValueError, match="format 99"):
        default_mode(data).load_state_dict(state)


def test_states_of_different_epochs_are_refused_together(data):
    ds = default_mode(data)
    state = ds.state_dict()
    later = {**state, "epoch": 1, "rank": 1}
    with pytest.raises(ValueError, match="disagree on epoch"):
        default_mode(data).load_state_dict([state, later])


def test_webloader_state_with_another_seed_is_refused(data):
    loader = wds.WebLoader(default_mode(data, seed=5), num_workers=0, batch_size=4)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="seed"):
        wds.WebLoader(default_mode(data, seed=7), num_workers=0, batch_size=4).load_state_dict(
            state
        )


# -- exact mode honours handler= ---------------------------------------------------------------
def corrupt(path):
    """Cut a shard in the middle of a member: reading it raises a truncation error."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2 + 100)


def test_exact_mode_default_handler_raises_on_a_corrupt_shard(data):
    ds = wds.WebDataset(data.paths, exact_epoch=True, seed=5, shardshuffle=False)
    corrupt(data.paths[3])  # 40 samples, counted before the damage
    with pytest.raises(wds.ShardError):
        keys(ds)


def test_exact_mode_warn_and_continue_skips_a_corrupt_shard(data, caplog):
    ds = wds.WebDataset(
        data.paths,
        exact_epoch=True,
        seed=5,
        shardshuffle=False,
        handler=wds.warn_and_continue,
    )
    reference = keys(ds)
    corrupt(data.paths[3])
    ds.set_epoch(0)
    with caplog.at_level(logging.WARNING, "cloudwds"):  # warn_ policies log (issue 13)
        got = keys(ds)
    assert "TruncatedShardError" in caplog.text
    lost = [k for k in reference if k not in got]
    assert lost and all(k.startswith("s03-") for k in lost)  # only the damaged shard's tail
    assert [k for k in reference if k in got] == got  # everything else, in the same order
    assert len(got) >= data.total - 40


def test_exact_mode_position_counts_samples_lost_to_a_skipped_shard(data, caplog):
    ds = wds.WebDataset(
        data.paths,
        exact_epoch=True,
        seed=5,
        shardshuffle=False,
        handler=wds.warn_and_continue,
    )
    corrupt(data.paths[3])
    it = iter(ds)
    with caplog.at_level(logging.WARNING, "cloudwds"):  # warn_ policies log (issue 13)
        got = keys(it)
    assert "TruncatedShardError" in caplog.text
    assert it.state_dict()["source"]["delivered"] == data.total  # the plan's whole share
    assert len(got) < data.total
