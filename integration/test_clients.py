"""open_clip and timm, unchanged, give the same batches on cloudwds (via the opt-in) as on webdataset 0.2.86.

The clients are installed at test time into a cached venv (integration/clients/env.py: pinned
``open_clip_torch``, ``timm``, ``torchvision``; torch stays the machine's 2.13.0 CPU build), and
their real data code runs in subprocesses (integration/clients/run_*.py) twice over the same
local shards: once with webdataset 0.2.86 first on ``PYTHONPATH`` (the reference; 0.2.86 is the
newest release open_clip accepts) and once under ``python -m cloudwds.run``, which makes their
``import webdataset`` resolve to cloudwds, with 2 DataLoader workers each. One open_clip run uses
the in-code opt-in (``cloudwds.install_as_webdataset()``) instead, one timm run spawned workers.
torchvision does not import on the CPU torch by itself; env.py says what the venv adds for it
(operator schemas only; no client code is replaced).

What is compared, and why:

* open_clip eval (``is_train=False``): no shuffling anywhere, so every batch must be equal (pixels and
  tokens), in order.
* open_clip training, not resampled: open_clip shuffles shards with its own seeded ``detshuffle2``,
  but its sample ``wds.shuffle`` has no seed (0.2.86 seeds it from pid and time), so the order is
  random by design, even between two 0.2.86 runs. Compared: batch count and sizes, and the exact
  multiset of samples (each of the 32 once per epoch).
* open_clip training, resampled: shards drawn with replacement (its ``ResampledShards2``, seeded from
  the worker seeds) and the same unseeded sample shuffle. Compared: batch count and sizes, and that
  every sample equals one of the dataset's samples as 0.2.86 delivers it.
* timm eval: no shuffling, every batch equal in order.
* timm training: timm seeds both its shard shuffle (``detshuffle2``) and its sample shuffle
  (``rng=random.Random(worker_seed)``), and 0.2.86 is reproducible run to run, so every batch must
  be equal in order here too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .clients.data import ClipShards, TimmDataset, write_clip_shards, write_timm_dataset
from .clients.env import REPO_ROOT, ClientEnv, client_env
from .clients.harness import Run, Side, run_client, sample_rows

pytestmark = pytest.mark.timeout(600)

SOT, EOT = 49406, 49407  # open_clip SimpleTokenizer's start/end-of-text tokens
IMAGE_SIZE = 24
BASE: dict[str, Any] = {"seed": 7, "image_size": IMAGE_SIZE, "workers": 2, "resampled": False}


@pytest.fixture(scope="session")
def clients() -> ClientEnv:
    """The client venv and the 0.2.86 directory (built on first use, then reused)."""
    return client_env()


@pytest.fixture(scope="session")
def clip_eval(tmp_path_factory: pytest.TempPathFactory) -> ClipShards:
    """Uneven shards (so one worker runs out first) and one caption-less sample to drop."""
    return write_clip_shards(tmp_path_factory.mktemp("clip_eval"), [9, 6, 8, 5], caption_less=1)


@pytest.fixture(scope="session")
def clip_train(tmp_path_factory: pytest.TempPathFactory) -> ClipShards:
    """4 shards x 8: with 2 workers and batch 4, one epoch is every sample exactly once."""
    return write_clip_shards(tmp_path_factory.mktemp("clip_train"), [8, 8, 8, 8])


@pytest.fixture(scope="session")
def timm_eval(tmp_path_factory: pytest.TempPathFactory) -> TimmDataset:
    return write_timm_dataset(tmp_path_factory.mktemp("timm_eval"), [9, 6, 8, 5])


@pytest.fixture(scope="session")
def timm_train(tmp_path_factory: pytest.TempPathFactory) -> TimmDataset:
    return write_timm_dataset(tmp_path_factory.mktemp("timm_train"), [8, 7, 8, 5], split="train")


@pytest.fixture(scope="session")
def reference_runs(
    clients: ClientEnv, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, dict[str, Any]], Run]:
    """Runs on webdataset 0.2.86, memoised: one reference may serve several tests."""
    done: dict[str, Run] = {}
    workdir = tmp_path_factory.mktemp("reference")

    def get(script: str, config: dict[str, Any]) -> Run:
        key = f"{script}:{sorted(config.items())}"
        if key not in done:
            run = run_client(clients, script, config, "reference", workdir / str(len(done)))
            assert run.report["webdataset_version"] == "0.2.86", run.report
            assert run.report["webdataset"].startswith(str(clients.reference_path)), run.report
            done[key] = run
        return done[key]

    return get


def run_cloudwds(
    clients: ClientEnv,
    script: str,
    config: dict[str, Any],
    workdir: Path,
    side: Side = "cloudwds",
) -> Run:
    """A run through the opt-in (the launcher by default); checks webdataset really was cloudwds."""
    run = run_client(clients, script, config, side, workdir)
    assert Path(run.report["webdataset"]).parent == REPO_ROOT / "cloudwds", run.report
    return run


def assert_same_batches(got: Run, want: Run) -> None:
    """Batch for batch, field for field, bit for bit (dtype and shape included)."""
    assert len(got.batches) == len(want.batches)
    for i, (g, w) in enumerate(zip(got.batches, want.batches)):
        assert g.keys() == w.keys()
        for name in w:
            assert g[name].dtype == w[name].dtype, (i, name)
            assert g[name].shape == w[name].shape, (i, name)
            assert np.array_equal(g[name], w[name]), f"batch {i} field {name} differs"


def assert_clip_values(run: Run, n_samples: int) -> None:
    """Real tokens and pixels: SOT first, one EOT, normalised images of the requested size."""
    texts = np.concatenate(run.field("text"))
    images = np.concatenate(run.field("image"))
    assert texts.shape == (n_samples, 77) and texts.dtype == np.int64
    assert (texts[:, 0] == SOT).all() and ((texts == EOT).sum(axis=1) == 1).all()
    assert images.shape == (n_samples, 3, IMAGE_SIZE, IMAGE_SIZE) and images.dtype == np.float32
    assert np.isfinite(images).all() and images.std() > 0.1


def interleaved_batch_sizes(per_worker: list[int], batch_size: int) -> list[int]:
    """Sizes of the batches a DataLoader yields: worker 0's first, worker 1's first, ...

    ``per_worker`` is each worker's sample count; partial last batches are kept (eval).
    """
    queues = [
        [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
        for n in per_worker
    ]
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def test_open_clip_eval_same_batches_as_webdataset_0_2_86(
    clients: ClientEnv, clip_eval: ClipShards, reference_runs: Callable, tmp_path: Path
) -> None:
    config = {**BASE, "shards": clip_eval.pattern, "is_train": False, "batch_size": 5}
    want = reference_runs("run_open_clip.py", config)
    # split_by_worker: worker 0 reads shards 0 and 2 (9 + 8), worker 1 shards 1 and 3 (6 + 5).
    sizes = interleaved_batch_sizes([17, 11], 5)
    assert [len(t) for t in want.field("text")] == sizes  # the harness itself, on 0.2.86
    assert_clip_values(want, len(clip_eval.captions))

    got = run_cloudwds(clients, "run_open_clip.py", config, tmp_path)
    assert_same_batches(got, want)
    assert got.report["num_batches"] == want.report["num_batches"]


def test_open_clip_eval_in_code_opt_in_same_batches_as_webdataset_0_2_86(
    clients: ClientEnv, clip_eval: ClipShards, reference_runs: Callable, tmp_path: Path
) -> None:
    """``cloudwds.install_as_webdataset()`` called by the script itself, instead of the launcher."""
    config = {**BASE, "shards": clip_eval.pattern, "is_train": False, "batch_size": 5}
    want = reference_runs("run_open_clip.py", config)
    got = run_cloudwds(clients, "run_open_clip.py", config, tmp_path, side="cloudwds-call")
    assert_same_batches(got, want)


def test_open_clip_train_same_samples_as_webdataset_0_2_86(
    clients: ClientEnv, clip_train: ClipShards, reference_runs: Callable, tmp_path: Path
) -> None:
    config = {
        **BASE,
        "shards": clip_train.pattern,
        "is_train": True,
        "batch_size": 4,
        "num_samples": 32,
    }
    want = reference_runs("run_open_clip.py", config)
    assert [len(t) for t in want.field("text")] == [4] * 8
    assert len(set(sample_rows(want, "image", "text"))) == 32  # every sample exactly once
    assert_clip_values(want, 32)

    got = run_cloudwds(clients, "run_open_clip.py", config, tmp_path)
    assert [len(t) for t in got.field("text")] == [4] * 8
    assert sorted(sample_rows(got, "image", "text")) == sorted(sample_rows(want, "image", "text"))
    assert (got.report["num_batches"], got.report["num_samples"]) == (8, 32)


def test_open_clip_resampled_same_counts_and_samples_as_webdataset_0_2_86(
    clients: ClientEnv, clip_train: ClipShards, reference_runs: Callable, tmp_path: Path
) -> None:
    config = {
        **BASE,
        "shards": clip_train.pattern,
        "is_train": True,
        "batch_size": 4,
        "num_samples": 32,
        "resampled": True,
    }
    # The dataset's samples as 0.2.86 delivers them (decoded, transformed, tokenized).
    universe = set(
        sample_rows(
            reference_runs("run_open_clip.py", {**config, "resampled": False}), "image", "text"
        )
    )
    want = reference_runs("run_open_clip.py", config)
    assert [len(t) for t in want.field("text")] == [4] * 8
    assert set(sample_rows(want, "image", "text")) <= universe

    got = run_cloudwds(clients, "run_open_clip.py", config, tmp_path)
    assert [len(t) for t in got.field("text")] == [4] * 8
    rows = sample_rows(got, "image", "text")
    assert len(rows) == 32 and set(rows) <= universe
    assert (got.report["num_batches"], got.report["num_samples"]) == (8, 32)


def test_timm_eval_same_batches_as_webdataset_0_2_86(
    clients: ClientEnv, timm_eval: TimmDataset, reference_runs: Callable, tmp_path: Path
) -> None:
    config = {**BASE, "root": timm_eval.root, "split": timm_eval.split, "name": "tiny"}
    config.update(is_train=False, batch_size=5)
    want = reference_runs("run_timm.py", config)
    # ReaderWds splits shards over workers by index: worker 0 reads 0 and 2, worker 1 reads 1, 3.
    labels = timm_eval.labels
    per_worker = [labels[0:9] + labels[15:23], labels[9:15] + labels[23:28]]
    expected: list[int] = []
    queues = [[w[i : i + 5] for i in range(0, len(w), 5)] for w in per_worker]
    while any(queues):
        for q in queues:
            if q:
                expected.extend(q.pop(0))
    assert np.concatenate(want.field("target")).tolist() == expected  # the harness, on 0.2.86
    assert want.field("image")[0].shape == (5, 3, IMAGE_SIZE, IMAGE_SIZE)

    got = run_cloudwds(clients, "run_timm.py", config, tmp_path)
    assert_same_batches(got, want)


def test_timm_eval_spawned_workers_same_batches_as_webdataset_0_2_86(
    clients: ClientEnv, timm_eval: TimmDataset, reference_runs: Callable, tmp_path: Path
) -> None:
    """Spawned workers import timm, and with it ``import webdataset``, afresh: still cloudwds.

    Eval output does not depend on the start method, so the reference is the forked 0.2.86 run.
    """
    config = {**BASE, "root": timm_eval.root, "split": timm_eval.split, "name": "tiny"}
    config.update(is_train=False, batch_size=5)
    want = reference_runs("run_timm.py", config)
    got = run_cloudwds(clients, "run_timm.py", {**config, "start_method": "spawn"}, tmp_path)
    assert_same_batches(got, want)


def test_timm_train_same_batches_as_webdataset_0_2_86(
    clients: ClientEnv, timm_train: TimmDataset, reference_runs: Callable, tmp_path: Path
) -> None:
    config = {**BASE, "root": timm_train.root, "split": timm_train.split, "name": "tiny"}
    config.update(is_train=True, batch_size=4)
    want = reference_runs("run_timm.py", config)
    # 28 samples, 2 workers: ceil(14 / 4) * 4 = 16 per worker (with_epoch rolls over), drop_last.
    assert [len(t) for t in want.field("target")] == [4] * 8
    assert want.report["len"] == 8  # len(loader): batches per epoch, from ReaderWds.__len__
    assert set(np.concatenate(want.field("target")).tolist()) <= set(timm_train.labels)

    got = run_cloudwds(clients, "run_timm.py", config, tmp_path)
    assert_same_batches(got, want)
    assert got.report["len"] == want.report["len"]
