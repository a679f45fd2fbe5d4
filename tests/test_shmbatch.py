"""cloudwds.shmbatch: worker batches through reused shared-memory slots (WebLoader(shared_batches=True))."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from conftest import make_shards

import cloudwds as wds
from cloudwds import shmbatch
from cloudwds.shmbatch import SharedBatch, SharedCollate

IMAGE = (32, 32, 4)  # float32: 16 KiB a sample, 256 KiB a batch of 16 (above min_bytes)


def to_arrays(sample):
    """An 'image' whose values derive from the class, a uint8 mask, and the class."""
    cls = int(sample["cls"])
    image = np.arange(np.prod(IMAGE), dtype=np.float32).reshape(IMAGE) + cls * 1000
    mask = np.full((64, 64), cls % 251, dtype=np.uint8)
    return image, mask, cls


def to_dict(sample):
    image, mask, cls = to_arrays(sample)
    return {"image": image, "mask": mask, "cls": cls, "key": sample["__key__"]}


@pytest.fixture
def spec(tmp_path):
    return make_shards(tmp_path, 4, 40, fields=("cls",)).spec


def pipeline(spec, fn=to_arrays, batch=16):
    return wds.WebDataset(spec, shardshuffle=False).map(fn).batched(batch)


def epoch(loader):
    return [
        [c.clone() if isinstance(c, torch.Tensor) else c for c in b]
        if isinstance(b, list)
        else {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
        for b in loader
    ]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y)
        pairs = zip(x, y, strict=True) if isinstance(x, list) else ((x[k], y[k]) for k in x)
        for u, v in pairs:
            if isinstance(u, torch.Tensor):
                assert u.dtype == v.dtype and torch.equal(u, v)
            else:
                assert u == v


def shared_loader(spec, fn=to_arrays, **kw):
    kw.setdefault("num_workers", 2)
    loader = wds.WebLoader(pipeline(spec, fn), batch_size=None, shared_batches=True, **kw)
    assert loader.shared_batches
    return loader


def test_values_and_types_equal_the_plain_path_over_many_batches(spec):
    plain = epoch(
        wds.WebLoader(pipeline(spec), num_workers=2, batch_size=None, shared_batches=False)
    )
    before = shmbatch.RECEIVED["shared"]
    shared = epoch(shared_loader(spec))
    assert len(shared) == 10 and sum(len(b[2]) for b in shared) == 160
    assert_same(shared, plain)
    assert shmbatch.RECEIVED["shared"] - before == 10  # every batch came through a slot
    before = shmbatch.RECEIVED["shared"]
    assert sum(len(b[2]) for b in shared_loader(spec).repeat(4)) == 640
    assert shmbatch.RECEIVED["shared"] - before == 40  # slots are recycled, not exhausted
    assert shared[0][0].shape == (16, *IMAGE) and shared[0][1].dtype == torch.uint8


def test_dict_samples_keep_their_non_array_fields(spec):
    plain = epoch(wds.WebLoader(pipeline(spec, to_dict), num_workers=2, batch_size=None))
    shared = epoch(shared_loader(spec, to_dict))
    assert_same(shared, plain)
    assert shared[0]["key"][:2] == ["s0-0000", "s0-0001"]


def test_held_batches_stay_intact_after_many_more_batches(spec):
    loader = shared_loader(spec).repeat(4)  # 40 batches from 2 workers with rings of 4
    held, copies, count = [], [], 0
    for images, masks, labels in loader:
        count += 1
        if count % 3 == 0:  # keep a third of them (views too) until the end
            held.append((images, masks[1:], labels))
            copies.append((images.clone(), masks[1:].clone(), labels.clone()))
    assert count == 40
    for kept, copy in zip(held, copies, strict=True):
        for a, b in zip(kept, copy, strict=True):
            assert torch.equal(a, b)
        assert torch.equal(kept[0][:, 0, 0, 0], kept[2].to(torch.float32) * 1000)


def to_tensors_of_two_sizes(sample):
    """Torch tensors whose shape changes every 20 samples (32x32, then 48x48)."""
    cls = int(sample["cls"])
    side = 32 if cls % 40 < 20 else 48
    return torch.full((side, side, 4), float(cls)), torch.tensor(cls)


def test_torch_tensors_shapes_that_change_and_a_partial_batch(spec):
    def build():
        ds = wds.WebDataset(spec, shardshuffle=False).map(to_tensors_of_two_sizes)
        return ds.slice(75).batched(10)  # per worker: 7 batches of 10 and a partial 5

    plain = epoch(wds.WebLoader(build(), num_workers=2, batch_size=None))
    before = shmbatch.RECEIVED["shared"]
    loader = wds.WebLoader(build(), num_workers=2, batch_size=None, shared_batches=True)
    shared = epoch(loader)
    assert_same(shared, plain)
    assert sorted({tuple(b[0].shape) for b in shared}) == [
        (5, 48, 48, 4),
        (10, 32, 32, 4),
        (10, 48, 48, 4),
    ]
    assert shmbatch.RECEIVED["shared"] - before == 16  # every batch, big and small, via slots


def test_pin_memory(spec):
    plain = epoch(wds.WebLoader(pipeline(spec), num_workers=2, batch_size=None))
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else _nothing():
        shared = epoch(shared_loader(spec, pin_memory=True))
    assert_same(shared, plain)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_persistent_workers_two_epochs_and_an_abandoned_pass(spec):
    plain = epoch(wds.WebLoader(pipeline(spec), num_workers=2, batch_size=None))
    loader = shared_loader(spec, persistent_workers=True)
    for _ in range(2):
        assert_same(epoch(loader), plain)
    for i, _batch in enumerate(loader):  # stop early: the workers' slots must come back
        if i == 2:
            break
    gc.collect()
    assert_same(epoch(loader), plain)
    assert_same(epoch(loader), plain)


def test_spawned_workers(spec):
    plain = epoch(wds.WebLoader(pipeline(spec), num_workers=2, batch_size=None))
    shared = epoch(shared_loader(spec, multiprocessing_context="spawn"))
    assert_same(shared, plain)


def test_loader_falls_back_when_batched_is_not_last_or_batching_is_the_loaders(spec):
    ds = pipeline(spec).map(lambda b: b)
    assert not wds.WebLoader(ds, num_workers=2, batch_size=None, shared_batches=True).shared_batches
    ds = wds.WebDataset(spec, shardshuffle=False).map(to_arrays)
    loader = wds.WebLoader(ds, num_workers=2, batch_size=8, shared_batches=True)
    assert not loader.shared_batches
    assert not wds.WebLoader(pipeline(spec), batch_size=None, shared_batches=True).shared_batches


# -- the collation itself, in one process ---------------------------------------------------


def samples(n=8, offset=0):
    return [to_arrays({"cls": i + offset}) for i in range(n)]


def test_collate_matches_default_collation_and_recycles_released_slots():
    collate = SharedCollate(ring=2, min_bytes=0)
    out = collate(samples())
    assert isinstance(out, SharedBatch) and out.key[1] == 0
    batch = out.materialize()
    expected = wds.default_collation_fn(samples())
    for a, b in zip(batch, expected, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert not isinstance(batch[2], np.ndarray) or batch[2].base is None  # labels: not on the slot
    del out, batch, a, b
    gc.collect()
    again = collate(samples(offset=5))
    assert again.key[1] == 0  # the released slot is reused
    held = again.materialize()[0][2:4]  # a view of a column keeps the whole slot in use
    del again
    gc.collect()
    other = collate(samples(offset=9))
    assert other.key[1] == 1
    kept = other.materialize()
    del other
    fallback = collate(samples(offset=20))  # both slots held: collated the plain way
    assert isinstance(fallback, tuple) and collate.fallbacks == 1
    assert np.array_equal(fallback[0], wds.default_collation_fn(samples(offset=20))[0])
    assert np.array_equal(held, wds.default_collation_fn(samples(offset=5))[0][2:4])
    assert np.array_equal(kept[1], wds.default_collation_fn(samples(offset=9))[1])


def test_collate_plain_path_for_small_or_non_numeric_batches():
    collate = SharedCollate()
    small = collate([(np.zeros(3), 1), (np.ones(3), 2)])  # below min_bytes
    assert isinstance(small, tuple) and np.array_equal(small[0][1], np.ones(3))
    strings = SharedCollate(min_bytes=0)([(np.array(["a"]), 1), (np.array(["b"]), 2)])
    assert isinstance(strings, tuple)
    with pytest.raises(ValueError, match="different shapes"):
        SharedCollate(min_bytes=0)([(np.zeros(3),), (np.zeros(4),)])


def test_no_new_slot_when_shared_memory_would_run_short():
    # a reserve no /dev/shm has: every batch takes the plain path, with the same values
    collate = SharedCollate(min_bytes=0, reserve=1 << 62)
    out = collate(samples())
    assert isinstance(out, tuple) and collate.fallbacks == 1
    assert np.array_equal(out[0], wds.default_collation_fn(samples())[0])
    assert collate.__copy__().reserve == 1 << 62
    # the default reserve (one slot's size) leaves this machine's /dev/shm room for a slot
    assert isinstance(SharedCollate(min_bytes=0)(samples()), SharedBatch)


def test_a_dropped_unmaterialized_batch_frees_its_slot():
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers torch's reductions)

    collate = SharedCollate(ring=1, min_bytes=0)
    out = collate(samples())
    # pickled as between DataLoader processes (the slot by file descriptor, no copy): the
    # received copy owns the slot's state
    received = ForkingPickler.loads(bytes(ForkingPickler.dumps(out)))
    del out
    assert collate(samples()) is not None and collate.fallbacks == 1  # still in use
    del received
    gc.collect()
    assert isinstance(collate(samples()), SharedBatch)


def test_install_needs_a_last_default_batched_stage(spec):
    assert shmbatch.install(pipeline(spec))
    assert not shmbatch.install(pipeline(spec).map(lambda b: b))
    listed = wds.WebDataset(spec, shardshuffle=False).listed(4)
    assert not shmbatch.install(listed)
    with pytest.raises(ValueError):
        SharedCollate(ring=0)


def test_shared_batches_is_the_default_where_eligible_and_can_be_turned_off(spec, monkeypatch):
    before = dict(shmbatch.RECEIVED)
    default = wds.WebLoader(pipeline(spec), num_workers=2, batch_size=None)
    assert default.shared_batches
    assert sum(len(b[2]) for b in default) == 160
    assert shmbatch.RECEIVED["shared"] - before["shared"] == 10
    off = wds.WebLoader(pipeline(spec), num_workers=2, batch_size=None, shared_batches=False)
    assert not off.shared_batches
    monkeypatch.setenv("WDS_SHARED_BATCHES", "0")
    by_env = wds.WebLoader(pipeline(spec), num_workers=2, batch_size=None)
    assert not by_env.shared_batches
    before = dict(shmbatch.RECEIVED)
    assert sum(len(b[2]) for b in by_env) == 160
    assert shmbatch.RECEIVED["shared"] == before["shared"]


def _live_slot_pids():
    return {key[0] for key in shmbatch.SLOTS}


def test_each_slot_crosses_as_a_file_descriptor_once(spec):
    plain = epoch(wds.WebLoader(pipeline(spec), num_workers=2, batch_size=None))
    before, known = dict(shmbatch.RECEIVED), _live_slot_pids()
    loader = shared_loader(spec, persistent_workers=True)
    for _ in range(3):  # the same two workers serve three epochs
        assert_same(epoch(loader), plain)
    shared = shmbatch.RECEIVED["shared"] - before["shared"]
    descriptors = shmbatch.RECEIVED["descriptors"] - before["descriptors"]
    assert shared == 30
    # one descriptor per slot (a ring of at most 8 per worker), whatever the number of batches
    assert 2 <= descriptors <= 16
    workers = _live_slot_pids() - known
    assert len(workers) == 2  # persistent workers: their slots stay mapped between epochs
    del loader
    gc.collect()
    one_pass = epoch(shared_loader(spec))  # workers exit at the end of a plain pass ...
    assert_same(one_pass, plain)
    assert not _live_slot_pids() - workers - known  # ... and their slots are unmapped with them


def test_a_key_without_a_received_slot_is_an_error_not_garbage():
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers torch's reductions)

    collate = SharedCollate(ring=1, min_bytes=0)
    first = ForkingPickler.loads(bytes(ForkingPickler.dumps(collate(samples()))))
    assert first.slot is not None  # the descriptor came with the first batch
    first_values = first.materialize()
    del first, first_values
    gc.collect()
    key_only = ForkingPickler.dumps(collate(samples(offset=3)))
    again = ForkingPickler.loads(bytes(key_only))
    assert np.array_equal(again.materialize()[0], wds.default_collation_fn(samples(offset=3))[0])
    shmbatch.SLOTS.pop(again.key)  # as if another process had received the slot
    del again
    gc.collect()
    stranger = ForkingPickler.loads(bytes(key_only))
    with pytest.raises(RuntimeError, match="never received by this process"):
        stranger.materialize()
