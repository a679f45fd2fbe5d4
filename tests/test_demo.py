"""cloudwds.demo and examples/train_ddp.py: the figures they print say what they measure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudwds.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_labels_its_two_rates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "demo-data")
    result = run_demo(data=data, nsamples=96, maxcount=32, batch_size=16, workers=0, epochs=1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("wrote 96 samples in 3 shards")
    (loader,) = [line for line in out if line.startswith("data path (read + decode")]
    (training,) = [line for line in out if line.startswith("training (end to end, wall clock)")]
    assert "96 samples" in loader
    assert f"96 samples in {result['seconds']:.1f}s = {result['samples_per_s']:.0f} samples/s" in (
        training
    )
    assert result["samples"] == 96.0


def test_train_ddp_prints_epoch_figures_and_labelled_steps(tmp_path: Path) -> None:
    from cloudwds.demo import write_dataset

    os.makedirs(tmp_path / "d")
    write_dataset(str(tmp_path / "d" / "train-%06d.tar"), 64, 32)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=1",
            f"--master_port={_free_port()}",
            str(ROOT / "examples" / "train_ddp.py"),
            "--data",
            str(tmp_path / "d" / "train-{000000..000001}.tar"),
            "--epochs=2",
            "--batch-size=16",
            "--workers=0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("rank 0: epoch")]
    assert len(lines) == 2
    for epoch, line in enumerate(lines):
        head, tail = line.split(" (waited ")
        assert head == f"rank 0: epoch {epoch} done: 4 batches, 64 samples this epoch"
        assert tail.endswith(f"s for data); {4 * (epoch + 1)} steps since this process started")
