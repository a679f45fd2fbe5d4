"""Pipelines are torch IterableDatasets without importing torch (fresh interpreters per case)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cloudwds

pytest.importorskip("torch")  # the torch half of these checks needs torch installed


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("torchbase")
    for s in range(2):
        with cloudwds.TarWriter(str(root / f"s{s}.tar")) as w:
            for i in range(30):
                w.write({"__key__": f"k{s}_{i:02d}", "txt": f"{s}-{i}"})
    return str(root / "s{0..1}.tar")


def run_fresh(code: str, env: dict[str, str] | None = None) -> list[str]:
    repo = Path(cloudwds.__file__).resolve().parent.parent
    full_env = {k: v for k, v in os.environ.items() if k != "WDS_EAGER_TORCH"}
    full_env.update(PYTHONPATH=str(repo), **(env or {}))
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_building_and_iterating_a_pipeline_never_imports_torch(shards: str) -> None:
    lines = run_fresh(
        f"""
        import sys, cloudwds
        ds = cloudwds.WebDataset({shards!r}, cache_dir=False, shardshuffle=False)
        ds = ds.shuffle(10).to_tuple("__key__", "txt").batched(8)
        print(sum(len(b[0]) for b in ds), "torch" in sys.modules)
        """
    )
    assert lines == ["60", "False"]


def test_dataloader_takes_the_iterable_path_when_torch_is_imported_later(shards: str) -> None:
    lines = run_fresh(
        f"""
        import sys, cloudwds
        ds = cloudwds.WebDataset({shards!r}, cache_dir=False, shardshuffle=False).to_tuple("__key__")
        assert "torch" not in sys.modules
        from torch.utils.data import DataLoader, IterableDataset
        print(isinstance(ds, IterableDataset), issubclass(type(ds), IterableDataset))
        keys = sorted(k for (k,) in DataLoader(ds, batch_size=None, num_workers=2))
        print(len(keys), len(set(keys)), keys[0], keys[-1])
        mixed = cloudwds.RandomMix([ds, ds])
        print(isinstance(mixed, IterableDataset))
        """
    )
    assert lines == ["True", "True", "60", "60", "k0_00", "k1_29", "True"]


def test_torch_imported_first_gives_real_subclasses(shards: str) -> None:
    lines = run_fresh(
        f"""
        import torch.utils.data as tud, cloudwds
        ds = cloudwds.WebDataset({shards!r}, cache_dir=False)
        print(tud.IterableDataset in type(ds).__mro__, isinstance(ds, tud.Dataset))
        """
    )
    assert lines == ["True", "True"]


def test_eager_switch_imports_torch_with_the_pipeline(shards: str) -> None:
    lines = run_fresh(
        f"""
        import sys, cloudwds
        ds = cloudwds.WebDataset({shards!r}, cache_dir=False)
        import torch.utils.data as tud
        print("torch" in sys.modules, tud.IterableDataset in type(ds).__mro__)
        """,
        env={"WDS_EAGER_TORCH": "1"},
    )
    assert lines == ["True", "True"]


def test_iterable_base_name_is_the_one_base_every_dataset_class_shares() -> None:
    # ``from cloudwds.torchbase import IterableBase`` (the name type checkers see as torch's
    # IterableDataset) is, at run time, the one base chosen by iterable_base().
    lines = run_fresh(
        """
        import sys
        from cloudwds.torchbase import IterableBase, iterable_base
        import cloudwds.mix, cloudwds.extradatasets
        bases = {cloudwds.mix.RandomMix.__mro__[1], cloudwds.extradatasets.with_epoch.__mro__[1]}
        print(IterableBase is iterable_base(), bases == {IterableBase}, "torch" in sys.modules)
        import torch.utils.data as tud
        print(isinstance(cloudwds.extradatasets.MockDataset(1, 2), tud.IterableDataset))
        """
    )
    assert lines == ["True", "True", "False", "True"]
