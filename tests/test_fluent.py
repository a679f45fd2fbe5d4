"""cloudwds.fluent: every fluent method returns ``Self``, for type checkers and at run time."""

from __future__ import annotations

import inspect
import typing

import pytest
from conftest import make_shards

import cloudwds as wds
from cloudwds.dataset import WebDataset
from cloudwds.fluent import FluidInterface
from cloudwds.loader import WebLoader
from cloudwds.pipeline import DataPipeline

FLUENT = sorted(
    name
    for name, fn in vars(FluidInterface).items()
    if inspect.isfunction(fn) and not name.startswith("_")
)
# the methods each class defines (or overrides) on top of FluidInterface's
OWN = {
    DataPipeline: ("compose", "to_tuple", "with_epoch", "repeat", "with_length", "__enter__"),
    WebDataset: ("shuffle", "batched"),
    WebLoader: ("compose", "with_epoch", "repeat", "with_length", "__enter__"),
}


@pytest.mark.parametrize("name", FLUENT)
def test_fluent_interface_methods_are_annotated_self(name):
    hints = typing.get_type_hints(getattr(FluidInterface, name))
    assert hints["return"] is typing.Self


@pytest.mark.parametrize("cls, name", [(cls, name) for cls, names in OWN.items() for name in names])
def test_overrides_keep_returning_self(cls, name):
    assert name in vars(cls), f"{cls.__name__}.{name} is not defined where the test expects it"
    hints = typing.get_type_hints(vars(cls)[name])
    assert hints["return"] is typing.Self


def test_a_chain_on_a_webdataset_stays_a_webdataset(tmp_path):
    shards = make_shards(tmp_path, 2, 4)
    ds = WebDataset(shards.paths, shardshuffle=False)
    chained = (
        ds.shuffle(3).decode().map(lambda s: s).to_tuple("txt", "cls").with_epoch(5).batched(2)
    )
    assert type(chained) is WebDataset and chained is not ds
    batches = list(chained)
    assert [len(b[0]) for b in batches] == [2] * 5  # with_epoch counts the pipeline's output
    assert ds.nsamples is None and len(ds.pipeline) < len(chained.pipeline)  # ds unchanged


def test_a_chain_on_a_subclass_keeps_the_subclass(tmp_path):
    class Mine(wds.DataPipeline):
        pass

    shards = make_shards(tmp_path, 1, 3)
    p = Mine(wds.SimpleShardList(shards.paths), wds.tarfile_to_samples())
    with p.map(lambda s: s).rename(text="txt").with_length(3) as q:
        assert type(q) is Mine and len(q) == 3
        assert [s["text"] for s in q] == [
            b"text of s0-0000",
            b"text of s0-0001",
            b"text of s0-0002",
        ]


def test_a_chain_on_a_webloader_stays_a_webloader(tmp_path):
    shards = make_shards(tmp_path, 2, 4)
    loader = WebLoader(WebDataset(shards.paths, shardshuffle=False), num_workers=0, batch_size=2)
    chained = loader.unbatched().map(lambda s: s).with_epoch(3)
    assert type(chained) is WebLoader and chained is not loader
    assert len(list(chained)) == 3
