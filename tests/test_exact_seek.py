"""Resume by seeking: a resumed exact epoch opens its first shard at the owed sample's offset.

The offsets come from the shard's ``.idx`` file (``cloudwds index`` / ``build_index(offsets=
True)``); without one, or with a stale one, the shard is read from its start and the samples
already delivered are discarded. Either way the remainder is the same.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
from conftest import make_shards, write_tar

import cloudwds as wds
from cloudwds.errors import ShardNotFoundError
from cloudwds.index import build_index
from cloudwds.indexed.offsets import ShardOffsets, offsets_url
from cloudwds.sources.seek import open_at_sample, sample_offset
from cloudwds.storage import StorageConfig

FIELDS = ("txt", "cls", "json")


@pytest.fixture
def shards(tmp_path, monkeypatch):
    """3 shards x 5 samples with their .idx files next to them."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # remembered sample counts
    for var in ("RANK", "WORLD_SIZE", "WDS_SEED", "WDS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    os.makedirs(tmp_path / "data")
    made = make_shards(tmp_path / "data", 3, 5, fields=FIELDS)
    build_index(made.paths, StorageConfig(), checksum=None, offsets=True)
    assert all(os.path.exists(offsets_url(p)) for p in made.paths)
    return made


def make(paths, window):
    ds = wds.WebDataset(paths, exact_epoch=True, shardshuffle=False, seed=3)
    return ds.shuffle(window) if window > 1 else ds


def without_idx(paths):
    """Move the .idx files away (returns a function putting them back)."""
    moved = [(offsets_url(p), offsets_url(p) + ".away") for p in paths]
    for a, b in moved:
        os.rename(a, b)

    def restore():
        for a, b in moved:
            os.rename(b, a)

    return restore


def resume(paths, window, k):
    """Take ``k`` samples, checkpoint through JSON, resume afresh: (head, rest, resumed run)."""
    it = iter(make(paths, window))
    head = [next(it) for _ in range(k)]
    state = json.loads(json.dumps(it.state_dict()))
    del it
    resumed = make(paths, window)
    resumed.load_state_dict(state)
    run = iter(resumed)
    rest = list(run)
    return head, rest, run.source


@pytest.mark.parametrize("window", [1, 4])
def test_every_stop_point_gives_the_read_and_discard_remainder(shards, window):
    reference = list(make(shards.paths, window))
    assert len(reference) == 15
    restore = without_idx(shards.paths)
    discarded = {k: resume(shards.paths, window, k) for k in range(len(reference) + 1)}
    restore()
    seeked_somewhere = 0
    for k in range(len(reference) + 1):
        head, rest, source = resume(shards.paths, window, k)
        old_head, old_rest, old_source = discarded[k]
        assert old_source.seeks == []  # no .idx: read from the start
        assert head + rest == reference, k  # every field, __url__ and __local_path__
        assert rest == old_rest, k
        seeked_somewhere += bool(source.seeks)
        for url, sample, offset in source.seeks:
            table = ShardOffsets.from_idx(open(offsets_url(url), "rb").read(), url)
            assert sample > 0 and offset == sample_offset(table, sample)
            assert offset < os.path.getsize(url)
    # window 1: the 12 stops inside a shard; window 4: the 12 stops whose window starts inside
    # a shard (windows start at samples 0, 4, 8 and 12 of the epoch: 4, 4, 3 stops + the end)
    assert seeked_somewhere == 12


def test_seek_never_reads_the_bytes_before_the_offset(shards):
    reference = list(make(shards.paths, 1))
    it = iter(make(shards.paths, 1))
    head = [next(it) for _ in range(3)]
    state = json.loads(json.dumps(it.state_dict()))
    del it
    first = shards.paths[0]
    st = os.stat(first)
    with open(first, "r+b") as f:  # the first sample's header becomes an end-of-archive block
        f.write(bytes(512))
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))  # the remembered count still holds

    def rest_after(state):
        resumed = make(shards.paths, 1)
        resumed.load_state_dict(state)
        run = iter(resumed)
        return list(run), run.source

    rest, source = rest_after(state)
    assert source.seeks == [(first, 3, sample_offset(_table(first), 3))]
    assert head + rest == reference
    restore = without_idx(shards.paths)
    try:  # the read-and-discard path does read them, and finds the shard broken
        with pytest.raises(wds.ShardError, match="end-of-archive block at offset 0"):
            rest_after(state)
    finally:
        restore()


