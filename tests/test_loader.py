"""cloudwds.loader: WebLoader = DataLoader + fluent stages, epochs, with_epoch."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from conftest import make_shards

import cloudwds as wds


def to_arrays(sample):
    """A 4x4x3 'image' whose pixels hold the sample index, and the class."""
    cls = int(sample["cls"])
    return np.full((4, 4, 3), cls, dtype=np.float32), cls


@pytest.fixture
def dataset(tmp_path):
    make_shards(tmp_path, 4, 25)
    return wds.WebDataset(str(tmp_path / "shard-{000000..000003}.tar"), shardshuffle=True).map(
        to_arrays
    )


def test_readme_rebatching_shapes_with_two_workers(dataset):
    loader = wds.WebLoader(dataset.batched(16), num_workers=2, batch_size=None)
    loader = loader.unbatched().shuffle(100).batched(12)
    batches = list(loader)
    images, labels = batches[0]
    assert images.shape == torch.Size([12, 4, 4, 3]) and labels.shape == torch.Size([12])
    assert [len(b[1]) for b in batches] == [12] * 8 + [4]
    all_labels = torch.cat([b[1] for b in batches]).tolist()
    assert sorted(all_labels) == list(range(100))  # every sample exactly once
    for images, labels in batches:  # images and labels stay paired through the shuffles
        assert torch.equal(images[:, 0, 0, 0], labels.to(torch.float32))


def test_fluent_calls_return_new_loaders(dataset):
    base = wds.WebLoader(dataset, num_workers=0, batch_size=None)
    unbatched = base.batched(5)
    shuffled = unbatched.shuffle(10)
    assert base.stages == [] and len(unbatched.stages) == 1 and len(shuffled.stages) == 2
    assert base is not unbatched is not shuffled
    assert base.loader is shuffled.loader
    epoch = base.with_epoch(7)
    assert base.nsamples is None and epoch.nsamples == 7
    assert len(base.with_length(3)) == 3 and base.length is None
    assert len(list(base)) == 100  # the original still yields unbatched samples
    assert len(list(unbatched)) == 20


def test_with_epoch_restarts_the_whole_chain(dataset):
    loader = wds.WebLoader(dataset.batched(10), num_workers=0, batch_size=None)
    loader = loader.unbatched().with_epoch(250)
    got = list(loader)
    assert len(got) == 250 and len(loader) == 250
    # every item went through unbatched(), also after the loader was restarted
    assert all(img.shape == (4, 4, 3) and int(img[0, 0, 0]) == int(c) for img, c in got)
    counts = collections.Counter(int(c) for _, c in got)
    assert set(counts) == set(range(100)) and sorted(set(counts.values())) == [2, 3]
    # consecutive passes are different epochs: different shard orders
    first, second = [int(c) for _, c in got[:100]], [int(c) for _, c in got[100:200]]
    assert sorted(first) == sorted(second) and first != second
    assert len(list(loader.with_epoch(-1))) == 100


def test_epochs_reach_the_dataset(dataset):
    loader = wds.WebLoader(dataset, num_workers=0, batch_size=None)
    e0 = [int(c) for _, c in loader]
    e1 = [int(c) for _, c in loader]
    assert sorted(e0) == sorted(e1) == list(range(100)) and e0 != e1
    loader.set_epoch(0)
    assert [int(c) for _, c in loader] == e0


def test_wrapping_an_existing_dataloader(dataset):
    dl = torch.utils.data.DataLoader(dataset, batch_size=10, num_workers=0)
    loader = wds.WebLoader(dl).unbatched().batched(25)
    batches = list(loader)
    assert loader.loader is dl
    assert [b[0].shape for b in batches] == [torch.Size([25, 4, 4, 3])] * 4


def test_len_of_loader_over_a_sized_dataset(tmp_path):
    make_shards(tmp_path, 1, 5)
    ds = wds.WebDataset(str(tmp_path / "shard-000000.tar")).with_length(5)
    assert len(wds.WebLoader(ds, batch_size=None)) == 5
