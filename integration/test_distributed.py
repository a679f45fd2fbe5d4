"""Real multi-process training runs: ``torchrun`` with 2 and 3 ranks (gloo, CPU), 2 workers each.

Four launches of ``dist_train.py`` over 11 uneven shards (3..80 samples, 360 in all), shared by
the assertions below:

- A (2 ranks): epoch 0 and epoch 1, without ``set_epoch`` (epochs advance by themselves);
- B (2 ranks): ``set_epoch(0)`` whole, then ``set_epoch(1)`` stopped at a random step, all
  ranks' states saved with ``gathered_state_dict()``;
- C (3 ranks): resumes B's epoch 1, then epoch 2 whole, then epoch 3 stopped at a random step;
- D (2 ranks): resumes C's epoch 3, then ``set_epoch(1)`` whole.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cloudwds.index import build_index
from cloudwds.partition import slot_counts

from .shards import make_shards

SIZES = [3, 80, 17, 41, 5, 62, 9, 28, 71, 13, 31]  # 360 samples
SEED = 3
BATCH = 4
WORKERS = 2
SCRIPT = Path(__file__).with_name("dist_train.py")
ROOT = SCRIPT.parent.parent


def _batches_per_rank(total: int, world_size: int) -> int:
    """Rank 0's steps: its workers' batches (each worker's last batch may be partial)."""
    counts = slot_counts(total, world_size * WORKERS, "balance", BATCH, WORKERS)
    return sum(-(-n // BATCH) for n in counts[:WORKERS])


def _extras(total: int, world_size: int) -> int:
    """Samples the balance plan repeats (its documented corner case; 0 almost always)."""
    return sum(slot_counts(total, world_size * WORKERS, "balance", BATCH, WORKERS)) - total


def torchrun(nproc: int, config: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    path = tmp / f"{config['run']}.json"
    path.write_text(json.dumps(config))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "XDG_CACHE_HOME": str(tmp / "xdg"),
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "WDS_SEED"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(nproc), str(SCRIPT), str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    out = []
    for rank in range(nproc):
        doc = json.loads((tmp / "out" / f"{config['run']}-rank{rank}.json").read_text())
        assert doc["rank"] == rank and doc["world_size"] == nproc
        out.append(doc)
    return out


class Runs:
    def __init__(self, tmp: Path):
        shards = make_shards(len(SIZES), SIZES, bin_size=16)
        paths = [str(p) for p in shards.write_dir(tmp / "shards")]
        build_index(paths).save(str(tmp / "shards" / "cloudwds-index.json"))
        self.keys = shards.keys
        (tmp / "out").mkdir()
        rng = random.Random(20260611)
        self.stop1 = rng.randint(1, _batches_per_rank(len(self.keys), 2) - 1)
        self.stop3 = rng.randint(1, _batches_per_rank(len(self.keys), 3) - 1)
        state1, state3 = str(tmp / "state1.json"), str(tmp / "state3.json")
        base = {"shards": paths, "seed": SEED, "out": str(tmp / "out")}
        self.a = torchrun(2, {**base, "run": "a", "passes": [{}, {}]}, tmp)
        b_passes = [{"epoch": 0}, {"epoch": 1, "stop": self.stop1, "save": state1}]
        self.b = torchrun(2, {**base, "run": "b", "passes": b_passes}, tmp)
        self.state1 = json.loads(Path(state1).read_text())
        c_passes = [{"resume": state1}, {}, {"stop": self.stop3, "save": state3}]
        self.c = torchrun(3, {**base, "run": "c", "passes": c_passes}, tmp)
        self.state3 = json.loads(Path(state3).read_text())
        self.d = torchrun(
            2, {**base, "run": "d", "passes": [{"resume": state3}, {"epoch": 1}]}, tmp
        )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("dist"))


def per_rank(run: list[dict[str, Any]], index: int) -> list[list[list[str]]]:
    """The batches of pass ``index``, per rank."""
    return [rank["passes"][index]["batches"] for rank in run]


def union(run: list[dict[str, Any]], index: int) -> list[str]:
    return [k for batches in per_rank(run, index) for b in batches for k in b]


def epochs(run: list[dict[str, Any]]) -> list[int]:
    reported = {tuple(p["epoch"] for p in rank["passes"]) for rank in run}
    assert len(reported) == 1, f"ranks disagree on epochs: {reported}"
    return list(reported.pop())


def assert_equal_batch_counts(run: list[dict[str, Any]], index: int) -> None:
    counts = [len(batches) for batches in per_rank(run, index)]
    assert len(set(counts)) == 1, f"batches per rank differ: {counts}"
    assert all(len(b) <= BATCH for batches in per_rank(run, index) for b in batches)


def assert_exactly(keys: list[str], expected: list[str], repeats: int = 0) -> None:
    counts = Counter(keys)
    missing = sorted(set(expected) - set(counts))
    assert not missing, f"{len(missing)} keys never delivered, e.g. {missing[:5]}"
    assert set(counts) == set(expected)
    assert len(keys) - len(expected) == repeats, (
        f"repeated: {[k for k, c in counts.items() if c > 1]}"
    )


def test_whole_epochs_on_two_ranks(runs: Runs) -> None:
    assert epochs(runs.a) == [0, 1]
    for index in (0, 1):
        assert_equal_batch_counts(runs.a, index)
        assert_exactly(union(runs.a, index), runs.keys)
    assert len(per_rank(runs.a, 0)[0]) == _batches_per_rank(360, 2)


def test_epochs_differ_and_runs_repeat(runs: Runs) -> None:
    for rank in range(2):
        assert per_rank(runs.a, 0)[rank] != per_rank(runs.a, 1)[rank]
    assert epochs(runs.b) == [0, 1]
    assert per_rank(runs.b, 0) == per_rank(runs.a, 0)  # same seed: same per-rank orders
    stopped = per_rank(runs.b, 1)
    for rank in range(2):
        assert len(stopped[rank]) == runs.stop1
        assert stopped[rank] == per_rank(runs.a, 1)[rank][: runs.stop1]


def test_gathered_state_holds_every_rank(runs: Runs) -> None:
    for states, world_size in ((runs.state1, 2), (runs.state3, 3)):
        assert [s["rank"] for s in states] == list(range(world_size))
        assert all(s["world_size"] == world_size and s["num_workers"] == WORKERS for s in states)
        assert len(json.dumps(states)) < 4096 * world_size
    assert {s["epoch"] for s in runs.state1} == {1}
    assert {s["epoch"] for s in runs.state3} == {3}


def test_resume_two_ranks_on_three(runs: Runs) -> None:
    assert epochs(runs.c) == [1, 2, 3]
    before = union(runs.b, 1)
    rest = union(runs.c, 0)
    assert_equal_batch_counts(runs.c, 0)
    assert_exactly(before + rest, runs.keys, _extras(len(runs.keys) - len(before), 3))


def test_whole_epoch_on_three_ranks_after_a_resume(runs: Runs) -> None:
    assert_equal_batch_counts(runs.c, 1)
    assert_exactly(union(runs.c, 1), runs.keys)
    assert len(per_rank(runs.c, 1)[0]) == _batches_per_rank(360, 3)


def test_resume_three_ranks_on_two(runs: Runs) -> None:
    assert epochs(runs.d) == [3, 1]
    assert [len(b) for b in per_rank(runs.c, 2)] == [runs.stop3] * 3
    before = union(runs.c, 2)
    rest = union(runs.d, 0)
    assert_equal_batch_counts(runs.d, 0)
    assert_exactly(before + rest, runs.keys, _extras(len(runs.keys) - len(before), 2))


def test_after_an_elastic_resume_epochs_are_whole_and_reproducible(runs: Runs) -> None:
    assert per_rank(runs.d, 1) == per_rank(runs.a, 1)