def _table(url):
    with open(offsets_url(url), "rb") as f:
        return ShardOffsets.from_idx(f.read(), url)


def test_offset_is_the_end_of_the_previous_samples_data(shards):
    table = _table(shards.paths[1])
    assert sample_offset(table, 0) == 0
    for s in range(1, len(table)):
        offset = sample_offset(table, s)
        assert offset % 512 == 0
        assert offset == table.offsets[table.starts[s]] - 512  # plain ustar: one header block
    seeked = open_at_sample(shards.paths[1], StorageConfig(), 2, expected_samples=5)
    assert seeked is not None
    with seeked.opened as opened:
        assert opened.local_path == shards.paths[1]
        data = opened.stream.read()
    with open(shards.paths[1], "rb") as f:
        assert data == f.read()[seeked.offset :]  # the rest of the shard, byte for byte
    assert seeked.bytes_read == os.path.getsize(shards.paths[1]) - seeked.offset


def test_no_seek_for_the_first_sample_or_without_an_index(shards, tmp_path):
    assert open_at_sample(shards.paths[0], StorageConfig(), 0) is None
    restore = without_idx(shards.paths)
    assert open_at_sample(shards.paths[0], StorageConfig(), 2) is None
    restore()
    gz = tmp_path / "x.tar.gz"
    gz.write_bytes(b"")
    assert open_at_sample(os.fspath(gz), StorageConfig(), 2) is None


def _regenerate(path, grow):
    """Rewrite the shard in place: the same keys, longer member data (offsets move)."""
    shard = int(os.path.basename(path).split("-")[1].split(".")[0])
    members = []
    for i in range(grow):
        key = f"s{shard}-{i:04d}"
        members += [(f"{key}.{f}", (key * 300 + f).encode()) for f in FIELDS]
    write_tar(path, members)
    os.utime(path, ns=(1, 1))  # another mtime: remembered counts are recounted


@pytest.mark.parametrize("samples", [5, 7], ids=["same-count", "more-samples"])
def test_a_stale_index_falls_back_to_reading_from_the_start(shards, samples, caplog):
    _regenerate(shards.paths[0], samples)
    reference = list(make(shards.paths, 1))
    assert len(reference) == 10 + samples
    with caplog.at_level(logging.WARNING, logger="cloudwds"):
        head, rest, source = resume(shards.paths, 1, 2)
    assert head + rest == reference
    # same count: seeked, the key at the offset is wrong; more samples: the .idx count is
    assert len(source.seeks) == (1 if samples == 5 else 0)
    assert "stale" in caplog.text and shards.paths[0] in caplog.text


def test_a_gone_shard_fails_as_without_offsets(shards):
    it = iter(make(shards.paths, 1))
    [next(it) for _ in range(7)]  # stop inside shard 1
    state = json.loads(json.dumps(it.state_dict()))
    os.remove(shards.paths[1])
    resumed = make(shards.paths, 1)
    resumed.load_state_dict(state)
    with pytest.raises(ShardNotFoundError, match="shard-000001.tar"):
        list(resumed)


def test_resume_with_two_dataloader_workers_gives_the_rest(shards):
    from resume_check import check_resume

    reference = check_resume(lambda: make(shards.paths, 1), [3, 7, 11], num_workers=2)
    assert sorted(reference) == sorted(k for keys in shards.keys for k in keys)
